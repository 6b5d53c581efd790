"""Review statistics: throughput per annotator, agreement on double-reviewed items, accuracy on gold items and
reject reasons, as tables and one PNG sheet."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from pipeline.review.store import GOLD_EXPECTED, Store
from sinet_plus.files import atomic_path


@dataclass
class ReviewStats:
    """The four tables ``pipeline review-stats`` prints and plots."""

    throughput: pd.DataFrame
    agreement: pd.DataFrame
    gold: pd.DataFrame
    reasons: pd.DataFrame


def throughput(decisions: pd.DataFrame) -> pd.DataFrame:
    """Per annotator: decisions by kind, median seconds per decision and images per hour at that pace."""
    if decisions.empty:
        return pd.DataFrame(columns=["annotator", "accept", "reject", "skip", "median_s", "per_hour"])
    counts = decisions.pivot_table(index="annotator", columns="decision", values="id", aggfunc="count",
                                   fill_value=0).reindex(columns=["accept", "reject", "skip"], fill_value=0)
    median = decisions.groupby("annotator")["seconds"].median()
    table = counts.assign(median_s=median.round(2), per_hour=(3600 / median).round(0))
    return table.reset_index()


def agreement(decisions: pd.DataFrame) -> pd.DataFrame:
    """For items decided by two or more people: how many, how many unanimously, and the share."""
    counted = decisions[(decisions["decision"] != "skip") & (decisions["needed"] > 1)]
    per_item = counted.groupby("key")["decision"].agg(["count", "nunique"])
    per_item = per_item[per_item["count"] > 1]
    agreed = int((per_item["nunique"] == 1).sum())
    share = agreed / len(per_item) if len(per_item) else float("nan")
    return pd.DataFrame([{"double_reviewed": len(per_item), "agreed": agreed, "agreement": round(share, 3)}])


def gold_accuracy(decisions: pd.DataFrame) -> pd.DataFrame:
    """Per annotator and gold kind: decisions, correct ones (accept good, reject damaged) and the share."""
    gold = decisions[decisions["gold"].notna() & (decisions["decision"] != "skip")]
    if gold.empty:
        return pd.DataFrame(columns=["annotator", "gold", "n", "correct", "accuracy"])
    gold = gold.assign(correct=[decision == GOLD_EXPECTED[kind] for decision, kind in
                                zip(gold["decision"], gold["gold"])])
    table = gold.groupby(["annotator", "gold"])["correct"].agg(n="count", correct="sum").reset_index()
    return table.assign(accuracy=(table["correct"] / table["n"]).round(3))


def reject_reasons(decisions: pd.DataFrame) -> pd.DataFrame:
    """Rejections of real items by reason code (``none`` when no reason was given)."""
    rejected = decisions[(decisions["decision"] == "reject") & decisions["gold"].isna()]
    counts = rejected["reason"].fillna("none").replace("", "none").value_counts()
    return counts.rename_axis("reason").reset_index(name="rejections")


def review_stats(store: Store) -> ReviewStats:
    """All four tables from the store's counting decisions."""
    decisions = store.decisions_frame()
    return ReviewStats(throughput(decisions), agreement(decisions), gold_accuracy(decisions),
                       reject_reasons(decisions))


def plot(stats: ReviewStats, path: str | os.PathLike) -> None:
    """A 2x2 PNG sheet of the four tables, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    table = stats.throughput
    axes[0, 0].bar(table["annotator"].astype(str), table["per_hour"].fillna(0))
    axes[0, 0].set(title="throughput (images/hour at median pace)", ylabel="images / hour")
    decided = table[["accept", "reject", "skip"]].sum(axis=1) if len(table) else []
    for x, n in enumerate(decided):
        axes[0, 0].annotate(f"{n} decided", (x, 0), ha="center", va="bottom")
    gold = stats.gold.groupby("annotator")[["correct", "n"]].sum() if len(stats.gold) else None
    if gold is not None:
        axes[0, 1].bar(gold.index.astype(str), gold["correct"] / gold["n"])
    axes[0, 1].set(title="accuracy on gold items", ylim=(0, 1.05), ylabel="share correct")
    row = stats.agreement.iloc[0]
    axes[1, 0].bar(["agreed", "disagreed"], [row["agreed"], row["double_reviewed"] - row["agreed"]])
    axes[1, 0].set(title=f"double review: agreement {row['agreement']}", ylabel="items")
    axes[1, 1].barh(stats.reasons["reason"].astype(str), stats.reasons["rejections"])
    axes[1, 1].set(title="reject reasons", xlabel="rejections")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
