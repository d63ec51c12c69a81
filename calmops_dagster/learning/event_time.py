"""Event time vs processing time: is a block *late*, and may it move the champion?

Blocks have an event order (the block key for block and IPIP pipelines, the arrival order of their files
for stream pipelines) that can differ from the order they are processed in: a block copied in after newer
blocks were processed is **late**. A late block is monitored like any other (drift, the champion's score,
predictions) and kept in history for ``window`` / ``replay_mix``, but the champion only moves forward in
event time: by default a late block never promotes a challenger over a champion trained on newer data
(``promotion.allow_late_promotion`` changes that), and it never triggers an automatic rollback, which would
turn production back to an older model because of old data.
"""

from __future__ import annotations

from dataclasses import dataclass

LATE_KEPT = "late_kept"


@dataclass(frozen=True)
class EventTime:
    """Where ``block`` stands in event time against the blocks already processed and the champion."""

    block: str
    late: bool
    newest_processed: str | None
    """The newest block (event order) processed before, or ``None``."""
    champion: str | None
    champion_newest_block: str | None
    """The newest block the champion was trained on (its training block and history), or ``None``."""
    champion_is_newer: bool
    """The champion was trained on data newer than ``block``."""

    def promotion_hold(self, allow_late_promotion: bool) -> str | None:
        """Why this block must not promote a challenger, or ``None`` when it may."""
        if not self.late or allow_late_promotion or not self.champion_is_newer:
            return None
        return (f"late block {self.block}: block {self.newest_processed} was already processed and champion "
                f"{self.champion} was trained on newer data (block {self.champion_newest_block}); a late "
                "block never promotes over it (promotion.allow_late_promotion: false)")

    def rollback_hold(self) -> str | None:
        """Why this block must not roll the champion back, or ``None`` when it may."""
        if not self.late:
            return None
        return (f"late block {self.block} (block {self.newest_processed} was already processed): "
                "a late block never triggers an automatic rollback")


def place_block(block: str, order: list[str], processed, champion: str | None = None,
                champion_blocks=()) -> EventTime:
    """Place ``block`` in event time.

    Parameters
    ----------
    block : the block being processed.
    order : block keys in event order; keys missing from it (e.g. the blocks an imported model was trained
        on) are ignored.
    processed : blocks already processed (``block`` itself, when re-processed, is ignored).
    champion, champion_blocks : the champion in force and the blocks it was trained on.

    Examples
    --------
    >>> order = ["1", "2", "3", "4", "5", "6"]
    >>> late = place_block("3", order, ["1", "2", "4", "5", "6"], "v0002", ["4"])
    >>> late.late, late.newest_processed, late.champion_is_newer
    (True, '6', True)
    >>> place_block("7", order + ["7"], ["1", "2", "6"], "v0002", ["4"]).late
    False
    """
    rank = {key: i for i, key in enumerate(order)}
    if block not in rank:
        raise ValueError(f"block {block!r} is not in the event order")

    def newest(keys):
        known = [key for key in keys if key in rank and key != block]
        return max(known, key=rank.__getitem__) if known else None

    newest_processed, champion_newest = newest(processed), newest(champion_blocks)
    return EventTime(
        block=block,
        late=newest_processed is not None and rank[newest_processed] > rank[block],
        newest_processed=newest_processed,
        champion=champion,
        champion_newest_block=champion_newest,
        champion_is_newer=champion_newest is not None and rank[champion_newest] > rank[block],
    )
