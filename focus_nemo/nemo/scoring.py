"""Tensor-parallel FOCUS model for whole-record scoring (`focus_nemo.scoring.score_fasta`).

Run under ``torchrun --nproc_per_node N``: every rank builds NeMo's Megatron Hyena base with its TP shards
(TP = N = world size; or a world of D x N ranks: D data-parallel groups of N consecutive ranks, each group
one copy of the model, `focus_nemo.scoring.dataparallel`), loads the base weights from the checkpoint (any
format `focus_nemo.evo2.checkpoint` reads, NeMo 2 directories included), wraps it in `NemoFocusModel` and
loads the adapter. The model streams like `FocusModel` (`init_state`, `forward_chunk`), its logits gathered
over the ranks of its group.

Fingerprints: the returned model carries ``base_fingerprint``, `focus_nemo.scoring.tensor_fingerprint`
of the checkpoint's Evo-2 state dict (in `Evo2Model` names, floating tensors cast to the scoring dtype:
exactly the state dict of the single-device model `focus_nemo.scoring.load_scoring_model` builds from
the same checkpoint), computed on rank 0 and broadcast. With the adapter fingerprint taken over the
gathered full tensors, the scoring settings of a TP run equal those of a single-device run.

This module imports without NeMo; Megatron and NeMo are imported when a model is loaded.

Usage (on every rank)::

    check_world_size(2)
    fm, k, window = load_tp_scoring_model("ckpt/", adapter="adapter/")
    score_fasta("x.fa", "scores/", fm, k=k, window=window)   # rank 0 writes
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch

from focus_nemo.scoring.stream import ScoringError

logger = logging.getLogger(__name__)

RANDOM_SEED = 0  # seed of `random:<preset>` base weights, the same on every rank


def world_size_from_env() -> int:
    """The torchrun world size (``WORLD_SIZE``; 1 when the process was not started by torchrun)."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(text)
    except ValueError:
        raise ScoringError(f"WORLD_SIZE={text!r} is not an integer") from None


def check_world_size(tensor_parallel: int) -> None:
    """Raise ScoringError unless this process is one of a multiple of `tensor_parallel` torchrun ranks (one
    data-parallel group of `tensor_parallel` ranks per model copy)."""
    if tensor_parallel < 1:
        raise ScoringError(f"--tensor-parallel: must be >= 1, got {tensor_parallel}")
    world = world_size_from_env()
    if world % tensor_parallel:
        how = ("this process was not started by torchrun (WORLD_SIZE is not set)" if "WORLD_SIZE" not in os.environ
               else f"torchrun started {world} process(es) (WORLD_SIZE={world})")
        raise ScoringError(f"--tensor-parallel {tensor_parallel} needs {tensor_parallel} processes (or a multiple: "
                           f"groups of {tensor_parallel} that score records side by side), but {how}; run: torchrun "
                           f"--nproc_per_node {tensor_parallel} recipes/score_fasta.py ... --tensor-parallel "
                           f"{tensor_parallel}")


def init_groups(tensor_parallel: int, seed: int = 1234) -> None:
    """Initialise torch.distributed and Megatron with TP = `tensor_parallel` when the world holds several
    groups of that size (`focus_nemo.nemo.build.init_model_parallel`, which then keeps it, takes TP = world)."""
    if world_size_from_env() == tensor_parallel:
        return
    from megatron.core import parallel_state
    from megatron.core import tensor_parallel as mcore_tp

    from focus_nemo.nemo import cpu_shims

    cpu_shims.apply()
    dist = torch.distributed
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", init_method="env://")
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tensor_parallel)
        mcore_tp.model_parallel_cuda_manual_seed(seed)


def check_request(tensor_parallel: int, device: str | None, config: str = "") -> None:
    """What a tensor-parallel scoring command asks for, checked before the slow NeMo imports: no ``--config``
    (convert such checkpoints first), `check_world_size`, and `device` (if given) the one every rank uses:
    its own GPU, or the CPU."""
    if config:
        raise ValueError("--config: not supported with --tensor-parallel; convert the checkpoint first "
                         "(recipes/convert_checkpoint.py --config ... --format safetensors or nemo2)")
    check_world_size(tensor_parallel)
    requested = device
    want = "cuda" if torch.cuda.is_available() else "cpu"
    if requested is not None and torch.device(requested).type != want:
        raise ValueError(f"--device {requested}: with --tensor-parallel each rank runs on "
                         f"{'its own GPU (LOCAL_RANK)' if want == 'cuda' else 'the CPU (no CUDA here)'}")


def read_base(checkpoint: str):
    """(Evo2Model-layout state dict, Evo2Config) of ``embedded``, ``random:<preset>`` or a checkpoint path."""
    from focus_nemo.evo2 import Evo2Config, Evo2Model
    from focus_nemo.evo2.checkpoint import read_checkpoint
    from focus_nemo.loading import resolve_checkpoint

    name, path = resolve_checkpoint(checkpoint)
    if path is None:
        cfg = Evo2Config.preset(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            state = Evo2Model(cfg).state_dict()
        return state, cfg
    state, cfg, _ = read_checkpoint(path)
    return state, cfg


def base_fingerprint(state: dict[str, torch.Tensor], dtype: torch.dtype) -> str:
    """Fingerprint of an Evo-2 state dict as a model cast to `dtype` holds it (floating tensors cast)."""
    from focus_nemo.scoring.model import tensor_fingerprint

    return tensor_fingerprint((n, t.to(dtype) if t.is_floating_point() else t) for n, t in sorted(state.items()))


def _broadcast(obj):
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def load_tp_scoring_model(checkpoint: str = "embedded", adapter: str | None = "embedded", k: int | None = None,
                          window: int | None = None, dtype: str = "float32", tensor_parallel: int | None = None,
                          horizon: int | str | None = "adapter"):
    """A `NemoFocusModel` holding this rank's shards, and the (k, W) to stream with (collective).

    Args:
        checkpoint: ``embedded``, ``random:<preset>`` (weights from seed `RANDOM_SEED`) or a base checkpoint path.
        adapter: ``embedded``, an adapter directory, or None (untrained: Focus projections copied from the base,
            with `FocusConfig`'s k and W unless given).
        k, window, horizon: as in `focus_nemo.scoring.load_scoring_model`.
        dtype: weight dtype (float32, bfloat16, float16).
        tensor_parallel: expected TP size (checked against WORLD_SIZE); None takes the world size.

    Returns:
        (model, k, window); the model is on this rank's GPU (``LOCAL_RANK``) when CUDA is available, else on
        the CPU, and carries ``base_fingerprint`` (see the module docstring).
    """
    from focus_nemo.loading import embedded_adapter_dir, parse_dtype
    from focus_nemo.scoring.model import scoring_ratio, set_scoring_horizon, untrained_focus_config

    if tensor_parallel is not None:
        check_world_size(tensor_parallel)
    dt = parse_dtype(dtype)
    if adapter is not None and adapter != "embedded" and not Path(adapter).is_dir():
        raise FileNotFoundError(f"adapter: {adapter} is not a directory")

    from focus_nemo.focus import FocusConfig
    from focus_nemo.nemo import build
    from focus_nemo.nemo.focus_model import NemoFocusModel

    if tensor_parallel is not None:
        init_groups(tensor_parallel)
    tp = build.init_model_parallel()
    if tensor_parallel is not None and tp != tensor_parallel:
        raise ScoringError(f"--tensor-parallel {tensor_parallel}: Megatron was initialised with TP={tp}")
    rank = torch.distributed.get_rank()
    try:
        state, cfg = read_base(checkpoint)
        build.check_nemo_compatible(cfg)
        error = None
    except (ValueError, FileNotFoundError) as e:
        state, cfg, error = None, None, e
    # Every rank reads the same files; agree on failure so that no rank waits for the others.
    failed = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(failed, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if any(failed):
        raise ScoringError(f"another rank could not read the base checkpoint: {next(f for f in failed if f)}")
    fingerprint = _broadcast(base_fingerprint(state, dt) if rank == 0 else None)

    mcore = build.build_hyena_model(cfg, params_dtype=dt)
    if torch.cuda.is_available():
        mcore = mcore.cuda()
    build.load_evo2_weights(mcore, state, cfg)
    del state
    mcore = mcore.to(dt)
    focus = untrained_focus_config(k, window) if adapter is None else FocusConfig()
    fm = NemoFocusModel(mcore, focus, vocab_size=cfg.vocab_size)
    if adapter is not None:
        fm.load_adapter(embedded_adapter_dir() if adapter == "embedded" else adapter, cfg)
    fm.base_fingerprint = fingerprint
    fm.evo2_config = cfg
    fm.tensor_parallel = tp  # ranks per model copy (focus_nemo.scoring.parallel.Layout)
    fm.eval()
    k, window = scoring_ratio(fm, adapter, k, window)
    set_scoring_horizon(fm, horizon, cfg, window)
    if rank == 0:
        logger.info("tensor-parallel scoring model: %s base, TP=%d, k=%d, W=%d, %s", cfg.name, tp, k, window,
                    str(dt).removeprefix("torch."))
    return fm, k, window


@contextlib.contextmanager
def tp_scoring_model(tensor_parallel: int, device: str | None, config: str, *args, **kwargs):
    """`check_request`, then `load_tp_scoring_model` (`args`, `kwargs`); yields its (model, k, window) and
    tears the process group down on exit, also when loading or scoring fails."""
    try:
        check_request(tensor_parallel, device, config)  # before the slow NeMo imports
        yield load_tp_scoring_model(*args, tensor_parallel=tensor_parallel, **kwargs)
    finally:
        teardown()


def teardown() -> None:
    """Release Megatron's parallel state and the process group (nothing when none was started)."""
    if not torch.distributed.is_initialized():
        return
    from focus_nemo.nemo import build

    build.teardown()


__all__ = [
    "RANDOM_SEED", "base_fingerprint", "check_request", "check_world_size", "init_groups", "load_tp_scoring_model",
    "read_base",
    "teardown", "tp_scoring_model", "world_size_from_env",
]
