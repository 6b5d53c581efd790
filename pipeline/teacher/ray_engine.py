"""The Ray engine: the same two halves as the local engine, as a Ray Data pipeline.

``from_items`` → ``map_batches(_Loader)`` (actors that read photos and run MTCNN) → ``map_batches(_Model)``
(an actor pool, each actor holding one :class:`~pipeline.teacher.pseudo_label.Labeler`, GPUs per actor where
there are any) → outcomes streamed back to the driver, which journals them through ``run_stage``. Loaded
photos travel between stages as pickled :class:`LoadedPhoto` bytes (ragged arrays of different sizes). Ray is
started locally when no cluster is running (:func:`~pipeline.ray_data.start_local_ray`); call
``ray.init(address=...)`` first to use one.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Sequence

import numpy as np

from pipeline.ray_data import items_dataset, outcome_column, outcomes, ray_cluster
from pipeline.stage import Outcome
from pipeline.teacher.pseudo_label import Labeler, LabelOptions, PhotoItem, load_photo


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
        return outcome_column(self.labeler([pickle.loads(blob) for blob in batch["loaded"]]))


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

    resources = ray_cluster()
    if gpus_per_actor is None:
        gpus_per_actor = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    # Every actor takes one CPU. Asking for more than the cluster has leaves Ray Data waiting for actors that
    # cannot start (here: 2 loaders + 1 model on num_cpus=2 delayed the first mask by over two minutes).
    loaders = max(1, min(options.workers, int(resources.get("CPU", 1)) - actors))
    loaded = items_dataset(items, options.batch_size).map_batches(
        _Loader, fn_constructor_args=(options,), batch_size=options.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=loaders), num_cpus=1)
    labelled = loaded.map_batches(_Model, fn_constructor_args=(str(teacher), str(out_dir), options),
                                  batch_size=options.batch_size, batch_format="numpy",
                                  compute=ray.data.ActorPoolStrategy(size=max(1, actors)),
                                  num_gpus=gpus_per_actor, num_cpus=1)
    return outcomes(labelled)
