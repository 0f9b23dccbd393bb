"""NeMo / Megatron on CUDA: NeMo's Hyena model (local and Transformer Engine layer specs) equals
Evo2Model, and NemoFocusModel equals FocusModel (DESIGN I6), in bf16 and fp32.

Megatron keeps global parallel state per process, so the NeMo side runs in fresh processes: this file
is also the worker script (``python tests/gpu/test_nemo_cuda.py ...``, under ``torch.distributed.run``
for TP=2), reading the weights and tokens the test wrote and writing logits back. References are
computed in the pytest process in fp32 on the GPU. Tolerances are relative to the largest reference
logit: NEMO_BF16_TOL for bf16 parameters (bf16 rounding alone gives these models 4e-3 to 9e-3, measured
with the local spec on a CPU), FP32_TOL for fp32 with TF32 off. Transformer Engine runs in bf16 only,
the precision it is deployed in.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.nemo]

REPO = Path(__file__).resolve().parents[2]
PATTERN = "SDH*SD*"  # every Hyena kind, two attention blocks (global indices 3 and 6)
SEQ_LEN = 700  # > 127: NeMo's medium filter is causal from 127 tokens on
NEMO_BF16_TOL = 3e-2
FP32_TOL = 1e-4
CONTROL = 3 * NEMO_BF16_TOL  # a real error must move the logits at least this far
FOCUS_K, FOCUS_W = 16, 128
FOCUS_CASES = [(700, 16, 128), (333, 30, 100)]  # (length, k, W): not multiples of k or W; k not dividing W
STREAM_CASE, STREAM_CHUNKS = (333, 30, 100), (100, 37)
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max() / b.float().cpu().abs().max())


def acgt_tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([65, 67, 71, 84])[torch.randint(0, 4, (batch, length), generator=g)]


def evo2_config():
    from focus_nemo.evo2 import Evo2Config

    return Evo2Config.preset("tiny", pattern=PATTERN)


# --------------------------------------------------------------------------- worker side
def te_state_names(full: dict) -> dict:
    """Local-spec Megatron names -> the Transformer Engine spec's, where TE fuses each norm into the
    linear layer after it."""
    out = {}
    for name, t in full.items():
        leaf = name.rpartition(".layers.")[2].partition(".")[2]  # "norm.weight" of "decoder.layers.0.norm.weight"
        prefix = name[: len(name) - len(leaf)]
        if leaf == "norm.weight":  # Hyena layer: pre-mixer norm
            name = prefix + "mixer.dense_projection.layer_norm_weight"
        elif leaf == "input_layernorm.weight":  # attention layer: pre-attention norm
            name = prefix + "self_attention.linear_qkv.layer_norm_weight"
        elif leaf == "pre_mlp_layernorm.weight":
            name = prefix + "mlp.linear_fc1.layer_norm_weight"
        out[name] = t
    return out


@torch.no_grad()
def load_te_weights(model, evo2_state_dict: dict, cfg) -> None:
    """Copy Evo2Model weights into NeMo's TE-spec HyenaModel (TP=1)."""
    from focus_nemo.evo2.nemo2 import evo2_to_megatron

    full = te_state_names(evo2_to_megatron(evo2_state_dict, cfg))
    target = {k: v for k, v in model.state_dict(keep_vars=True).items()
              if isinstance(v, torch.Tensor) and not k.endswith("_extra_state")}
    missing = [k for k in target if k not in full]
    if missing:
        raise KeyError(f"no Evo-2 weight for TE-spec parameter(s) {missing}")
    for name, dst in target.items():
        src = full[name]
        if name.endswith("embedding.word_embeddings.weight") and src.shape[0] < dst.shape[0]:
            src = torch.cat([src, src.new_zeros(dst.shape[0] - src.shape[0], *src.shape[1:])])
        if src.shape != dst.shape:
            raise ValueError(f"{name}: model {tuple(dst.shape)}, Evo-2 {tuple(src.shape)}")
        dst.copy_(src.to(dst.dtype))


def _build(spec: str, dtype: torch.dtype, cfg):
    """NeMo's Hyena model on this rank's GPU: the local spec of focus_nemo.nemo.spec (as every
    focus_nemo.nemo path builds it) or NeMo's own Transformer Engine spec (HyenaConfig.configure_model)."""
    from focus_nemo.nemo import build

    precision = dict(params_dtype=dtype, bf16=dtype == torch.bfloat16, use_cpu_initialization=False)
    if spec == "local":
        return build.build_hyena_model(cfg, seq_length=1024, **precision).cuda()
    from megatron.core.transformer.enums import AttnBackend

    hcfg = build.hyena_config_from_evo2(cfg, seq_length=1024, use_te=True, attention_backend=AttnBackend.auto,
                                       **precision)
    return hcfg.configure_model(SimpleNamespace(vocab_size=cfg.vocab_size)).cuda().eval()


def _worker_hyena(args) -> None:
    from focus_nemo.evo2.nemo2 import megatron_to_evo2
    from focus_nemo.nemo import build

    cfg = evo2_config()
    build.init_model_parallel(seed=0)
    model = _build(args.spec, DTYPES[args.dtype], cfg)
    weights = torch.load(args.evo2_weights, weights_only=True)
    if args.spec == "local":
        build.load_evo2_weights(model, weights, cfg)
    else:
        load_te_weights(model, weights, cfg)
    tokens = torch.load(args.tokens, weights_only=True)
    logits = build.forward_logits(model, tokens, cfg.vocab_size)
    # The weights read back from the model in Evo2Model's layout (TE names included).
    back = megatron_to_evo2({k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}, cfg)
    torch.save({"logits": logits.cpu(), "weights": {k: v.float().cpu() for k, v in back.items()}}, args.out)
    build.teardown()


def _worker_focus(args) -> None:
    from focus_nemo.focus import FocusConfig
    from focus_nemo.nemo import build
    from focus_nemo.nemo.focus_model import NemoFocusModel

    cfg = evo2_config()
    build.init_model_parallel(seed=0)
    model = _build("local", DTYPES[args.dtype], cfg)
    build.load_evo2_weights(model, torch.load(args.evo2_weights, weights_only=True), cfg)
    fm = NemoFocusModel(model, FocusConfig(k=FOCUS_K, window=FOCUS_W), vocab_size=cfg.vocab_size).eval()
    fm.load_focus_state_dict(torch.load(args.focus, weights_only=True))
    out = {"tp": torch.distributed.get_world_size(), "onepass": {}, "stream": {},
           "dtype": str(fm.focus_embedding.dtype)}
    with torch.no_grad():
        for length, k, w in FOCUS_CASES:
            out["onepass"][f"{length},{k},{w}"] = fm(acgt_tokens(2, length, seed=length), k=k, window=w).cpu()
        length, k, w = STREAM_CASE
        tokens = acgt_tokens(2, length, seed=11)
        for chunk in STREAM_CHUNKS:
            state = fm.init_state(2, k=k, window=w)
            out["stream"][chunk] = torch.cat(list(fm.stream(tokens, chunk, state=state)), 1).cpu()
    if torch.distributed.get_rank() == 0:
        torch.save(out, args.out)
    build.teardown()


def _main() -> None:
    parser = argparse.ArgumentParser(description="Run NeMo's Hyena / NemoFocusModel on CUDA and save logits.")
    parser.add_argument("mode", choices=["hyena", "focus"])
    parser.add_argument("--spec", choices=["local", "te"], default="local")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--evo2-weights", required=True)
    parser.add_argument("--tokens", help="token ids [B, L] (hyena mode)")
    parser.add_argument("--focus", help="full Focus tensors (focus mode)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    # fp32 means fp32: no TF32 in matmuls or convolutions.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    {"hyena": _worker_hyena, "focus": _worker_focus}[args.mode](args)


# --------------------------------------------------------------------------- pytest side
def parity_model(seed: int = 3):
    """Stressed tiny Evo2Model whose norms and biases are far from their initial values too, so that
    a norm or bias that does not reach its Megatron / TE parameter shows up."""
    from conftest import stressed_model

    model = stressed_model(pattern=PATTERN, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("spec,dtype", [("local", "float32"), ("local", "bfloat16"), ("te", "bfloat16")])
def test_nemo_hyena_equals_evo2(spec, dtype, tmp_path):
    """Evo2Model weights loaded into NeMo's HyenaModel on one GPU: same logits. The TE spec is NeMo's
    own (fused norm + linear, TE attention), the layout of NVIDIA's Evo-2 checkpoints."""
    from conftest import require_nemo, run_worker

    require_nemo()
    if spec == "te":
        pytest.importorskip("transformer_engine", reason="NeMo's TE layer spec needs Transformer Engine")
    model = parity_model()
    tokens = acgt_tokens(2, SEQ_LEN, seed=5)
    torch.save(model.state_dict(), tmp_path / "evo2.pt")
    torch.save(tokens, tmp_path / "tokens.pt")
    run_worker(__file__, "hyena", "--spec", spec, "--dtype", dtype, "--evo2-weights", str(tmp_path / "evo2.pt"),
               "--tokens", str(tmp_path / "tokens.pt"), "--out", str(tmp_path / "nemo.pt"), timeout=600)
    out = torch.load(tmp_path / "nemo.pt", weights_only=True)

    # Every weight landed where megatron_to_evo2 reads it back (TE names included), up to the rounding
    # of the parameter dtype (filters are reparametrised on the way: h * decay, -exp(p) exp(gamma)).
    want = model.state_dict()
    assert sorted(out["weights"]) == sorted(want)
    wtol = 1e-5 if dtype == "float32" else 2e-2
    for name, w in want.items():
        err = (out["weights"][name] - w).abs().max() / w.abs().max().clamp(min=1e-12)
        assert err <= wtol, (name, float(err))

    model = model.cuda()
    with torch.no_grad():
        ref = model(tokens.cuda())
        tol = FP32_TOL if dtype == "float32" else NEMO_BF16_TOL
        assert out["logits"].shape == ref.shape
        assert rel_diff(out["logits"], ref) <= tol, rel_diff(out["logits"], ref)
        # Control: the same model with its norms left at 1 (a norm that never reached the TE layer).
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
        assert rel_diff(model(tokens.cuda()), ref) > CONTROL


def focus_reference(seed: int = 3):
    """FocusModel on a stressed tiny base with perturbed Focus parameters; also the initial Focus copies.
    (Untrained Focus parameters move these logits by 0.16 or more, measured in fp32.)"""
    from conftest import perturb_focus_, stressed_model

    from focus_nemo.focus import FocusConfig, FocusModel

    fm = FocusModel(stressed_model(pattern=PATTERN, seed=seed), FocusConfig(k=FOCUS_K, window=FOCUS_W)).eval()
    return fm, perturb_focus_(fm, seed)


@pytest.mark.parametrize("tp,dtype", [(1, "float32"), (1, "bfloat16"), (2, "bfloat16")])
def test_nemo_focus_equals_focus_model(tp, dtype, tmp_path):
    """I6 on GPUs: NemoFocusModel (local spec, TP=1 and TP=2 over NCCL) and FocusModel from the same
    base and Focus weights give the same one-pass and window-by-window streaming logits."""
    from conftest import require_nemo, run_worker

    require_nemo()
    if torch.cuda.device_count() < tp:
        pytest.skip(f"TP={tp} needs {tp} GPUs, {torch.cuda.device_count()} visible")
    fm, fresh = focus_reference()
    torch.save(fm.base.state_dict(), tmp_path / "evo2.pt")
    torch.save({n: p.detach().clone() for n, p in fm.focus_parameters().items()}, tmp_path / "focus.pt")
    run_worker(__file__, "focus", "--dtype", dtype, "--evo2-weights", str(tmp_path / "evo2.pt"),
               "--focus", str(tmp_path / "focus.pt"), "--out", str(tmp_path / "nemo.pt"), nproc=tp, timeout=600)
    out = torch.load(tmp_path / "nemo.pt", weights_only=True)
    assert out["tp"] == tp and out["dtype"] == str(DTYPES[dtype])
    tol = FP32_TOL if dtype == "float32" else NEMO_BF16_TOL

    fm = fm.cuda()
    with torch.no_grad():
        for length, k, w in FOCUS_CASES:
            tokens = acgt_tokens(2, length, seed=length).cuda()
            ref = fm(tokens, k=k, window=w)
            got = out["onepass"][f"{length},{k},{w}"]
            assert got.shape == ref.shape
            assert rel_diff(got, ref) <= tol, (length, k, w, rel_diff(got, ref))
            # Control: untrained Focus parameters move FocusModel's logits far beyond the tolerance.
            trained = {n: p.detach().clone() for n, p in fm.focus_parameters().items()}
            for n, p in fm.focus_parameters().items():
                p.copy_(fresh[n])
            assert rel_diff(fm(tokens, k=k, window=w), ref) > CONTROL
            for n, p in fm.focus_parameters().items():
                p.copy_(trained[n])
        length, k, w = STREAM_CASE
        ref = fm(acgt_tokens(2, length, seed=11).cuda(), k=k, window=w)
        for chunk in STREAM_CHUNKS:
            assert rel_diff(out["stream"][chunk], ref) <= tol, (chunk, rel_diff(out["stream"][chunk], ref))


if __name__ == "__main__":
    _main()
