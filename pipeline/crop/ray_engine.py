"""The Ray engine of ``crop-baidu``: the same per-photo function as the local engine, on a Ray Data actor pool.

``from_items`` → ``map_batches(_Cropper)`` (actors that each load MTCNN once, as a local worker process does,
and run :func:`~pipeline.crop.stage.process_photo` per photo) → outcomes streamed back to the driver, which
journals them through ``run_stage``. The pattern of the pseudo-label engine (:mod:`pipeline.teacher.ray_engine`,
whose :func:`~pipeline.teacher.ray_engine.start_local_ray` starts a local Ray when no cluster runs), in one
stage: cropping has no model half. Call ``ray.init(address=...)`` first to use a cluster (its nodes must see the
photos and the output folder).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator, Sequence

import numpy as np

from pipeline.crop.stage import CropSettings, init_worker, process_photo
from pipeline.teacher.ray_engine import start_local_ray
from sinet_plus.stage import Outcome, guarded


class _Cropper:
    """Ray actor: one MTCNN, photos in, outcomes out."""

    def __init__(self, settings: CropSettings, out_dir: str, threads: int):
        init_worker(settings, out_dir, threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = [guarded(process_photo, key, pickle.loads(item)) for key, item in zip(batch["key"], batch["item"])]
        return {"outcome": np.array([outcome.to_json() for outcome in outcomes], dtype=object)}


def run_ray(items: Sequence[tuple[str, tuple]], settings: CropSettings, out_dir: str | os.PathLike,
            actors: int = 1, threads: int = 1, batch_size: int = 4) -> Iterator[Outcome]:
    """Yield one outcome per ``(key, payload)`` item of :func:`~pipeline.crop.stage.plan_items`, cropped by actors.

    Args:
        items: pending items.
        settings: framing, rules, detector and output size.
        out_dir: output folder, shared by every Ray node.
        actors: cropping actors, one CPU each (at most the cluster's CPUs).
        threads: torch threads per actor.
        batch_size: photos per actor call.
    """
    import ray

    if not ray.is_initialized():
        start_local_ray()
    actors = max(1, min(actors, int(ray.cluster_resources().get("CPU", 1))))
    dataset = ray.data.from_items([{"key": key, "item": pickle.dumps(item)} for key, item in items],
                                  override_num_blocks=max(1, min(len(items) // batch_size, 64)))
    cropped = dataset.map_batches(_Cropper, fn_constructor_args=(settings, str(out_dir), threads),
                                  batch_size=batch_size, batch_format="numpy",
                                  compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)
    for row in cropped.iter_rows():
        yield Outcome.from_json(row["outcome"])
