"""Unattended auto-accept (``pipeline run --auto-accept``): decide queued items without a person.

Auto-accept decides queued items in the review store like an annotator named ``auto`` would, so the export,
``review-stats`` and the app all see these decisions as what they are; a person can still review the items it
left pending, and the export marks every auto-accepted row with reviewer ``auto`` and a reason that states the
rule. The default rule is the teacher's own, calibrated on photos held out of its training and carried in each
manifest row as ``auto_accept``; a priority threshold can replace it.
"""

from __future__ import annotations

from pipeline.review.store import Store

AUTO = "auto"
"""Annotator name of unattended decisions (the manifest's ``reviewer`` column)."""


TEACHER_RULE = "teacher"
"""Auto-accept by the teacher's calibrated rule: the ``auto_accept`` column ``pipeline pseudo-label`` wrote."""


def auto_reason(row: dict, rule: float | str) -> str:
    """Why an item was accepted without a person: the teacher's rule, a priority threshold, or an unscored
    human-made mask."""
    priority = _number(row.get("priority"))
    if rule == TEACHER_RULE and _flag(row.get("auto_accept")) is not None:
        agreement = _number(row.get("teacher_agreement"))
        signal = f"teacher agreement {agreement:.3f}" if agreement is not None else f"priority {priority:.3f}"
        return f"auto-accept: the teacher's calibrated rule ({signal}), run without a reviewer"
    if priority is None:
        return "auto-accept: human-made mask (no priority), run without a reviewer"
    return f"auto-accept: priority {priority:.3f} <= threshold {rule:g}, run without a reviewer"


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number


def _flag(value) -> bool | None:
    """A manifest cell as a boolean (``True``/``true``/``1``...), None when empty."""
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return None
    return str(value).strip().lower() in ("true", "1", "yes")


def accepts(row: dict, rule: float | str, accept_unscored: bool = True) -> bool:
    """Whether an item is accepted unseen: by the teacher's calibrated rule (``rule == "teacher"``: the row's
    ``auto_accept``), or by ``priority <= rule``; rows with neither (unchecked human-made masks) when
    ``accept_unscored``."""
    if rule == TEACHER_RULE:
        flag = _flag(row.get("auto_accept"))
        if flag is not None:
            return flag
    priority = _number(row.get("priority"))
    if priority is None:
        return accept_unscored
    return rule != TEACHER_RULE and priority <= float(rule)


def auto_accept(store: Store, rule: float | str = TEACHER_RULE, accept_unscored: bool = True) -> tuple[int, int]:
    """Accept every undecided real item that :func:`accepts`, as annotator ``auto``; the others stay queued
    for people. Returns (accepted now, left for people).

    Args:
        store: the review store.
        rule: ``"teacher"`` (the calibrated rule carried by the teacher, the default) or a largest
            predicted-failure score in [0, 1] accepted unseen.
        accept_unscored: accept items that carry neither an ``auto_accept`` verdict nor a priority.
    """
    accepted = left = 0
    for key, row in store.undecided():
        if accepts(row, rule, accept_unscored):
            store.decide(AUTO, key, "accept", reason=auto_reason(row, rule))
            accepted += 1
        else:
            left += 1
    return accepted, left
