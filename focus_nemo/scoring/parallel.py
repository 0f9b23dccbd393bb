"""Tensor-parallel scoring: every rank scores the same records; rank 0 alone touches the output directory
and sends its decisions to the others (`from_rank0`)."""

from __future__ import annotations

import torch


def rank_world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, or (0, 1) when it is not initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def from_rank0(obj, world: int):
    """Rank 0's `obj` on every rank (collective when world > 1)."""
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
