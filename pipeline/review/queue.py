"""Turn manifests into review items: path checks against the data root, queue order, double review, gold."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from pipeline.review.gold import DAMAGES, damage
from pipeline.review.store import NewItem, ReviewStoreError, Store
from sinet_plus import manifest as mf
from sinet_plus.errors import UserError
from sinet_plus.imageio import ImageReadError, read_mask, write_mask

ORDERS = ("priority", "random", "file")
"""Queue orders: likely failures first (manifest ``priority``), a fixed shuffle, or manifest order."""


class QueueError(UserError):
    """A manifest that cannot be queued; the message names the manifest and the problem."""


@dataclass
class QueuePlan:
    """Items to add and the rows that were left out, with reasons."""

    items: list[NewItem] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def uniform(key: str, salt: str) -> float:
    """A fixed pseudo-random number in [0, 1) for ``key``: the same on every run and machine."""
    return int(hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()[:13], 16) / 16 ** 13


def rank(key: str, priority: float | None, order: str, mix: float) -> float:
    """Queue position of an item (lower first).

    Args:
        key: the item's key (seeds the shuffle).
        priority: predicted-failure score in [0, 1] (``None`` when the manifest has none).
        order: one of :data:`ORDERS`.
        mix: share of items placed at a random position among the ``priority`` order, so the queue also
            shows ordinary items and the accept rate is not judged on failures only.
    """
    if order == "random" or (order == "priority" and uniform(key, "mix") < mix):
        return uniform(key, "order")
    if order == "priority":
        return 1.0 - (priority if priority is not None and priority == priority else 0.0)
    return 0.0


def default_root(manifest: mf.Manifest) -> Path:
    """The deepest folder holding the manifest and every file it names."""
    paths = [str(manifest.root)] + [str(p) for column in ("image", "mask") for p in manifest.paths(column) if p]
    return Path(os.path.commonpath(paths))


def _escaping(manifest: mf.Manifest, root: Path) -> list[str]:
    return [f"{sample_id} ({value})" for column in ("image", "mask")
            for sample_id, value, path in zip(manifest.frame["id"], manifest.frame[column], manifest.paths(column))
            if path is not None and not path.is_relative_to(root)]


def _rows(manifest: mf.Manifest) -> list[dict]:
    return json.loads(manifest.frame.to_json(orient="records"))


def plan_queue(path: str | os.PathLike, root: Path, statuses: tuple[str, ...] = ("pending",),
               order: str = "priority", mix: float = 0.0, double: float = 0.0) -> QueuePlan:
    """Items for the rows of one manifest that have a mask and one of ``statuses``.

    A path that resolves outside ``root`` refuses the whole manifest (:class:`QueueError`); a row whose
    photo or mask is missing is left out and named in ``problems``.

    Args:
        path: the manifest.
        root: the queue's data root.
        statuses: which review states to queue (generated masks are ``pending``).
        order, mix: see :func:`rank`.
        double: share of items that two annotators review, for the agreement figure.
    """
    if order not in ORDERS:
        raise QueueError(f"unknown order {order!r} (use one of {', '.join(ORDERS)})")
    try:
        manifest = mf.load(path)
    except mf.ManifestError as error:
        raise QueueError(str(error)) from None
    root = root.resolve()
    escaping = _escaping(manifest, root)
    if escaping:
        named = ", ".join(escaping[:5]) + (" ..." if len(escaping) > 5 else "")
        raise QueueError(f"{path}: {len(escaping)} paths lie outside the data root {root}, refusing the manifest: "
                         f"{named} (queue them into a database with a wider --root)")
    plan = QueuePlan()
    selected = mf.select(manifest, status=statuses, with_mask=True)
    if len(selected) == 0:
        found = ", ".join(sorted(set(manifest.frame["status"]))) or "no rows"
        plan.problems.append(f"{path}: no rows with a mask and status {', '.join(statuses)} (found: {found}; "
                             "choose others with --status, e.g. --status accepted)")
        return plan
    present = [image.is_file() and mask.is_file()
               for image, mask in zip(selected.paths("image"), selected.paths("mask"))]
    for ok, sample_id, image, mask in zip(present, selected.frame["id"], selected.paths("image"),
                                          selected.paths("mask")):
        if not ok:
            missing = ", ".join(str(p) for p in (image, mask) if not p.is_file())
            plan.problems.append(f"{path}: {sample_id}: file vanished: {missing}")
    kept = mf.Manifest(selected.frame[present].reset_index(drop=True), selected.root)
    rebased = mf.concat([kept], root)
    for row in _rows(rebased):
        key = row["id"]
        plan.items.append(NewItem(key=key, image=row["image"], mask=row["mask"],
                                  rank=rank(key, row.get("priority"), order, mix), row=row, manifest=str(path),
                                  needed=2 if uniform(key, "double") < double else 1))
    return plan


def plan_gold(path: str | os.PathLike, root: Path, gold_dir: Path, count: int) -> QueuePlan:
    """Gold items from ``count`` rows of a manifest of known-good masks (e.g. EG1800's human masks).

    Each chosen photo gives two items: its good mask (expected: accept) and one damaged copy (expected:
    reject), the damage kinds taking turns. Damaged masks are written atomically under ``gold_dir``, which
    must lie under ``root``; rows are chosen by a fixed shuffle of their ids, so reruns pick the same ones.
    """
    root, gold_dir = root.resolve(), gold_dir.resolve()
    if not gold_dir.is_relative_to(root):
        raise QueueError(f"{gold_dir}: the gold folder must lie under the data root {root}")
    plan = plan_queue(path, root, statuses=mf.STATUSES, order="file")
    plan.items.sort(key=lambda item: uniform(item.key, "gold"))
    gold: list[NewItem] = []
    for number, item in enumerate(plan.items[:count]):
        kind = DAMAGES[number % len(DAMAGES)]
        target = gold_dir / f"{item.key.replace('/', '_')}-{kind}.png"
        try:
            if not target.is_file():
                write_mask(target, damage(read_mask(root / item.mask), kind, seed=number))
        except ImageReadError as error:
            plan.problems.append(f"gold: {error}")
            continue
        for key, mask, gold_kind in ((f"gold:{item.key}", item.mask, "good"),
                                     (f"gold:{item.key}:{kind}", str(target.relative_to(root)), kind)):
            row = {**item.row, "id": key, "mask": mask}
            gold.append(NewItem(key=key, image=item.image, mask=mask, rank=uniform(key, "order"), row=row,
                                manifest=str(path), gold=gold_kind))
    return QueuePlan(gold, plan.problems)


class QueueResult(NamedTuple):
    """What a queue call did: items added, items queued before, rows left out (with reasons), the data root."""

    added: int
    known: int
    problems: list[str]
    root: Path


def queue_manifests(target: Store | Path, manifests: list[Path], root: Path | None = None,
                    statuses: tuple[str, ...] = ("pending",), order: str = "priority", mix: float = 0.0,
                    double: float = 0.0, gold_from: Path | None = None, gold_count: int = 0,
                    gold_dir: Path | None = None) -> QueueResult:
    """Queue manifests (and gold items) into a review store.

    The first call fixes the store's data root: ``root``, or the deepest folder holding the first
    manifest and its files. Later calls must not name another root; the root is set and compared in the
    transaction that adds the items, so of two queues racing on a new database with different roots one
    is refused.

    Args:
        target: an open store, or the path of a database; a database that does not exist yet is created only
            when there are items to add, so a refused or empty queue leaves no file behind.
        manifests: manifests whose masked rows to queue.
        root: the data root (None: the stored one, or the deepest folder of the first manifest and its files).
        statuses: which review states to queue.
        order, mix, double: see :func:`plan_queue`.
        gold_from, gold_count: known-good manifest and how many of its photos become gold items.
        gold_dir: where damaged gold masks go (default: ``<db stem>-gold`` beside the database).

    Raises:
        QueueError: a manifest cannot be queued, or the data root differs from the stored one.
        ReviewStoreError: ``target`` names a file that is not a usable review database.
    """
    with contextlib.ExitStack() as stack:
        if isinstance(target, Store):
            store, db = target, target.path
        else:
            db = Path(target)
            # create=True: a file another queue is creating right now may still be empty
            store = stack.enter_context(Store(db, create=True)) if db.exists() else None
        stored = store.setting("data_root") if store is not None else None
        if stored is not None and root is not None and Path(stored) != root.resolve():
            raise QueueError(f"{db}: its data root is {stored}; it cannot change to {root.resolve()}")
        if stored is not None:
            root = Path(stored)
        elif root is None:
            try:
                root = default_root(mf.load(manifests[0]))
            except mf.ManifestError as error:
                raise QueueError(str(error)) from None
            if root == Path(root.anchor):
                raise QueueError(f"{manifests[0]}: the manifest and its files share no folder but {root}; "
                                 "choose the data root with --root")
        root = root.resolve()
        plans = [plan_queue(path, root, statuses, order, mix, double) for path in manifests]
        if gold_from is not None and gold_count > 0:
            plans.append(plan_gold(gold_from, root, gold_dir or db.parent / f"{db.stem}-gold", gold_count))
        items = [item for plan in plans for item in plan.items]
        problems = [problem for plan in plans for problem in plan.problems]
        if store is None:
            if not items:
                return QueueResult(0, 0, problems, root)
            store = stack.enter_context(Store(db, create=True))
        try:
            added = store.add_items(items, data_root=root)
        except ReviewStoreError as error:
            raise QueueError(str(error)) from None
        return QueueResult(added, len(items) - added, problems, root)
