"""The Ray engine: the two per-item halves of a labelling stage as a Ray Data pipeline.

``from_items`` → ``map_batches(_Loader)`` (actors that call ``load`` on each item: read the photo, run MTCNN) →
``map_batches(_Model)`` (an actor pool, each actor holding one labeller built by ``make_labeler``, GPUs per actor
where there are any) → outcomes streamed back to the driver, which journals them through ``run_stage``. The halves
are handed in (for ``pipeline pseudo-label``: :func:`~pipeline.teacher.pseudo_label.load_photo` and
:class:`~pipeline.teacher.pseudo_label.Labeler`), so this module knows nothing of what is labelled. Loaded photos
travel between stages pickled (ragged arrays of different sizes). Ray is started locally when no cluster is
running (:func:`start_local_ray`); call ``ray.init(address=...)`` first to use one.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from sinet_plus.stage import Outcome


class _Loader:
    """Ray actor: items in, pickled loaded items out (``load`` runs in the actor: MTCNN is loaded once per actor)."""

    def __init__(self, load: Callable[[str, Any], Any]):
        import torch

        torch.set_num_threads(1)
        self.load = load

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = [self.load(key, pickle.loads(item)) for key, item in zip(batch["key"], batch["item"])]
        return {"loaded": np.array([pickle.dumps(photo) for photo in loaded], dtype=object)}


class _Model:
    """Ray actor holding one labeller: a batch of loaded items in, one outcome per item out."""

    def __init__(self, make_labeler: Callable[[], Callable[[list], list[Outcome]]]):
        self.labeler = make_labeler()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = self.labeler([pickle.loads(blob) for blob in batch["loaded"]])
        return {"outcome": np.array([outcome.to_json() for outcome in outcomes], dtype=object)}


def start_local_ray(num_cpus: int | None = None) -> None:
    """Start Ray on this machine, its worker processes at the driver's priority.

    Ray starts workers at nice 15, so next to any other busy process the actors starve (docs/teacher.md has the
    measurement). They are the job, so they run at normal priority (``RAY_worker_niceness`` may override).

    Args:
        num_cpus: CPUs Ray may schedule (None = all of this machine's).
    """
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)


def run_ray(items: Sequence[tuple[str, Any]], load: Callable[[str, Any], Any],
            make_labeler: Callable[[], Callable[[list], list[Outcome]]], batch_size: int, loaders: int,
            actors: int = 1, gpus_per_actor: float | None = None) -> Iterator[Outcome]:
    """Yield one outcome per item, computed by Ray Data actors (see the module docstring).

    Args:
        items: pending ``(key, item)`` pairs (picklable).
        load: ``load(key, item)`` → a loaded item, run in the loading actors (a picklable top-level function or
            ``functools.partial`` of one).
        make_labeler: builds, once per model actor, the callable that turns a batch of loaded items into one
            outcome each (e.g. a ``functools.partial`` of a class holding the model); paths it uses must be
            readable from every Ray node.
        batch_size: items per batch in both stages.
        loaders: loading actors (fewer when the cluster's CPUs cannot hold them next to the model actors).
        actors: model actors.
        gpus_per_actor: GPUs reserved per model actor; None = one where the cluster has GPUs, else none.
    """
    import ray

    if not ray.is_initialized():
        start_local_ray()
    resources = ray.cluster_resources()
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    # Every actor takes one CPU; asking for more than the cluster has leaves Ray Data waiting for actors that
    # cannot start, which delays the first outcome by minutes.
    loaders = max(1, min(loaders, int(resources.get("CPU", 1)) - actors))
    dataset = ray.data.from_items([{"key": key, "item": pickle.dumps(item)} for key, item in items],
                                  override_num_blocks=max(1, min(len(items) // max(1, batch_size), 64)))
    loaded = dataset.map_batches(_Loader, fn_constructor_args=(load,), batch_size=batch_size,
                                 batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=loaders),
                                 num_cpus=1)
    labelled = loaded.map_batches(_Model, fn_constructor_args=(make_labeler,), batch_size=batch_size,
                                  batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=max(1, actors)),
                                  num_gpus=gpus_per_actor, num_cpus=1)
    for row in labelled.iter_rows():
        yield Outcome.from_json(row["outcome"])
