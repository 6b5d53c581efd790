"""The reviewed items as a manifest the SINet trainer reads."""

from __future__ import annotations

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


VERDICTS = ("accepted", "rejected", "pending")
"""What an export may select: the verdict of a fully reviewed item, or ``pending`` for one still open."""


def review_manifest(store: Store, statuses: tuple[str, ...] = ("accepted",)) -> mf.Manifest:
    """The store's real items whose verdict is one of ``statuses`` (see :data:`VERDICTS`), rooted at the data root.

    Decided rows get ``status``, ``reviewer``, ``decided_at`` and ``reason`` from :func:`verdicts`; pending rows
    keep ``status`` pending.
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
            rows.append({**row, **verdict})
    return mf.Manifest(mf.new_rows(rows), store.data_root)


def export_manifest(store: Store, out: str | os.PathLike, bases: list[Path] = (),
                    statuses: tuple[str, ...] = ("accepted",)) -> tuple[mf.Manifest, int]:
    """The items of ``statuses`` (:func:`review_manifest`) stacked with ``bases``, rooted at ``out``'s folder.

    Returns the manifest and how many reviewed rows it holds. Raises :class:`~sinet_plus.manifest.ManifestError`
    when a base manifest is invalid or its ids clash with reviewed ones.
    """
    reviewed = review_manifest(store, statuses)
    combined = mf.concat([reviewed, *(mf.load(path) for path in bases)], Path(out).parent.absolute())
    return combined, len(reviewed)
