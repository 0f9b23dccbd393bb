"""NeMo's Megatron Hyena model and Evo2Model compute the same logits from the same weights (fp32, CPU).

Megatron keeps global parallel state per process, so every NeMo model runs in a fresh Python
process: this file is also the worker script (``python tests/nemo/test_parity.py ...``, or under
``torch.distributed.run`` for tensor parallelism), writing its results to a file that the test
compares with Evo2Model in the pytest process.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from focus_nemo.evo2 import Evo2Config, Evo2Model
from focus_nemo.evo2.nemo2 import megatron_to_evo2

pytestmark = pytest.mark.nemo

REPO = Path(__file__).resolve().parents[2]
SEQ_LEN = 300  # longer than the 128-tap medium filter (NeMo wraps it around for L <= 126)
REL_TOL = 1e-4  # max |nemo - evo2| / max |evo2|

CASES = {
    # Every block type once, Evo-2's (Arc) conventions.
    "tiny": dict(),
    # NVIDIA-trained conventions: short-filter bias, GELU in every MLP, no attention output bias,
    # plus three attention blocks, a scaled rotary embedding and another rotary base.
    "variant": dict(pattern="SDH*HS**D", short_conv_bias=True, activation_first_layer_only=False,
                    attn_out_bias=False, rotary_scaling=4.0, rotary_base=1e6),
}


def case_config(case: str) -> Evo2Config:
    return Evo2Config.preset("tiny", **CASES[case])


def acgt_tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([65, 67, 71, 84])[torch.randint(0, 4, (batch, length), generator=g)]


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@torch.no_grad()
def nontrivial_filters_(model, seed: int = 0) -> None:
    """Give a Megatron Hyena model's filters values whose contributions are far above tolerance.

    NeMo initialises the medium filter at 1e-5 scale and the long filter with small residues; here
    the medium taps are O(1/sqrt(128)) (keeping NeMo's decay buffer, so h * decay is exercised), the
    long filter decays slowly over the whole input with large residues and random p, and every
    filter's skip term D is O(1).
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        uniform = torch.rand(p.shape, generator=g)
        normal = torch.randn(p.shape, generator=g)
        if name.endswith("mixer.filter.h"):
            p.copy_(normal * 3.0 / math.sqrt(p.shape[-1]))
        elif name.endswith("mixer.filter.gamma"):
            p.copy_(torch.log(uniform * 0.02 + 1e-3))  # decay rates exp(p) * exp(gamma) ~ 1e-3 .. 4e-2
        elif name.endswith("mixer.filter.p"):
            p.copy_(uniform - 0.5)
        elif name.endswith("mixer.filter.R"):
            p.copy_(normal * 0.3)
        elif name.endswith("mixer.conv_bias"):
            p.copy_(uniform - 0.5)
        elif name.endswith("mixer.short_conv.short_conv_weight"):
            p.mul_(2.0)


# --------------------------------------------------------------------------- worker side
def _worker(args: argparse.Namespace) -> None:
    from focus_nemo.nemo import build

    cfg = case_config(args.case)
    build.init_model_parallel(seed=args.seed)
    model = build.build_hyena_model(cfg, seq_length=1024)
    if args.evo2_weights:
        build.load_evo2_weights(model, torch.load(args.evo2_weights, weights_only=True), cfg)
    else:
        nontrivial_filters_(model, seed=args.seed)
    tokens = acgt_tokens(2, SEQ_LEN, seed=args.seed)
    logits = build.forward_logits(model, tokens, cfg.vocab_size)
    if torch.distributed.get_rank() == 0:
        state = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
        torch.save({"tokens": tokens, "logits": logits, "state_dict": state,
                    "tp": torch.distributed.get_world_size()}, args.out)
    build.teardown()


def _main() -> None:
    parser = argparse.ArgumentParser(description="Run NeMo's Hyena model on a test case and save its logits.")
    parser.add_argument("--case", choices=sorted(CASES), required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evo2-weights", help="load these Evo2Model weights instead of NeMo's initialisation")
    _worker(parser.parse_args())


# --------------------------------------------------------------------------- pytest side
def evo2_from_megatron(state_dict: dict, cfg: Evo2Config) -> Evo2Model:
    model = Evo2Model(cfg, init=False).eval()
    model.load_state_dict(megatron_to_evo2(state_dict, cfg))
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_nemo_logits_equal_evo2(case, tmp_path):
    """Weights initialised in NeMo, converted with megatron_to_evo2: same logits."""
    from conftest import require_nemo, run_worker

    require_nemo()
    cfg = case_config(case)
    run_worker(__file__, "--case", case, "--out", str(tmp_path / "nemo.pt"))
    out = torch.load(tmp_path / "nemo.pt", weights_only=True)
    model = evo2_from_megatron(out["state_dict"], cfg)
    with torch.no_grad():
        ref = model(out["tokens"])
        assert rel_diff(out["logits"], ref) <= REL_TOL

        # The comparison must be able to fail: every filter kind moves the logits far beyond the
        # tolerance (the long and medium filters through taps beyond the short filter's reach).
        for block in model.blocks:
            if block.is_attention:
                continue
            f = block.mixer.filter
            saved = {k: v.clone() for k, v in f.state_dict().items()}
            if f.kind == "H":
                f.residues.zero_()
            elif f.kind == "D":
                f.h[:, 7:] = 0
            else:
                f.weight.zero_()
            assert rel_diff(model(out["tokens"]), ref) > 100 * REL_TOL, f"filter {f.kind} barely matters"
            f.load_state_dict(saved)


def test_nemo_tensor_parallel_2_equals_evo2(tmp_path):
    """Evo2Model weights loaded into NeMo's model at TP=2 (two gloo ranks): same logits."""
    from conftest import require_nemo, run_worker

    require_nemo()
    from conftest import stressed_model

    case = "variant"
    cfg = case_config(case)
    model = stressed_model(**CASES[case], seed=3)
    assert model.config.shape_dict() == cfg.shape_dict()
    torch.save(model.state_dict(), tmp_path / "evo2.pt")
    run_worker(__file__, "--case", case, "--out", str(tmp_path / "nemo.pt"),
               "--evo2-weights", str(tmp_path / "evo2.pt"), nproc=2)
    out = torch.load(tmp_path / "nemo.pt", weights_only=True)
    assert out["tp"] == 2
    with torch.no_grad():
        assert rel_diff(out["logits"], model(out["tokens"])) <= REL_TOL


SHIM_CHECK = """
import torch
from focus_nemo.nemo import cpu_shims
from megatron.core.tensor_parallel import random as mp_random
from nemo.collections.llm.gpt.model.megatron.hyena import hyena_block

original, te_norm = torch.cuda.current_device, hyena_block.TENorm
assert cpu_shims.apply() and cpu_shims.apply() and cpu_shims.is_applied()
assert torch.cuda.current_device() == torch.device("cpu")
assert torch.cuda.Stream() is None and not isinstance(1, torch.cuda.Stream)
draws = []
for _ in range(2):  # named RNG streams are reproducible and leave the default stream alone
    mp_random.model_parallel_cuda_manual_seed(5, tp_rank=0, ep_rank=0, etp_rank=0, force_reset_rng=True)
    outer = torch.get_rng_state()
    with mp_random.get_cuda_rng_tracker().fork():
        draws.append(torch.rand(4))
    assert torch.equal(torch.get_rng_state(), outer)
assert torch.equal(*draws)
cpu_shims.remove()
assert torch.cuda.current_device is original and hyena_block.TENorm is te_norm
assert not cpu_shims.is_applied()
with cpu_shims.cpu_shims():
    assert hyena_block.TENorm is not te_norm
assert not cpu_shims.is_applied()
"""


def test_cpu_shims_idempotent_and_reversible():
    from conftest import require_nemo

    require_nemo()
    proc = subprocess.run([sys.executable, "-c", SHIM_CHECK], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


PORTABLE_CHECK = """
import torch
import torch.nn.functional as F
from megatron.core.transformer.torch_norm import WrappedTorchNorm
from nemo.collections.llm.gpt.model.megatron.hyena import hyena_block, hyena_utils

from focus_nemo.evo2 import Evo2Config
from focus_nemo.nemo import build, cpu_shims

stub, te_norm, current_device = hyena_utils.causal_conv1d_fn, hyena_block.TENorm, torch.cuda.current_device
assert cpu_shims.causal_conv1d_is_stub(hyena_utils)  # the nemo extra does not install causal_conv1d
torch.cuda.is_available = lambda: True  # a GPU host without Transformer Engine or causal_conv1d
assert cpu_shims.apply() is False and not cpu_shims.is_applied() and cpu_shims.portable_applied()
assert torch.cuda.current_device is current_device  # no CPU shim on a GPU host

# The final norm HyenaStack builds (hard-coded TENorm) is Megatron's torch RMSNorm.
hcfg = build.hyena_config_from_evo2(Evo2Config.preset("tiny"))
norm = hyena_block.TENorm(config=hcfg, hidden_size=64, eps=1e-6)
assert isinstance(norm, WrappedTorchNorm) or hyena_block.TENorm is WrappedTorchNorm
x = torch.randn(3, 64)
with torch.no_grad():
    assert torch.allclose(norm(x), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6), atol=1e-6)

# fast_conv_proj's depthwise causal conv: the last tap multiplies the current sample.
conv = hyena_utils.causal_conv1d_fn
assert conv is not stub
x, w = torch.randn(2, 6, 10), torch.randn(6, 3)
want = sum(w[:, j, None] * F.pad(x, (2 - j, 0))[..., :10] for j in range(3))
assert torch.allclose(conv(x, w), want, atol=1e-6)

cpu_shims.remove()
assert hyena_block.TENorm is te_norm and hyena_utils.causal_conv1d_fn is stub and not cpu_shims.portable_applied()
try:
    hyena_block.TENorm(config=hcfg, hidden_size=64, eps=1e-6)
except ImportError as err:  # what a GPU host without Transformer Engine met before
    assert "Transformer Engine" in str(err)
else:
    raise AssertionError("TENorm built without Transformer Engine")
print("portable ok")
"""


def test_shims_free_the_model_of_te_and_causal_conv1d_on_gpu_hosts():
    """With CUDA present (torch.cuda.is_available patched to True) and neither Transformer Engine nor the
    causal_conv1d package installed, `cpu_shims.apply()` installs no CPU shim but still gives HyenaStack's
    hard-coded final norm Megatron's torch RMSNorm and fast_conv_proj an F.conv1d causal convolution."""
    from conftest import require_nemo

    require_nemo()
    proc = subprocess.run([sys.executable, "-c", PORTABLE_CHECK], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "portable ok" in proc.stdout, proc.stderr[-4000:]


if __name__ == "__main__":
    _main()
