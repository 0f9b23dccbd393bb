"""The NeMo trainer's checkpoints: the adapter (single-device format) and each tensor-parallel rank's
optimizer state, committed through the shared protocol of `focus_nemo.training.checkpoint` (step
directories, the commit record, the settings check). With data parallelism each file is written by one
process only (see `save_checkpoint`)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from focus_nemo.durable import durable_write, sha256_file
from focus_nemo.evo2.config import Evo2Config
from focus_nemo.training.checkpoint import (
    CHECKPOINT_DIR,
    CHECKPOINT_RECORD,
    ResumeError,
    commit_checkpoint,
    new_step_directory,
    resume_settings,
)

log = logging.getLogger(__name__)


# Layout (nemo backend): <run_dir>/checkpoint/
#   step-00000050/  adapter.safetensors + adapter_config.json (full tensors, the single-device format),
#                   optimizer_tp{r}.pt per tensor-parallel rank (Megatron optimizer state of that rank's
#                   shards; the data-parallel replicas hold the same state, so one file serves them all)
#   latest.json     the commit record: step, directory, SHA-256 of every optimizer file, world size,
#                   tensor-parallel size and the run settings; written last, atomically.
# The same commit protocol as the single backend (focus_nemo.training.checkpoint). Every file is written by exactly
# one process: the ranks of data-parallel replica 0 (the adapter by its TP rank 0 = global rank 0,
# each optimizer file by its TP rank), the record by global rank 0.
NEMO_CHECKPOINT_FORMAT = "focus-nemo-nemo-checkpoint/2"


def parallel_settings(cfg) -> dict:
    """The parallel layout a checkpoint's optimizer files depend on (compared on resume)."""
    t = cfg.trainer
    return {"world_size": t.devices * t.num_nodes, "tensor_model_parallel_size": t.tensor_model_parallel_size,
            "precision": t.precision}


def writes_replica_files() -> bool:
    """Whether this rank belongs to data-parallel replica 0, whose ranks write what every replica holds
    (the adapter, the optimizer state of each tensor-parallel shard)."""
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return torch.distributed.get_rank() == 0 if torch.distributed.is_initialized() else True
    return parallel_state.get_data_parallel_rank() == 0


def save_final_adapter(fm, path: Path, evo2: Evo2Config, extra: dict) -> None:
    """Collective: the final adapter, written by global rank 0 alone (the TP ranks of replica 0 gather
    their shards to it); every rank returns once it is on disk."""
    if writes_replica_files():
        fm.save_adapter(path, evo2, extra=extra)  # a TP collective; TP rank 0 writes
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def save_checkpoint(fm, optimizer, step: int, run: Path, cfg, evo2: Evo2Config) -> None:
    """Collective (every rank calls it): write step directory, then commit it in latest.json."""
    from megatron.core import parallel_state


    dist = torch.distributed
    rank = dist.get_rank()
    ck = run / CHECKPOINT_DIR
    name = [new_step_directory(ck, step) if rank == 0 else None]
    dist.broadcast_object_list(name, src=0)
    target = ck / name[0]
    writer = writes_replica_files()
    digest = None
    if writer:
        fm.save_adapter(target, evo2, extra={"step": step})  # a TP collective; TP rank 0 writes
        state = {"step": step, "optimizer": optimizer.state_dict()}
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        digest = (tp_rank, durable_write(target / f"optimizer_tp{tp_rank}.pt", lambda f: torch.save(state, f)))
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    if rank == 0:
        by_tp = dict(d for d in digests if d is not None)
        commit_checkpoint(ck, {"format": NEMO_CHECKPOINT_FORMAT, "step": step, "directory": name[0],
                                "optimizer_sha256": [by_tp[r] for r in range(len(by_tp))],
                                "parallel": parallel_settings(cfg), "settings": resume_settings(cfg)})
    dist.barrier()


def read_checkpoint_record(run: Path, cfg) -> dict | None:
    """The commit record of ``<run>/checkpoint`` checked against `cfg`, or None when there is none.

    Raises:
        ResumeError: unreadable record, another checkpoint layout, or other settings (named).
    """
    ck = run / CHECKPOINT_DIR
    path = ck / CHECKPOINT_RECORD
    restart = f"to start over, delete {ck} or set resume=false"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        fmt = record.get("format")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as e:
        raise ResumeError(f"{path}: unreadable checkpoint record ({e}); {restart}") from None
    if fmt != NEMO_CHECKPOINT_FORMAT:
        raise ResumeError(f"{path}: format {fmt!r}, expected {NEMO_CHECKPOINT_FORMAT!r} (written by another "
                          f"backend?); {restart}")
    changed = [f"{key}: {record['settings'].get(key, '(absent)')!r} in the checkpoint, {value!r} now"
               for key, value in resume_settings(cfg).items() if record["settings"].get(key, "(absent)") != value]
    changed += [f"trainer.{key}: {record['parallel'].get(key)!r} in the checkpoint, {value!r} now"
                for key, value in parallel_settings(cfg).items() if record["parallel"].get(key) != value]
    if changed:
        raise ResumeError(f"{path}: the checkpoint was written with other settings ({'; '.join(changed)}); "
                          f"resume with the same settings, or {restart}")
    return record


def load_checkpoint(fm, optimizer, run: Path, record: dict, evo2: Evo2Config) -> int:
    """Restore this rank's adapter shards and optimizer state from the committed step directory."""
    from megatron.core import parallel_state


    target = run / CHECKPOINT_DIR / record["directory"]
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    path = target / f"optimizer_tp{tp_rank}.pt"
    restart = f"to start over, delete {run / CHECKPOINT_DIR} or set resume=false"
    if not path.is_file() or sha256_file(path) != record["optimizer_sha256"][tp_rank]:
        raise ResumeError(f"{path}: missing, truncated or modified (checksum differs from latest.json); {restart}")
    try:
        fm.load_adapter(target, evo2)
    except (OSError, ValueError) as e:
        raise ResumeError(f"{e}; {restart}") from None
    state = torch.load(path, weights_only=True, map_location="cpu")
    optimizer.load_state_dict(state["optimizer"])
    log.info("resumed from %s at step %d", target, record["step"])
    return int(record["step"])


def resume_record(run: Path, cfg) -> dict | None:
    """The commit record to resume from (None: start at step 0). With resume=false, global rank 0
    retires an existing checkpoint (its record is removed; the first save replaces the rest)."""
    if cfg.resume:
        return read_checkpoint_record(run, cfg)
    record = run / CHECKPOINT_DIR / CHECKPOINT_RECORD
    if int(os.environ.get("RANK", "0")) == 0 and record.is_file():
        record.unlink()
    return None
