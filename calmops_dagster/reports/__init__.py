"""The pages and overviews made from a pipeline's stored results: the block drift report (written by the
assess step), the pipeline overview (reported after each block), and the one look every page shares
(the block report, the pipeline report, the landing page).
May import: drift and store — never Dagster or a layer above."""
