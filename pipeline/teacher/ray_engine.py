"""The Ray engine: the same two halves as the local engine, as a Ray Data pipeline.

``from_items`` → ``map_batches(_Loader)`` (actors that read photos and run MTCNN) → ``map_batches(_Model)``
(an actor pool, each actor holding one :class:`~pipeline.teacher.pseudo_label.Labeler`, GPUs per actor where
there are any) → outcomes streamed back to the driver, which journals them through ``run_stage``. Loaded
photos travel between stages as pickled :class:`LoadedPhoto` bytes (ragged arrays of different sizes). Ray is
started locally when no cluster is running (:func:`start_local_ray`); call ``ray.init(address=...)`` first to use
one.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import asdict

import numpy as np

from pipeline.teacher.pseudo_label import Labeler, LabelOptions, PhotoItem, load_photo
from sinet_plus.stage import Outcome


class _Loader:
    """Ray actor: photos in, pickled :class:`LoadedPhoto` out (MTCNN loaded once per actor)."""

    def __init__(self, options: LabelOptions):
        import torch

        torch.set_num_threads(1)
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = [load_photo(key, pickle.loads(item), self.options.faces)
                  for key, item in zip(batch["key"], batch["item"])]
        return {"loaded": np.array([pickle.dumps(photo) for photo in loaded], dtype=object)}


class _Model:
    """Ray actor holding the teacher: the same per-batch :class:`Labeler` as the local engine."""

    def __init__(self, teacher: str, out_dir: str, options: LabelOptions):
        self.labeler = Labeler(teacher, out_dir, options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = self.labeler([pickle.loads(blob) for blob in batch["loaded"]])
        return {"outcome": np.array([json.dumps(asdict(o), default=_plain) for o in outcomes], dtype=object)}


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)


def start_local_ray(num_cpus: int | None = None) -> None:
    """Start Ray on this machine, its worker processes at the driver's priority.

    Ray starts workers at nice 15. Next to any other busy process (a training run here) that starved the actors:
    the first mask came after 94 s instead of 14 s, and each batch of 8 took 14 s instead of 1.6 s. The
    pseudo-labelling actors are the job, so they run at normal priority (``RAY_worker_niceness`` may override).

    Args:
        num_cpus: CPUs Ray may schedule (None = all of this machine's).
    """
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)


def run_ray(teacher: str | os.PathLike, out_dir: str | os.PathLike, items: Sequence[tuple[str, PhotoItem]],
            options: LabelOptions, actors: int = 1, gpus_per_actor: float | None = None) -> Iterator[Outcome]:
    """Yield one outcome per item, computed by Ray Data actors (see the module docstring).

    Args:
        teacher: checkpoint path, readable from every Ray node.
        out_dir: output folder, shared by every Ray node.
        items: pending ``(key, item)`` pairs.
        options: batch size, resize, signals; ``options.workers`` loading actors (fewer when the cluster's CPUs
            cannot hold them next to the model actors).
        actors: model actors.
        gpus_per_actor: GPUs reserved per model actor; None = one where the cluster has GPUs, else none.
    """
    import ray

    if not ray.is_initialized():
        start_local_ray()
    resources = ray.cluster_resources()
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    # Every actor takes one CPU. Asking for more than the cluster has leaves Ray Data waiting for actors that
    # cannot start (here: 2 loaders + 1 model on num_cpus=2 delayed the first mask by over two minutes).
    loaders = max(1, min(options.workers, int(resources.get("CPU", 1)) - actors))
    dataset = ray.data.from_items([{"key": key, "item": pickle.dumps(item)} for key, item in items],
                                  override_num_blocks=max(1, min(len(items) // max(1, options.batch_size), 64)))
    loaded = dataset.map_batches(_Loader, fn_constructor_args=(options,), batch_size=options.batch_size,
                                 batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=loaders),
                                 num_cpus=1)
    labelled = loaded.map_batches(_Model, fn_constructor_args=(str(teacher), str(out_dir), options),
                                  batch_size=options.batch_size, batch_format="numpy",
                                  compute=ray.data.ActorPoolStrategy(size=max(1, actors)),
                                  num_gpus=gpus_per_actor, num_cpus=1)
    for row in labelled.iter_rows():
        yield Outcome(**json.loads(row["outcome"]))
