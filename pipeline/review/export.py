"""The reviewed items as a manifest the SINet trainer reads: the one export behind ``pipeline export`` and the
curated manifest of ``pipeline run``."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from pipeline.review.store import ReviewStoreError, Store
from sinet_plus import manifest as mf


def iso(seconds: float) -> str:
    """ISO-8601 UTC time of a Unix timestamp, to the second."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def verdicts(store: Store) -> pd.DataFrame:
    """One row per fully reviewed real item: key, status, reviewer, decided_at, reason.

    An item is ``accepted`` only when every counting decision on it accepts (a double-reviewed item that
    one person rejected is ``rejected``); skips and undone decisions do not count; gold items are left out.
    ``reason`` joins the reasons of the decisions behind the status (reject codes, or why an unattended run
    accepted it).
    """
    items = store.items_frame()
    decided = store.decisions_frame()
    decided = decided[(decided["decision"] != "skip") & decided["gold"].isna()]
    complete = set(items.loc[items["done"] >= items["needed"], "key"])
    decided = decided[decided["key"].isin(complete)]
    rows = []
    for key, group in decided.groupby("key", sort=False):
        rejected = group[group["decision"] == "reject"]
        deciding = rejected if len(rejected) else group
        rows.append({"key": key, "status": "rejected" if len(rejected) else "accepted",
                     "reviewer": "+".join(group["annotator"]), "decided_at": iso(group["decided_at"].max()),
                     "reason": ";".join(r for r in deciding["reason"].fillna("") if r)})
    return pd.DataFrame(rows, columns=["key", "status", "reviewer", "decided_at", "reason"])


def verdicts_digest(store: Store) -> str:
    """A short hash of every counting decision: it changes whenever someone decides or undoes something."""
    decisions = store.decisions_frame()
    text = decisions[["key", "annotator", "decision", "reason"]].to_csv(index=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


VERDICTS = ("accepted", "rejected", "pending")
"""What an export may select: the verdict of a fully reviewed item, or ``pending`` for one still open."""


def review_manifest(store: Store, statuses: tuple[str, ...] = ("accepted",), split: str | None = None
                    ) -> mf.Manifest:
    """The store's real items whose verdict is one of ``statuses`` (see :data:`VERDICTS`), rooted at the data root.

    Decided rows get ``status``, ``reviewer``, ``decided_at`` and ``reason`` from :func:`verdicts`; pending rows
    keep ``status`` pending. ``split`` is given to every row when set.
    """
    unknown = [s for s in statuses if s not in VERDICTS]
    if unknown:
        raise ReviewStoreError(f"unknown status {unknown[0]!r} (use one of: {', '.join(VERDICTS)})")
    items = store.items_frame()
    items = items[items["gold"].isna()]
    decided = verdicts(store).set_index("key")
    rows = []
    for key, row in zip(items["key"], items["row"]):
        verdict = decided.loc[key].to_dict() if key in decided.index else {"status": "pending"}
        if verdict["status"] in statuses:
            rows.append({**row, **verdict, **({"split": split} if split is not None else {})})
    return mf.Manifest(mf.new_rows(rows), store.data_root)


def export_manifest(store: Store, out: str | os.PathLike, bases: list[Path] = (),
                    statuses: tuple[str, ...] = ("accepted",), split: str | None = None) -> tuple[mf.Manifest, int]:
    """The items of ``statuses`` (:func:`review_manifest`) stacked with ``bases``, rooted at ``out``'s folder.

    Returns the manifest and how many reviewed rows it holds. Raises :class:`~sinet_plus.manifest.ManifestError`
    when a base manifest is invalid or its ids clash with reviewed ones.

    Args:
        store: the review store.
        out: the manifest to be written (paths are made relative to its folder).
        bases: manifests to include as they are.
        statuses: the verdicts to export (:data:`VERDICTS`).
        split: give every reviewed row this split (pseudo-labels come out of the teacher as ``unlabeled``, and
            the SINet trainer reads one split); None keeps each row's own.
    """
    reviewed = review_manifest(store, statuses, split)
    combined = mf.concat([reviewed, *(mf.load(path) for path in bases)], Path(out).parent.absolute())
    return combined, len(reviewed)
