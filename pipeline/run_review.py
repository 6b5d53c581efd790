"""The review steps of ``pipeline run``: unattended auto-accept, the wait for people, and the curated manifest.

Auto-accept decides queued items in the review store like an annotator named ``auto`` would, so the export,
``review-stats`` and the app all see these decisions as what they are; a person can still review the items it
left pending (priority above the threshold), and the export marks every auto-accepted row with reviewer ``auto``
and a reason that states the threshold.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pipeline.review.export import export_manifest
from pipeline.review.store import Store
from sinet_plus import manifest as mf

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
    items = store.items_frame()
    items = items[(items["done"] < items["needed"]) & items["gold"].isna()]
    accepted = left = 0
    for key, row in zip(items["key"], items["row"]):
        priority = _priority(row)
        if (priority is None and accept_unscored) or (priority is not None and priority <= threshold):
            store.decide(AUTO, key, "accept", reason=auto_reason(priority, threshold))
            accepted += 1
        else:
            left += 1
    return accepted, left


def undecided(store: Store) -> int:
    """Real items that still need a decision."""
    items = store.items_frame()
    return int(((items["done"] < items["needed"]) & items["gold"].isna()).sum())


def verdicts_digest(store: Store) -> str:
    """A short hash of every counting decision: it changes whenever someone decides or undoes something."""
    decisions = store.decisions_frame()
    text = decisions[["key", "annotator", "decision", "reason"]].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def export_curated(store: Store, out: str | os.PathLike) -> mf.Manifest:
    """The accepted items as a training manifest at ``out``.

    Two touches on top of ``pipeline export``: every row gets split ``train`` (pseudo-labels come out of the
    teacher as ``unlabeled``, and the SINet trainer reads one split), and auto-accepted rows get the reason of
    their decision (the export keeps reasons of rejections only).
    """
    manifest, _ = export_manifest(store, out)
    reasons = {key: reason for key, annotator, reason in
               store.decisions_frame()[["key", "annotator", "reason"]].itertuples(index=False)
               if annotator == AUTO}
    frame = manifest.frame.copy()
    frame["split"] = "train"
    auto_rows = frame["reviewer"] == AUTO
    frame.loc[auto_rows, "reason"] = [reasons.get(key, "") for key in frame.loc[auto_rows, "id"]]
    curated = mf.Manifest(frame, Path(out).parent.absolute())
    mf.write_manifest(curated, out)
    return curated
