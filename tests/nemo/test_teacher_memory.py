"""The NeMo trainer's distillation teacher materialises no [L, L] attention tensor, and the training-memory
estimate (`focus_nemo.profiling.training_memory`) agrees with measured peaks at small shapes.

This file is also the worker (``python tests/nemo/test_teacher_memory.py MODE ...``, under
``torch.distributed.run`` for TP=2): Megatron keeps global parallel state per process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.nemo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

PATTERN = "SDH*SD*"
TEACHER_LEN = 384  # >= 127 (NeMo's medium filter wraps around below), and L x L far above any other tensor


def acgt_tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([65, 67, 71, 84])[torch.randint(0, 4, (batch, length), generator=g)]


def square_tensors(fn, length: int) -> list[tuple[int, ...]]:
    """Shapes of the tensors any aten op creates while `fn()` runs whose last two dimensions are
    [length, length] (attention scores, their softmax, a dense mask)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    found = []

    class Probe(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.dim() >= 2 and tuple(t.shape[-2:]) == (length, length):
                    found.append(tuple(t.shape))
            return out

    with Probe():
        fn()
    return found


# --------------------------------------------------------------------------- worker side
def _build(weights: str, k: int = 16, window: int = 128):
    from focus_nemo.evo2 import Evo2Config
    from focus_nemo.focus import FocusConfig
    from focus_nemo.nemo import build, cpu_shims
    from focus_nemo.nemo.focus_model import NemoFocusModel

    cpu_shims.apply()
    cfg = Evo2Config.preset("tiny", pattern=PATTERN)
    build.init_model_parallel(seed=0)
    mcore = build.build_hyena_model(cfg, seq_length=1024)
    build.load_evo2_weights(mcore, torch.load(weights, weights_only=True), cfg)
    return cfg, NemoFocusModel(mcore, FocusConfig(k=k, window=window, distill_weight=1.0), vocab_size=cfg.vocab_size)


def _worker_teacher(args) -> None:
    from focus_nemo.nemo import build

    cfg, fm = _build(args.evo2_weights)
    tokens = acgt_tokens(2, TEACHER_LEN, seed=7)
    with torch.no_grad():
        megatron = build.forward_logits(fm.base, tokens, cfg.vocab_size)
        teacher = fm.base_logits(tokens)
    out = {"megatron": megatron, "teacher": teacher, "tp": torch.distributed.get_world_size(),
           "teacher_square": square_tensors(lambda: fm.base_logits(tokens), TEACHER_LEN),
           "megatron_square": square_tensors(lambda: build.forward_logits(fm.base, tokens, cfg.vocab_size),
                                             TEACHER_LEN)}
    # The training objective with distillation: its teacher is the fused path too.
    from focus_nemo.focus.loss import focus_loss

    raw = acgt_tokens(2, TEACHER_LEN + 1, seed=8)
    out["loss_square"] = square_tensors(lambda: focus_loss(fm, raw)["loss"].backward(), TEACHER_LEN)
    if torch.distributed.get_rank() == 0:
        torch.save(out, args.out)
    build.teardown()


# (precision, seq_len, micro_batch): the estimate's shapes where blocks, not the vocabulary, dominate
MEMORY_CASES = [("32", 1024, 1), ("bf16-mixed", 512, 2)]
MEMORY_SHAPE = dict(hidden_size=256, ffn_hidden_size=512, num_heads=8, hcl_groups=256)
MEMORY_K = 16


def _worker_memory(args) -> None:
    """Measured peak growth of one distillation step (forward, teacher, backward) at MEMORY_CASES."""
    import gc

    from focus_nemo.evo2 import Evo2Config
    from focus_nemo.focus import FocusConfig
    from focus_nemo.focus.loss import focus_loss
    from focus_nemo.nemo import build, cpu_shims
    from focus_nemo.nemo.focus_model import NemoFocusModel
    from focus_nemo.profiling.training_memory import measure_step_peak

    cpu_shims.apply()
    cfg = Evo2Config.preset("tiny", pattern=PATTERN, **MEMORY_SHAPE)
    build.init_model_parallel(seed=0)
    out = {"tp": torch.distributed.get_world_size(), "peaks": {}}
    for precision, length, batch in MEMORY_CASES:
        dtype = torch.float32 if precision == "32" else torch.bfloat16
        mcore = build.build_hyena_model(cfg, seq_length=4096)
        fm = NemoFocusModel(mcore, FocusConfig(k=MEMORY_K, window=128, distill_weight=1.0),
                            vocab_size=cfg.vocab_size).to(dtype)
        raw = acgt_tokens(batch, length + 1, seed=9)
        focus_loss(fm, raw)["loss"].backward()  # first-call caches (rotary tables, kernels) outside the measure
        fm.zero_grad(set_to_none=True)
        gc.collect()
        out["peaks"][precision] = measure_step_peak(lambda m=fm, r=raw: focus_loss(m, r)["loss"].backward())
        out.setdefault("params", {})[precision] = (
            sum(p.numel() * p.element_size() for p in fm.base.parameters()),
            sum(p.numel() * p.element_size() for p in fm.parameters() if p.requires_grad))
        del fm, mcore
    if torch.distributed.get_rank() == 0:
        torch.save(out, args.out)
    build.teardown()


def _main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["teacher", "memory"])
    p.add_argument("--evo2-weights", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    {"teacher": _worker_teacher, "memory": _worker_memory}[args.mode](args)


# --------------------------------------------------------------------------- pytest side
@pytest.mark.parametrize("tp", [2])
def test_teacher_fused_attention_same_logits_no_square_tensor(tp, tmp_path):
    """The teacher (`NemoFocusModel.base_logits`) equals Megatron's own forward (fp32, TP=2) and, unlike
    it, creates no [.., L, L] tensor, alone or inside the distillation objective's forward and backward."""
    from conftest import require_nemo, run_worker, stressed_model

    require_nemo()
    torch.save(stressed_model(pattern=PATTERN, seed=3).state_dict(), tmp_path / "evo2.pt")
    run_worker(__file__, "teacher", "--evo2-weights", str(tmp_path / "evo2.pt"), "--out", str(tmp_path / "out.pt"),
               nproc=tp, timeout=600)
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["tp"] == tp
    ref, got = out["megatron"], out["teacher"]
    assert got.shape == ref.shape == (2, TEACHER_LEN, ref.shape[-1]) and got.dtype == torch.float32
    assert ((got - ref).abs().max() / ref.abs().max()).item() <= 1e-5
    assert out["megatron_square"], "the probe must see Megatron's [B x heads, L, L] scores"
    assert out["teacher_square"] == [] and out["loss_square"] == []


def check_estimate(out: dict, tp: int) -> None:
    from focus_nemo.evo2 import Evo2Config
    from focus_nemo.profiling.training_memory import estimate_training_memory

    cfg = Evo2Config.preset("tiny", pattern=PATTERN, **MEMORY_SHAPE)
    assert out["tp"] == tp
    for precision, length, batch in MEMORY_CASES:
        est = estimate_training_memory(cfg, seq_len=length, micro_batch=batch, tp=tp, precision=precision,
                                       k=MEMORY_K, distill=True)
        measured = out["peaks"][precision]
        assert abs(est.step_peak - measured) <= 0.3 * measured, (precision, est.to_dict(), measured)
        base, focus = out["params"][precision]
        assert abs(est.base_parameters - base) <= 0.01 * base, (precision, est.base_parameters, base)
        masters = 1 if precision == "32" else 3  # bf16 weights plus their fp32 masters: 3 x the bf16 bytes
        assert est.focus_parameters // masters == focus, (precision, est.focus_parameters, focus)


@pytest.mark.slow  # ~1.5 min per TP size on two cores
@pytest.mark.parametrize("tp", [1, 2])
def test_training_memory_estimate_matches_measured_peaks(tp, tmp_path):
    """`estimate_training_memory` per rank against the measured peak growth of a distillation step (fp32 and
    bf16, TP=1 and 2) within 30 %, and the parameter bytes per rank within 1 %."""
    from conftest import require_nemo, run_worker

    require_nemo()
    run_worker(__file__, "memory", "--evo2-weights", "-", "--out", str(tmp_path / "out.pt"), nproc=tp, timeout=600)
    check_estimate(torch.load(tmp_path / "out.pt", weights_only=True), tp)


if __name__ == "__main__":
    _main()
