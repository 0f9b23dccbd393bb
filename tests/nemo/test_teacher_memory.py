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


def _main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["teacher"])
    p.add_argument("--evo2-weights", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    {"teacher": _worker_teacher}[args.mode](args)


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


if __name__ == "__main__":
    _main()
