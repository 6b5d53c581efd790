"""What every Ray engine of a stage shares: a local Ray, items in as a Ray dataset, outcomes back to the driver.

A stage's Ray engine builds a Ray Data pipeline of actor pools; its items enter pickled (payloads of any shape),
its actors return each :class:`~sinet_plus.stage.Outcome` as JSON, and the driver streams them into
:func:`~sinet_plus.stage.run_stage`, which journals them exactly as it does the local engine's.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from sinet_plus.stage import Outcome


def start_local_ray(num_cpus: int | None = None) -> None:
    """Start Ray on this machine, its worker processes at the driver's priority.

    Ray starts workers at nice 15. Next to any other busy process (a training run here) that starved the actors:
    the first mask came after 94 s instead of 14 s, and each batch of 8 took 14 s instead of 1.6 s. The
    stage's actors are the job, so they run at normal priority (``RAY_worker_niceness`` may override).

    Args:
        num_cpus: CPUs Ray may schedule (None = all of this machine's).
    """
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)


def ray_cluster() -> dict[str, float]:
    """The resources of the running Ray cluster, starting a local one first when none runs."""
    import ray

    if not ray.is_initialized():
        start_local_ray()
    return ray.cluster_resources()


def items_dataset(items: Sequence[tuple[str, Any]], batch_size: int):
    """A Ray dataset of ``(key, payload)`` items, payloads pickled, in blocks of about ``batch_size`` items."""
    import ray

    return ray.data.from_items([{"key": key, "item": pickle.dumps(item)} for key, item in items],
                               override_num_blocks=max(1, min(len(items) // max(1, batch_size), 64)))


def outcome_column(outcomes: Sequence[Outcome]) -> dict[str, np.ndarray]:
    """An actor's batch result: the outcomes as JSON strings (numpy scalars become plain numbers)."""
    return {"outcome": np.array([json.dumps(asdict(o), default=_plain) for o in outcomes], dtype=object)}


def outcomes(dataset) -> Iterator[Outcome]:
    """Stream the outcomes of a dataset whose last stage returned :func:`outcome_column` batches."""
    for row in dataset.iter_rows():
        yield Outcome(**json.loads(row["outcome"]))


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)
