"""Unattended auto-accept (``pipeline run --auto-accept``): decide queued items without a person.

Auto-accept decides queued items in the review store like an annotator named ``auto`` would, so the export,
``review-stats`` and the app all see these decisions as what they are; a person can still review the items it
left pending (priority above the threshold), and the export marks every auto-accepted row with reviewer ``auto``
and a reason that states the threshold.
"""

from __future__ import annotations

from pipeline.review.store import Store

AUTO = "auto"
"""Annotator name of unattended decisions (the manifest's ``reviewer`` column)."""


def auto_reason(priority: float | None, threshold: float) -> str:
    """Why an item was accepted without a person: its priority against the threshold, or its human-made mask."""
    if priority is None:
        return "auto-accept: human-made mask (no priority), run without a reviewer"
    return f"auto-accept: priority {priority:.3f} <= threshold {threshold:g}, run without a reviewer"


def _priority(row: dict) -> float | None:
    value = row.get("priority")
    return None if value is None or value != value else float(value)


def auto_accept(store: Store, threshold: float, accept_unscored: bool = True) -> tuple[int, int]:
    """Accept every undecided real item whose ``priority`` is at most ``threshold``, as annotator ``auto``.

    Items without a priority (crops of human-made masks) are accepted when ``accept_unscored`` is set;
    items above the threshold stay in the queue for people. Returns (accepted now, left for people).

    Args:
        store: the review store.
        threshold: largest predicted-failure score accepted unseen, in [0, 1].
        accept_unscored: accept items that carry no priority.
    """
    accepted = left = 0
    for key, row in store.undecided():
        priority = _priority(row)
        if (priority is None and accept_unscored) or (priority is not None and priority <= threshold):
            store.decide(AUTO, key, "accept", reason=auto_reason(priority, threshold))
            accepted += 1
        else:
            left += 1
    return accepted, left
