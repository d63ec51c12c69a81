"""``python -m calmops_dagster.speedups.dagster_dev ARGS``: ``dagster dev ARGS`` without its supersession notice.

Dagster 1.13 marks ``dagster dev`` as superseded by ``dg dev`` (package ``dagster-dg-cli``), which expects a dg
project layout (``[tool.dg]`` in pyproject, a ``defs`` folder) and starts the same webserver, daemon and code
server. ``calmops dev`` keeps ``dagster dev`` on the code location ``calmops_dagster.definitions`` and runs it
through this module, which ignores that one warning (by its category and text) and nothing else, in this
process only. Python's own ``-W`` option cannot name the category: it is resolved before site-packages load.
"""

import warnings

from dagster_shared.utils.warnings import SupersessionWarning

warnings.filterwarnings("ignore", message="Function `dev_command` is superseded", category=SupersessionWarning)

# imported after the filter, so the warning the command emits when it runs is caught
from dagster._cli import main

if __name__ == "__main__":
    main()
