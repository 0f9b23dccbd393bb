"""Parallel scoring: how the processes of a `torch.distributed` world split into scoring groups, and how rank 0
sends its decisions to the others (`from_rank0`).

A world of ``world`` ranks scoring with a model split over ``tp`` ranks (tensor parallel; 1 for a single-device
model) holds ``world // tp`` data-parallel groups of ``tp`` consecutive ranks (Megatron's order: tensor
parallel varies fastest). Every rank of a group streams the same records; the group's first rank (its
leader) writes those records' files; global rank 0 alone writes the manifest and the summary."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

# Collectives of the data-parallel channel wait as long as the longest record takes (a chromosome may take
# hours), not the process group's default timeout.
CHANNEL_TIMEOUT = datetime.timedelta(days=30)


def rank_world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, or (0, 1) when it is not initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def from_rank0(obj, world: int, group=None):
    """Rank 0's `obj` on every rank (collective when world > 1; over `group` when given)."""
    if world == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0, group=group)
    return box[0]


def tensor_parallel_size(fm) -> int:
    """Ranks one copy of the model `fm` is split over: ``fm.tensor_parallel`` when the model says
    (`focus_nemo.nemo.scoring` sets it), Megatron's tensor-parallel size for another Megatron model, else 1."""
    tp = getattr(fm, "tensor_parallel", None)
    if tp:
        return int(tp)
    if type(fm).__name__ == "NemoFocusModel":
        from megatron.core import parallel_state

        return parallel_state.get_tensor_model_parallel_world_size()
    return 1


@dataclass(frozen=True)
class Layout:
    """Where this process stands: global `rank` of `world`, in data-parallel groups of `tp` ranks."""

    rank: int = 0
    world: int = 1
    tp: int = 1

    @property
    def groups(self) -> int:
        return self.world // self.tp

    @property
    def group(self) -> int:
        return self.rank // self.tp

    @property
    def leader(self) -> bool:
        """The group's first rank: it writes the group's record files."""
        return self.rank % self.tp == 0


def layout(fm) -> Layout:
    """This process's `Layout` for model `fm` (one group of one rank without torch.distributed)."""
    rank, world = rank_world()
    tp = tensor_parallel_size(fm) if world > 1 else 1
    if world % tp:
        raise ValueError(f"{world} ranks do not split into groups of {tp} tensor-parallel ranks")
    return Layout(rank, world, tp)


def init_data_parallel(device: str | None) -> str:
    """Join the torchrun world for data-parallel scoring with a single-device model per rank; returns the
    rank's device: its own GPU (``cuda:LOCAL_RANK``) when CUDA is available and `device` is not ``cpu``,
    else the CPU. gloo without CUDA, nccl with it."""
    dist = torch.distributed
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return f"cuda:{local}" if use_cuda else "cpu"


def teardown_data_parallel() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
