"""Per-item stages on Ray Data: the counterpart of :func:`sinet_plus.stage.map_items` for a cluster, in two shapes.

* :func:`map_on_ray` — one stage: ``from_items`` → ``map_batches(_Mapper)`` (an actor pool; each actor runs the
  ``initializer`` once, e.g. loading MTCNN, then the per-item ``process`` under the stage runner's guard). What
  ``crop-baidu --engine ray`` runs.
* :func:`run_ray` — two halves: ``map_batches(_Loader)`` (actors that call ``load`` on each item: read the photo,
  run MTCNN) → ``map_batches(_Model)`` (an actor pool, each actor holding one labeller built by
  ``make_labeler``, GPUs per actor where there are any). What ``pseudo-label --engine ray`` runs.

Outcomes stream back to the driver, which journals them through ``run_stage``; the work is handed in, so this
module knows nothing of what is cropped or labelled. Items and loaded photos travel pickled (ragged arrays of
different sizes). Ray is started locally when no cluster is running (:func:`start_local_ray`); call
``ray.init(address=...)`` first to use one (its nodes must see the photos and the output folder).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from sinet_plus.stage import Outcome, guarded


class _Mapper:
    """Ray actor: the stage's ``initializer`` once, then ``process`` per item (a failing item becomes its skip)."""

    def __init__(self, process: Callable[[Any], Outcome], initializer: Callable[..., None] | None, initargs: tuple):
        if initializer is not None:
            initializer(*initargs)
        self.process = process

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = [guarded(self.process, key, pickle.loads(item)) for key, item in zip(batch["key"], batch["item"])]
        return {"outcome": np.array([outcome.to_json() for outcome in outcomes], dtype=object)}


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


def _dataset(items: Sequence[tuple[str, Any]], batch_size: int):
    """The pending items as a Ray dataset of pickled payloads, started Ray included."""
    import ray

    if not ray.is_initialized():
        start_local_ray()
    return ray.data.from_items([{"key": key, "item": pickle.dumps(item)} for key, item in items],
                               override_num_blocks=max(1, min(len(items) // max(1, batch_size), 64)))


def map_on_ray(process: Callable[[Any], Outcome], items: Sequence[tuple[str, Any]], actors: int = 1,
               initializer: Callable[..., None] | None = None, initargs: tuple = (), batch_size: int = 4
               ) -> Iterator[Outcome]:
    """Yield one outcome per item, ``process(payload)`` run by ``actors`` Ray actors (one CPU each).

    Args:
        process: the per-item function (a picklable top-level function, as for ``map_items``).
        items: pending ``(key, payload)`` pairs (picklable).
        actors: actors (at most the cluster's CPUs).
        initializer: run once per actor with ``initargs`` before its first item (e.g. load a model).
        initargs: its arguments.
        batch_size: items per actor call.
    """
    import ray

    dataset = _dataset(items, batch_size)
    actors = max(1, min(actors, int(ray.cluster_resources().get("CPU", 1))))
    mapped = dataset.map_batches(_Mapper, fn_constructor_args=(process, initializer, initargs), batch_size=batch_size,
                                 batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)
    for row in mapped.iter_rows():
        yield Outcome.from_json(row["outcome"])


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

    dataset = _dataset(items, batch_size)
    resources = ray.cluster_resources()
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    # Every actor takes one CPU; asking for more than the cluster has leaves Ray Data waiting for actors that
    # cannot start, which delays the first outcome by minutes.
    loaders = max(1, min(loaders, int(resources.get("CPU", 1)) - actors))
    loaded = dataset.map_batches(_Loader, fn_constructor_args=(load,), batch_size=batch_size,
                                 batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=loaders),
                                 num_cpus=1)
    labelled = loaded.map_batches(_Model, fn_constructor_args=(make_labeler,), batch_size=batch_size,
                                  batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=max(1, actors)),
                                  num_gpus=gpus_per_actor, num_cpus=1)
    for row in labelled.iter_rows():
        yield Outcome.from_json(row["outcome"])
