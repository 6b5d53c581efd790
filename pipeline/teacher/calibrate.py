"""Calibrating a teacher on photos held out of its training: vote weights, priority rule, auto-accept threshold.

Everything is chosen on a calibration split that no member was trained on and that is not the reported
validation set (e.g. 200 EG1800 train photos held out: ``split == "holdout"``):

1. **Vote weights**: the weights on a grid (steps of 0.1, each member at least 0.1) that give the highest
   mean per-photo IoU of the ensemble's mask.
2. **Priority rule**: among :data:`~pipeline.teacher.signals.PRIORITY_RULES`, the one whose ROC AUC for
   "IoU below 0.90" is highest.
3. **Auto-accept**: the largest ``max_priority`` whose accepted photos reach ``target_precision`` (the share
   with IoU >= 0.90) on the calibration photos; a stricter target than the promise made to users leaves room
   for the difference between the calibration photos and new ones.
4. **Confirming human-made masks**: ``min_agreement`` is the IoU between the teacher's mask and the human
   mask that :data:`CONFIRMED_SHARE` of the calibration photos' (checked) human masks reach: a human mask is
   confirmed when the teacher agrees with it as well as with nine in ten known-good masks.

IoU is per photo at the photo's size, over known pixels (mask value 128 = unknown is ignored), like
``pipeline train-teacher``'s validation.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich.progress import Progress
from sklearn.metrics import roc_auc_score

from pipeline.teacher.ensemble import MemberSpec, TeacherEnsemble, assemble, save_ensemble
from pipeline.teacher.signals import PRIORITY_RULES, priority, quality_signals
from sinet.metrics import foreground_iou
from sinet_plus import manifest as mf
from sinet_plus.imageio import read_image, read_mask
from sinet_plus.stage import console

GOOD_IOU = 0.90
"""A mask is good when its IoU with the human mask is at least this."""

CONFIRMED_SHARE = 0.9
"""Share of known-good human masks of the calibration photos that ``min_agreement`` confirms."""


@dataclass
class ScoredPhotos:
    """Per-photo results of a teacher on labelled photos.

    Args:
        frame: one row per photo: ``id``, ``iou`` (the ensemble's mask), ``member_iou_<i>``, every signal and
            ``priority_<rule>`` for every rule.
        member_probs: each photo's member maps (float16), kept for choosing vote weights.
        truths: each photo's 0/1/unknown mask.
    """

    frame: pd.DataFrame
    member_probs: list[list[np.ndarray]]
    truths: list[np.ndarray]


def score_photos(teacher: TeacherEnsemble, rows: mf.Manifest, batch_size: int = 4,
                 keep_maps: bool = False) -> ScoredPhotos:
    """Run ``teacher`` on labelled rows and score every photo.

    Args:
        teacher: the ensemble (its current weights).
        rows: manifest rows with ``image`` and ``mask``.
        batch_size: photos per forward.
        keep_maps: keep member maps and masks (for :func:`choose_weights`).
    """
    images, masks = rows.paths("image"), rows.paths("mask")
    records, member_probs, truths = [], [], []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("scoring photos", total=len(images))
        for start in range(0, len(images), batch_size):
            photos = [read_image(p) for p in images[start:start + batch_size]]
            batch_truths = [read_mask(p, unknown_value=128) for p in masks[start:start + batch_size]]
            for offset, (prediction, truth) in enumerate(zip(teacher.predict(photos), batch_truths)):
                views = prediction.views
                signals = quality_signals(views.plain, views.mirrored, None, prediction.members, teacher.priority)
                record = {"id": rows.frame["id"].iloc[start + offset],
                          "iou": foreground_iou(views.merged() > 0.5, truth), **signals}
                for rule in PRIORITY_RULES:
                    record[f"priority_{rule}"] = priority(signals, rule)
                for index, member in enumerate(prediction.members):
                    record[f"member_iou_{index}"] = foreground_iou(member > 0.5, truth)
                records.append(record)
                if keep_maps:
                    member_probs.append([m.astype(np.float16) for m in prediction.members])
                    truths.append(truth)
            progress.advance(task, len(photos))
    return ScoredPhotos(pd.DataFrame(records), member_probs, truths)


def weight_grid(members: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Weight vectors on a simplex grid, every member at least ``step``."""
    if members == 1:
        return [(1.0,)]
    ticks = round(1 / step)
    return [tuple(t / ticks for t in (*combo, ticks - sum(combo)))
            for combo in itertools.product(range(1, ticks), repeat=members - 1) if sum(combo) < ticks]


def choose_weights(scored: ScoredPhotos, step: float = 0.1) -> tuple[tuple[float, ...], float]:
    """The vote weights with the best mean per-photo IoU on the scored photos, and that IoU."""
    best, best_iou = None, -1.0
    for weights in weight_grid(len(scored.member_probs[0]), step):
        ious = [foreground_iou(sum(w * m.astype(np.float32) for w, m in zip(weights, maps)) > 0.5, truth)
                for maps, truth in zip(scored.member_probs, scored.truths)]
        if np.mean(ious) > best_iou:
            best, best_iou = weights, float(np.mean(ious))
    return best, best_iou


def rule_aucs(frame: pd.DataFrame) -> dict[str, float]:
    """ROC AUC of every priority rule for finding masks with IoU below :data:`GOOD_IOU` (NaN when one class)."""
    bad = frame["iou"] < GOOD_IOU
    if bad.all() or not bad.any():
        return {rule: float("nan") for rule in PRIORITY_RULES}
    return {rule: float(roc_auc_score(bad, frame[f"priority_{rule}"])) for rule in PRIORITY_RULES}


def acceptance_at(frame: pd.DataFrame, column: str, max_priority: float) -> dict[str, float]:
    """Share accepted (priority <= ``max_priority``) and the share of those that are good."""
    accepted = frame[column] <= max_priority
    good = frame.loc[accepted, "iou"] >= GOOD_IOU
    return {"accepted_share": float(accepted.mean()), "accepted": int(accepted.sum()),
            "precision": float(good.mean()) if accepted.any() else float("nan")}


def choose_threshold(frame: pd.DataFrame, column: str, target_precision: float) -> float | None:
    """The largest ``max_priority`` at which the accepted photos reach ``target_precision``; None if none does."""
    best = None
    for value in np.unique(frame[column]):
        stats = acceptance_at(frame, column, float(value))
        if stats["precision"] >= target_precision:
            best = float(value)
    return best


def summary(frame: pd.DataFrame, rule: str, max_priority: float | None) -> dict[str, float]:
    """Mean IoU, share below :data:`GOOD_IOU`, AUC of ``rule`` and acceptance figures of scored photos."""
    figures = {"photos": len(frame), "mean_iou": float(frame["iou"].mean()),
               "below_0.90": float((frame["iou"] < GOOD_IOU).mean()),
               "priority_auc": rule_aucs(frame)[rule]}
    for column in sorted(c for c in frame.columns if c.startswith("member_iou_")):
        figures[column.replace("member_iou_", "member_mean_iou_")] = float(frame[column].mean())
    if max_priority is not None:
        figures.update({f"auto_accept_{k}": v for k, v in acceptance_at(frame, f"priority_{rule}",
                                                                         max_priority).items()})
    return figures


def calibrate(teacher: TeacherEnsemble, rows: mf.Manifest, target_precision: float = 0.97,
              tune_weights: bool = True) -> tuple[TeacherEnsemble, dict]:
    """Choose vote weights, priority rule and auto-accept threshold on ``rows``; returns the calibrated teacher
    and the evidence (per-member and ensemble figures, AUC per rule) for its card."""
    scored = score_photos(teacher, rows, keep_maps=tune_weights and len(teacher.members) > 1)
    if tune_weights and len(teacher.members) > 1:
        weights, _ = choose_weights(scored)
        teacher.weights = list(weights)
        scored = score_photos(teacher, rows)
    aucs = rule_aucs(scored.frame)
    rule = max(aucs, key=lambda r: -1 if np.isnan(aucs[r]) else aucs[r])
    if len(teacher.members) == 1 and rule != "uncertain_share":
        rule = "uncertain_share"  # the other rules need several voters
    teacher.priority = rule
    threshold = choose_threshold(scored.frame, f"priority_{rule}", target_precision)
    teacher.acceptance = {"min_agreement": float(scored.frame["iou"].quantile(1 - CONFIRMED_SHARE)),
                          "confirmed_share": CONFIRMED_SHARE}
    if threshold is not None:
        teacher.acceptance.update(max_priority=threshold, target_precision=target_precision)
    evidence = {"weights": dict(zip(teacher.names, teacher.weights)), "rule_aucs": aucs,
                **summary(scored.frame, rule, threshold)}
    return teacher, evidence


def holdout_rows(paths: Sequence[str], split: str) -> mf.Manifest:
    """Rows of ``split`` with a mask from the manifests (the calibration photos)."""
    combined = mf.concat([mf.load(p) for p in paths], root=mf.load(paths[0]).root, prefix_ids=False)
    return mf.select(combined, split=split, with_mask=True)


def build_teacher(members: Sequence[MemberSpec], calibration: Sequence[str], split: str, out: str,
                  target_precision: float = 0.97, card: dict | None = None) -> dict:
    """Assemble ``members``, calibrate them on the ``split`` rows of the ``calibration`` manifests and write the
    ensemble file ``out``; returns the evidence stored in its card.

    Args:
        members: the member checkpoints (:func:`~pipeline.teacher.ensemble.member_from_file`).
        calibration: manifests holding the calibration rows.
        split: their split (photos held out of every member's training, not the reported val set).
        out: the ensemble file to write.
        target_precision: share of auto-accepted calibration photos that must have IoU >= 0.90.
        card: provenance to keep beside the evidence (training data, budgets...).
    """
    rows = holdout_rows(calibration, split)
    if not len(rows):
        raise ValueError(f"no rows of split {split!r} with a mask in {', '.join(map(str, calibration))}")
    teacher, evidence = calibrate(assemble(members), rows, target_precision)
    for spec, weight in zip(members, teacher.weights):
        spec.weight = weight
    calibration_card = {"manifests": [str(p) for p in calibration], "split": split, **evidence}
    save_ensemble(out, members, teacher.priority, teacher.acceptance,
                  {**(card or {}), "calibration": calibration_card})
    return calibration_card
