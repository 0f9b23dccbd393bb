"""I3: chunked streaming with carried Hyena state equals the full-sequence forward."""

from __future__ import annotations

import pytest
import torch
from conftest import dna_tokens, stressed_model

from focus_nemo.evo2 import Evo2Config, Evo2Model
from focus_nemo.evo2.model import HyenaFilter
from focus_nemo.evo2.ops import causal_fir, modal_iir, modal_powers


def run_chunks(model, tokens, sizes):
    state = model.init_state(tokens.shape[0])
    outs, pos, i = [], 0, 0
    while pos < tokens.shape[1]:
        c = sizes[i % len(sizes)]
        logits, state = model.forward_chunk(tokens[:, pos: pos + c], state)
        outs.append(logits)
        pos += c
        i += 1
    return torch.cat(outs, 1), state


@pytest.mark.parametrize("sizes", [[1], [7], [128], [1000], [5, 200, 3, 300, 131, 1]])
def test_streaming_equals_full_forward(tiny_model, sizes):
    tokens = dna_tokens(2, 1200 if sizes != [1] else 400, seed=1)
    with torch.no_grad():
        full = tiny_model(tokens)
        streamed, state = run_chunks(tiny_model, tokens, sizes)
    scale = full.abs().max()
    assert (streamed - full).abs().max() <= 1e-5 * max(1.0, float(scale))
    assert state.offset == tokens.shape[1]


def test_dropping_state_is_detected(tiny_model):
    """The comparison above can fail: resetting Hyena state between chunks changes the logits."""
    tokens = dna_tokens(1, 600, seed=2)
    with torch.no_grad():
        full = tiny_model(tokens)
        a, _ = tiny_model.forward_chunk(tokens[:, :300], tiny_model.init_state(1))
        fresh = tiny_model.init_state(1)
        b, _ = tiny_model.forward_chunk(tokens[:, 300:], fresh)
    assert (torch.cat([a, b], 1) - full).abs().max() > 1e-2


@pytest.mark.parametrize("K", [3, 7, 128])
def test_fir_kernel_chunking(K):
    g = torch.Generator().manual_seed(K)
    u = torch.randn(2, 6, 500, generator=g)
    taps = torch.randn(6, K, generator=g)
    full, _ = causal_fir(u, taps, None)
    ref = torch.nn.functional.conv1d(torch.nn.functional.pad(u, (K - 1, 0)), taps[:, None], groups=6)
    assert torch.allclose(full, ref, atol=1e-4)
    tail, outs = None, []
    for s, e in [(0, 1), (1, 2), (2, 130), (130, 131), (131, 500)]:
        y, tail = causal_fir(u[..., s:e], taps, tail)
        outs.append(y)
    assert torch.allclose(torch.cat(outs, -1), full, atol=1e-4)


def test_modal_iir_matches_explicit_recurrence():
    g = torch.Generator().manual_seed(0)
    D, N, L = 3, 4, 50
    lp = -torch.rand(D, N, generator=g) * 0.2
    r = torch.randn(D, N, generator=g)
    u = torch.randn(1, D, L, generator=g)
    y, s = modal_iir(u, lp, r, None)
    state = torch.zeros(1, D, N)
    ref = []
    for t in range(L):  # s_t = a * s_{t-1} + u_t ; y_t = sum_n r_n s_t
        state = torch.exp(lp) * state + u[:, :, t, None]
        ref.append((r * state).sum(-1))
    assert torch.allclose(y, torch.stack(ref, -1), atol=1e-4)
    assert torch.allclose(s, state, atol=1e-4)
    y1, s1 = modal_iir(u[..., :17], lp, r, None)
    y2, s2 = modal_iir(u[..., 17:], lp, r, s1)
    assert torch.allclose(torch.cat([y1, y2], -1), y, atol=1e-4)
    assert torch.allclose(s2, s, atol=1e-4)


def test_modal_iir_with_given_powers_is_the_same_filter():
    g = torch.Generator().manual_seed(1)
    D, N, L = 5, 3, 40
    lp, r = -torch.rand(D, N, generator=g) * 0.3, torch.randn(D, N, generator=g)
    u, s0 = torch.randn(2, D, L, generator=g), torch.randn(2, D, N, generator=g)
    y, s = modal_iir(u, lp, r, s0)
    yp, sp = modal_iir(u, lp, r, s0, powers=modal_powers(lp, L))
    assert torch.equal(y, yp) and torch.equal(s, sp)
    with pytest.raises(ValueError, match=r"powers must be \[3, 5, 41\]"):
        modal_iir(u, lp, r, s0, powers=modal_powers(lp, L - 1))


def test_streaming_keeps_pole_powers_only_while_the_poles_are_unchanged(tiny_model):
    """Chunks of a repeated length reuse the filter's pole powers; an in-place change of the poles
    (an optimizer step) is seen by the next chunk, and training poles are never served from the cache."""
    model = stressed_model("SDH*", seed=4)
    tokens = dna_tokens(1, 96, seed=5)
    with torch.no_grad():
        st = model.init_state(1)
        a, st = model.forward_chunk(tokens[:, :48], st)
        b, st = model.forward_chunk(tokens[:, 48:], st)  # same length: cached powers
        assert torch.allclose(torch.cat([a, b], 1), model(tokens), atol=1e-4)
        flt = next(m for m in model.modules() if isinstance(m, HyenaFilter) and m.kind == "H")
        assert any(key[0] == 48 for key in flt._powers_cache)
        flt.log_poles.mul_(2.0)  # in place, as an optimizer updates it
        st = model.init_state(1)
        a, st = model.forward_chunk(tokens[:, :48], st)
        b, st = model.forward_chunk(tokens[:, 48:], st)
        assert torch.allclose(torch.cat([a, b], 1), model(tokens), atol=1e-4)
    flt.log_poles.requires_grad_(True)
    assert flt._powers(flt.log_poles.detach(), 48) is None


def test_hyena_state_size_is_constant_and_kv_grows(tiny_model):
    tokens = dna_tokens(1, 3000, seed=3)
    state = tiny_model.init_state(1)
    sizes = []
    with torch.no_grad():
        for s in range(0, 3000, 1000):
            _, state = tiny_model.forward_chunk(tokens[:, s: s + 1000], state)
            sizes.append((state.hyena_nbytes(), state.kv_nbytes()))
    assert len({h for h, _ in sizes}) == 1
    cfg = tiny_model.config
    per_base = 2 * cfg.hidden_size * 4 * len(cfg.attention_layers)  # K and V, fp32, per attention block
    assert [kv for _, kv in sizes] == [per_base * n for n in (1000, 2000, 3000)]


def test_presets_build_on_meta_device():
    for name, expect in [("1b", (1.0e9, 1.3e9)), ("7b", (6.0e9, 7.0e9)), ("40b", (38e9, 42e9))]:
        with torch.device("meta"):
            m = Evo2Model(Evo2Config.preset(name))
        n = m.num_parameters()
        assert expect[0] < n < expect[1], (name, n)
        assert all(p.is_meta for p in m.parameters())
    cfg = Evo2Config.preset("7b")
    assert cfg.attention_layers == [3, 10, 17, 24, 31]
    assert cfg.rotary_scaling == 128.0 and cfg.ffn_hidden_size == 11264


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="pattern"):
        Evo2Config(pattern="SDX*")
    with pytest.raises(ValueError, match="num_heads"):
        Evo2Config(hidden_size=64, num_heads=5)
    with pytest.raises(ValueError, match="hcm_groups"):
        Evo2Config(hidden_size=64, hcm_groups=7)
    with pytest.raises(ValueError, match="unknown preset"):
        Evo2Config.preset("13b")


def test_stream_generator_matches(tiny_model):
    tokens = dna_tokens(1, 500, seed=4)
    with torch.no_grad():
        full = tiny_model(tokens)
        streamed = torch.cat(list(tiny_model.stream(tokens, 64)), 1)
    assert (streamed - full).abs().max() <= 1e-5 * max(1.0, float(full.abs().max()))


def test_bf16_streaming_runs():
    model = stressed_model().to(torch.bfloat16)
    tokens = dna_tokens(1, 300)
    with torch.no_grad():
        full = model(tokens).float()
        streamed = torch.cat(list(model.stream(tokens, 50)), 1).float()
    assert torch.isfinite(full).all()
    assert (streamed - full).abs().max() < 0.1 * max(1.0, float(full.abs().max()))
