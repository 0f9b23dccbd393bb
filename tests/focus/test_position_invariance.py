"""DESIGN I7: streaming the same bases from any window-aligned absolute offset P (up to 2^31) gives the
logits of offset 0, for the plain Evo-2 model and for FOCUS (single device, fp32)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import dna_tokens, stressed_model

from focus_nemo.evo2 import embedded_model_dir
from focus_nemo.evo2.ops import rotary_cos_sin
from focus_nemo.focus.layout import check_stream_offset, focus_tokens, ordinary_tokens

TOL = 1e-5
OFFSETS = [1 << 24, (1 << 28) + (1 << 20), 1 << 31]


def test_rotary_angles_are_exact_at_large_positions():
    """cos/sin of (p / scaling) * inv_freq against a float64 evaluation of the same formula."""
    hd, base = 128, 1e4
    inv = (1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))).double()  # the fp32 table
    for scaling in (1.0, 32.0, 128.0):
        pos = torch.tensor([0, 1, (1 << 24) + 1, (1 << 28) + 7, (1 << 31) - 1, 1 << 31, (1 << 31) + 12345])
        cos, sin = rotary_cos_sin(pos, hd, base, scaling)
        assert cos.dtype == sin.dtype == torch.float32 and cos.shape == (len(pos), hd)
        ang = (pos.double() / scaling)[:, None] * inv
        ref_c = torch.cat([ang.cos(), ang.cos()], -1)
        ref_s = torch.cat([ang.sin(), ang.sin()], -1)
        assert (cos.double() - ref_c).abs().max().item() <= 1e-7
        assert (sin.double() - ref_s).abs().max().item() <= 1e-7
    # Relative rotation between positions P+a and P+b equals that between a and b.
    P = 1 << 31
    c0, s0 = rotary_cos_sin(torch.tensor([3, 1000]), hd, base)
    cP, sP = rotary_cos_sin(torch.tensor([P + 3, P + 1000]), hd, base)
    rel0 = c0[0] * c0[1] + s0[0] * s0[1]  # cos(angle difference)
    relP = cP[0] * cP[1] + sP[0] * sP[1]
    assert (rel0 - relP).abs().max().item() <= 1e-6
    with pytest.raises(TypeError, match="integer"):
        rotary_cos_sin(torch.tensor([1.0]), hd, base)


def test_layout_descriptors_exact_at_large_offsets():
    W, k, P = 1024, 100, (1 << 31) + 3 * 1024
    o = ordinary_tokens(P, P + W, k, W)
    assert o.pos.dtype == torch.long and o.pos[0].item() == P and o.pos[-1].item() == P + W - 1
    assert (o.window == P // W).all() and o.block[-1].item() == (W - 1) // k
    f = focus_tokens([P // W], k, W)
    assert f.pos.tolist() == [P + min((b + 1) * k, W) - 1 for b in range(math.ceil(W / k))]
    assert check_stream_offset(P, W) == P
    with pytest.raises(ValueError, match="multiple of the window"):
        check_stream_offset(P + 1, W)
    with pytest.raises(ValueError, match="non-negative"):
        check_stream_offset(-W, W)


def _stream(model, tokens, chunk, **state_kwargs):
    state = model.init_state(tokens.shape[0], **state_kwargs)
    out = []
    for s in range(0, tokens.shape[1], chunk):
        logits, state = model.forward_chunk(tokens[:, s: s + chunk], state)
        out.append(logits)
    return torch.cat(out, 1), state


@pytest.mark.parametrize("offset", OFFSETS)
def test_evo2_streaming_from_offset_equals_offset_zero(offset):
    model = stressed_model("SDH*SDH*")
    x = dna_tokens(2, 96)
    with torch.no_grad():
        ref, _ = _stream(model, x, 32)
        got, state = _stream(model, x, 32, offset=offset)
    assert state.offset == offset + x.shape[1]
    err = (got - ref).abs().max().item()
    assert err <= TOL, err


@pytest.fixture(scope="module")
def embedded_focus():
    if not (embedded_model_dir() / "model.safetensors").is_file():
        pytest.skip(f"embedded model not found in {embedded_model_dir()}")
    from focus_nemo.loading import load_focus_model

    return load_focus_model("embedded", adapter="embedded")


@pytest.mark.parametrize("offset", OFFSETS)
def test_focus_streaming_from_offset_equals_offset_zero(embedded_focus, offset):
    """Two windows and a part of a third of the embedded FOCUS model (so Focus memory is read)."""
    fm = embedded_focus
    W = fm.config.window
    x = dna_tokens(1, 2 * W + 300, seed=1)
    with torch.no_grad():
        ref, st0 = _stream(fm, x, 500)
        got, st = _stream(fm, x, 500, offset=offset)
    assert st.memory_entries() == st0.memory_entries()
    assert st.memory_pos.tolist() == [p + offset for p in st0.memory_pos.tolist()]
    # Relative to the logit's size: the unused byte ids sit near -20, where fp32 summation noise alone (e.g.
    # chunks of 1024 instead of 500 at offset 0) is ~1e-5 absolute. Before exact rotary angles, the offset 2^24
    # moved probabilities by ~7e-3 and 2^28 by ~3e-2.
    err = ((got - ref).abs() / ref.abs().clamp_min(1.0)).max().item()
    dp = (got.softmax(-1) - ref.softmax(-1)).abs().max().item()
    assert err <= TOL and dp <= TOL, (err, dp)
