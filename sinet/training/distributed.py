"""Data-parallel training under ``torchrun``: the process's rank, and the two collective calls the trainer needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist


@dataclass
class Distributed:
    """Process rank and count under ``torchrun`` (rank 0 of 1 otherwise)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device_type: str) -> Distributed:
        """Join the process group when ``torchrun``'s variables say there is more than one process."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        return cls(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group at the end of the run."""
        if self.world_size > 1:
            dist.destroy_process_group()
