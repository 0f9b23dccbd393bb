"""A bounded Focus horizon (DESIGN D12): D3 with a horizon by hand, I2 (one pass == streaming == dense)
and I4 (min(n, H/W) x ceil(W/k) entries) with a horizon, the sliding KVCache, and the config field."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import dna_tokens, maxdiff, perturbed_focus_model, stressed_model

import focus_nemo.focus.model as focus_model_module
from focus_nemo.evo2 import Evo2Config, KVCache
from focus_nemo.focus import FocusConfig, FocusModel, Layout, visible
from focus_nemo.focus.adapter import CONFIG
from focus_nemo.focus.config import default_horizon
from focus_nemo.focus.layout import focus_tokens

TOL = 1e-5


def perturbed(k, window, horizon, scope="window", pattern="SDH*S*", seed=0) -> FocusModel:
    return perturbed_focus_model(FocusConfig(k=k, window=window, scope=scope, horizon=horizon), pattern, seed)


def test_visible_with_horizon_by_hand():
    # W = 4, k = 2: two Focus tokens per window; horizon 1 window.
    lay = Layout(14, 2, 4)
    toks, _ = lay.interleaved()
    m = visible(toks, toks, horizon_windows=1)
    unbounded = visible(toks, toks)
    for qi in range(len(toks)):
        for ki in range(len(toks)):
            qw, kw = int(toks.window[qi]), int(toks.window[ki])
            if kw < qw and toks.is_focus[ki]:
                # memory keys: only the previous window's Focus tokens (for bases and Focus queries alike)
                assert bool(m[qi, ki]) == (kw == qw - 1), (qi, ki)
            else:  # within a window nothing changes
                assert bool(m[qi, ki]) == bool(unbounded[qi, ki]), (qi, ki)
    # a base of window 3 sees F(2, 0..1) and not F(0, .), F(1, .)
    q = int(torch.nonzero((toks.window == 3) & ~toks.is_focus)[0])
    seen = toks.pos[m[q] & toks.is_focus].tolist()
    assert seen == focus_tokens([2], 2, 4).pos.tolist()
    # a horizon at least as long as the sequence is the unbounded rule
    assert torch.equal(visible(toks, toks, horizon_windows=4), unbounded)
    assert torch.equal(lay.dense_mask(horizon_windows=2), visible(toks, toks, horizon_windows=2))


CASES = [  # (length, k, W, H): H/W = 1, 2, 3; k dividing W or not; lengths not multiples of W
    (200, 7, 32, 32),
    (181, 8, 16, 32),
    (230, 3, 10, 30),
    (333, 7, 30, 60),
    (100, 20, 20, 40),
]


@pytest.mark.parametrize("n,k,W,H", CASES)
def test_I2_with_horizon_one_pass_equals_streaming_and_dense(n, k, W, H):
    fm = perturbed(k, W, H)
    tokens = dna_tokens(2, n, seed=n + k)
    with torch.no_grad():
        one = fm(tokens)
        assert maxdiff(one, fm.forward_dense(tokens)) <= TOL
        chunks = (1, 3, W, W + 5, 10_000) if (n, k, W, H) == CASES[0] else (3, W, W + 5, 10_000)
        for chunk in chunks:
            assert maxdiff(one, torch.cat(list(fm.stream(tokens, chunk)), 1)) <= TOL, chunk
        # The horizon matters only past H + W bases: the first H/W + 1 windows are the unbounded model's.
        fm.config.horizon = None
        unbounded = fm(tokens)
    edge = H + W
    assert maxdiff(one[:, :edge], unbounded[:, :edge]) <= TOL
    assert maxdiff(one[:, edge:], unbounded[:, edge:]) > 1e-4


def test_I2_with_horizon_kmer_scope():
    fm = perturbed(5, 20, 40, scope="kmer")
    tokens = dna_tokens(1, 150, seed=4)
    with torch.no_grad():
        one = fm(tokens)
        assert maxdiff(one, fm.forward_dense(tokens)) <= TOL
        assert maxdiff(one, torch.cat(list(fm.stream(tokens, 7)), 1)) <= TOL


@pytest.mark.parametrize("k,W,H", [(7, 32, 64), (5, 20, 20), (3, 10, 50)])
def test_I4_with_horizon_memory_is_bounded(k, W, H):
    fm = perturbed(k, W, H)
    m, h = -(-W // k), H // W
    n_windows = 3 * h + 4
    tokens = dna_tokens(1, n_windows * W + 5, seed=9)
    state = fm.init_state(1)
    buffers, capacities = set(), set()
    with torch.no_grad():
        for j in range(n_windows):
            _, state = fm.forward_chunk(tokens[:, j * W: (j + 1) * W], state)
            done = j + 1
            assert set(state.memory_entries().values()) == {min(done, h) * m}
            assert state.memory_pos.tolist() == focus_tokens(range(max(0, done - h), done), k, W).pos.tolist()
            assert all(v == 0 for v in state.window_entries().values())
            for c in state.memory.values():
                buffers.add(c.k.untyped_storage().data_ptr())
                capacities.add(c.capacity)
        _, state = fm.forward_chunk(tokens[:, n_windows * W:], state)
    assert set(state.memory_entries().values()) == {h * m}
    # The buffers are not reallocated per window: one per attention block (capacity >= 256 entries here).
    assert len(buffers) == len(state.memory) and capacities == {256}


def test_onepass_memory_per_window_is_the_horizon(monkeypatch):
    """The one-pass forward hands each window only the Focus keys of its horizon (work linear in windows)."""
    k, W, H = 4, 16, 32
    fm = perturbed(k, W, H)
    sizes = []
    real = focus_model_module.attention_parts

    def spy(q, parts):
        sizes.append(sum(p.k.shape[2] for p in parts if p.mask is None))  # the fully visible memory part
        return real(q, parts)

    monkeypatch.setattr(focus_model_module, "attention_parts", spy)
    with torch.no_grad():
        fm(dna_tokens(1, 20 * W, seed=1))
    assert max(sizes) == (H // W) * -(-W // k)


def test_kvcache_drop_oldest_matches_a_list():
    g = torch.Generator().manual_seed(0)
    cache, ref = KVCache(), []
    reallocations, ptr, peak = 0, None, 0
    for _ in range(400):
        n = int(torch.randint(1, 40, (1,), generator=g))
        k = torch.randn(2, 3, n, 4, generator=g)
        kv = cache.append(k, -k)
        ref += list(k.unbind(2))
        peak = max(peak, len(ref))
        assert torch.equal(kv[0], torch.stack(ref, 2)) and torch.equal(kv[1], -kv[0])
        drop = min(len(ref), int(torch.randint(0, 45, (1,), generator=g)))
        cache.drop_oldest(drop)
        ref = ref[drop:]
        assert cache.length == len(ref)
        if ref:
            assert torch.equal(cache.view()[0], torch.stack(ref, 2))
        reallocations += cache.k.untyped_storage().data_ptr() != ptr
        ptr = cache.k.untyped_storage().data_ptr()
        assert cache.capacity <= max(256, 4 * peak)  # bounded by the most entries ever live
    # a new buffer only when the live entries outgrow half of the old one (doubling): O(log peak) of them
    assert reallocations <= 1 + math.log2(max(peak, 64) / 64), (reallocations, peak)
    with pytest.raises(ValueError, match="drop_oldest"):
        cache.drop_oldest(cache.length + 1)


def test_kvcache_sliding_keeps_one_buffer():
    cache = KVCache()
    for j in range(1000):
        cache.append(torch.full((1, 1, 10, 2), float(j)), torch.zeros(1, 1, 10, 2))
        if cache.length > 100:
            cache.drop_oldest(cache.length - 100)
    assert cache.capacity == 256
    assert cache.view()[0][0, 0, :, 0].tolist() == [float(j) for j in range(990, 1000) for _ in range(10)]


def test_kvcache_drop_under_autograd():
    cache = KVCache()
    a = torch.randn(1, 1, 5, 2, requires_grad=True)
    with torch.enable_grad():
        cache.append(a, a)
        cache.drop_oldest(2)
        k, _ = cache.append(2 * a, a)
        k.sum().backward()
    assert cache.length == 8 and torch.equal(a.grad, torch.tensor([2.0, 2, 3, 3, 3])[None, None, :, None].expand(
        1, 1, 5, 2))


def test_horizon_validation_names_the_field():
    for bad in (0, -64, 48, 1.5, True, "64", "unbounded"):
        with pytest.raises(ValueError, match="FocusConfig.horizon"):
            FocusConfig(k=8, window=32, horizon=bad)
    assert FocusConfig(k=8, window=32, horizon=96).horizon_windows() == 3
    assert FocusConfig(k=8, window=32).horizon_windows() is None
    fm = perturbed(4, 16, 32)
    tokens = dna_tokens(1, 50)
    with pytest.raises(ValueError, match="FocusConfig.horizon: 32 is not a multiple of the window 24"):
        fm(tokens, k=4, window=24)
    with pytest.raises(ValueError, match="FocusConfig.horizon"):
        fm.init_state(1, window=24)
    fm.config.horizon = "auto"  # never silently unbounded: an unresolved "auto" is refused
    with pytest.raises(ValueError, match="FocusConfig.horizon: 'auto' is not resolved"):
        fm(tokens)


def test_default_horizon_is_the_trained_context():
    assert default_horizon(Evo2Config.preset("7b"), 1024) == (1 << 20) - 1024
    assert default_horizon(Evo2Config(max_seqlen=8192), 1000) == 7000  # horizon + W <= max_seqlen
    assert default_horizon(Evo2Config(max_seqlen=500), 1024) == 1024  # at least one window
    base = stressed_model("SDH*S*", max_seqlen=640)
    fm = FocusModel(base, FocusConfig(k=4, window=32, horizon="auto"))
    assert fm.config.horizon == 608
    cfg = FocusConfig(k=4, window=32, horizon="auto")
    assert cfg.resolve_horizon(base.config).horizon == 608 and cfg.horizon == "auto"
    assert FocusConfig(k=4, window=32, horizon=64).resolve_horizon(base.config).horizon == 64


def test_horizon_round_trips_through_the_adapter_and_old_files_load(tmp_path):
    fm = perturbed(4, 16, 48)
    fm.save_adapter(tmp_path / "a")
    meta = json.loads((tmp_path / "a" / CONFIG).read_text())
    assert meta["focus"]["horizon"] == 48
    other = FocusModel(stressed_model("SDH*S*", seed=0), FocusConfig(k=4, window=16))
    other.load_adapter(tmp_path / "a")
    assert other.config.horizon == 48
    tokens = dna_tokens(1, 120, seed=3)
    with torch.no_grad():
        assert maxdiff(other(tokens), fm(tokens)) == 0.0
    # An adapter written before the field existed: unbounded memory.
    del meta["focus"]["horizon"]
    (tmp_path / "a" / CONFIG).write_text(json.dumps(meta))
    other.load_adapter(tmp_path / "a")
    assert other.config.horizon is None
    assert FocusConfig.from_dict(FocusConfig(horizon=2048).to_dict()) == FocusConfig(horizon=2048)
