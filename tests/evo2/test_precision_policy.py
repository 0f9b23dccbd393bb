"""DESIGN D10 precision policy: under a 16-bit dtype the Hyena poles, residues and medium filter taps stay fp32,
whichever way the model gets there (a loader or Module.to); streaming states and logits are fp32; bf16
streaming follows fp32 within a stated tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from focus_nemo.evo2 import Evo2Config, Evo2Model, embedded_model_dir, load_evo2
from focus_nemo.evo2.model import FP32_PARAMETER_SUFFIXES
from focus_nemo.loading import load_base_model, load_focus_model

# bf16 against fp32 streaming of 64 kb of held-out human DNA with the embedded FOCUS model (ACGT probabilities):
# measured max |dp| 0.020, mean 0.0015 (2-core AMD EPYC CPU).
BF16_MAX_DP = 0.05
BF16_MEAN_DP = 0.005


def check_policy(model: Evo2Model, dtype: torch.dtype) -> None:
    kept = {n: p.dtype for n, p in model.named_parameters() if n.endswith(FP32_PARAMETER_SUFFIXES)}
    others = {n: p.dtype for n, p in model.named_parameters() if not n.endswith(FP32_PARAMETER_SUFFIXES)}
    assert kept and set(kept.values()) == {torch.float32}, kept
    assert set(others.values()) == {dtype}, others


def need_embedded():
    if not (embedded_model_dir() / "model.safetensors").is_file():
        pytest.skip(f"embedded model not found in {embedded_model_dir()}")


def test_load_base_model_in_bf16_keeps_filters_fp32():
    need_embedded()
    check_policy(load_base_model("embedded", dtype="bfloat16"), torch.bfloat16)
    check_policy(load_evo2(embedded_model_dir(), dtype=torch.bfloat16), torch.bfloat16)
    check_policy(load_base_model("random:tiny", dtype="float16"), torch.float16)


@pytest.mark.parametrize("cast", ["to", "bfloat16", "half"])
def test_module_casts_go_through_the_policy(cast):
    model = Evo2Model(Evo2Config.preset("tiny"))
    reference = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith(FP32_PARAMETER_SUFFIXES)}
    dtype = torch.float16 if cast == "half" else torch.bfloat16
    model = model.to(dtype=dtype) if cast == "to" else getattr(model, cast)()
    check_policy(model, dtype)
    for n, p in model.named_parameters():
        if n in reference:
            assert torch.equal(p, reference[n]), n  # not rounded through 16 bits on the way
    model.float()
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_bf16_state_and_logits_are_fp32():
    model = Evo2Model(Evo2Config.preset("tiny")).bfloat16()
    state = model.init_state(1)
    x = torch.tensor([[65, 67, 71, 84] * 8])
    logits, state = model.forward_chunk(x, state)
    assert logits.dtype == torch.float32 and model(x).dtype == torch.float32
    hyena = [t for s in state.blocks if isinstance(s, dict) for d in s.values()
             for t in (d.values() if isinstance(d, dict) else [d])]
    assert hyena and {t.dtype for t in hyena} == {torch.float32}


@pytest.mark.slow
def test_bf16_streaming_of_64kb_matches_fp32():
    need_embedded()
    from focus_nemo.data import bundled_dna, open_genome

    genome = open_genome(str(bundled_dna("chr20_heldout")))
    raw = genome.fetch(genome.names[0], 0, 1 << 16)
    x = torch.from_numpy(np.frombuffer(bytes(raw).upper(), np.uint8).astype(np.int64))[None]
    probs = {}
    for dtype in ("float32", "bfloat16"):
        fm = load_focus_model("embedded", "embedded", dtype=dtype)
        with torch.no_grad():
            probs[dtype] = torch.cat([lo[..., [65, 67, 71, 84]].softmax(-1) for lo in fm.stream(x, 4096)], 1)
        assert probs[dtype].dtype == torch.float32
    dp = (probs["float32"] - probs["bfloat16"]).abs()
    assert dp.shape[1] == x.shape[1]
    assert dp.max().item() <= BF16_MAX_DP and dp.mean().item() <= BF16_MEAN_DP, (dp.max().item(), dp.mean().item())
