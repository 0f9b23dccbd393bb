"""The exact local band (DESIGN D11, ``FocusConfig.local``): the mask by hand, I2 (one pass == streaming ==
dense) with the band alone and with a horizon, I4 with the band (memory + at most (local + 1) W ordinary
entries), I1 (untrained adapter = base) and that every base sees at least W exact preceding bases."""

from __future__ import annotations

import pytest
import torch
from conftest import dna_tokens, maxdiff, perturbed_focus_model, stressed_model

from focus_nemo.focus import FocusConfig, FocusModel, Layout, visible
from focus_nemo.focus.layout import focus_tokens

TOL = 1e-5


def perturbed(k, window, local, horizon=None, scope="window", seed=0) -> FocusModel:
    cfg = FocusConfig(k=k, window=window, scope=scope, horizon=horizon, local=local)
    return perturbed_focus_model(cfg, seed=seed)


def test_visible_with_local_band_by_hand():
    # W = 4, k = 2: windows 0..3, two Focus tokens per window.
    lay = Layout(16, 2, 4)
    toks, _ = lay.interleaved()
    m = visible(toks, toks, local=1)

    def idx(window, pos=None, focus=False, block=None):
        sel = (toks.window == window) & (toks.is_focus == focus)
        if pos is not None:
            sel &= toks.pos == pos
        if block is not None:
            sel &= toks.block == block
        return torch.nonzero(sel).squeeze(1).tolist()

    q = idx(2, pos=8)[0]  # first base of window 2
    assert all(m[q, i] for i in idx(1))  # every base of window 1, exactly
    assert not any(m[q, i] for i in idx(1, focus=True))  # not window 1's Focus entries (the band covers it)
    assert all(m[q, i] for i in idx(0, focus=True))  # the memory covers window 0
    assert not any(m[q, i] for i in idx(0))  # and no base of window 0
    fq = idx(2, focus=True, block=0)[0]  # a Focus query of window 2 sees the same band and memory
    assert all(m[fq, i] for i in idx(1)) and all(m[fq, i] for i in idx(0, focus=True))
    assert not any(m[fq, i] for i in idx(1, focus=True))
    # every base sees >= W exact preceding bases once W bases exist
    ordq = torch.nonzero(~toks.is_focus).squeeze(1)
    exact = (m[ordq][:, ordq]).sum(1)
    assert all(int(e) >= min(int(toks.pos[q]) + 1, 4 + 1) for q, e in zip(ordq, exact, strict=True))
    # local = 0 is the paper's rule; local = 2 with a horizon of 3 windows leaves one window of memory
    assert torch.equal(visible(toks, toks, local=0), visible(toks, toks))
    m2 = visible(toks, toks, horizon_windows=3, local=2)
    q3 = idx(3, pos=12)[0]
    assert [bool(m2[q3, i]) for i in idx(0, focus=True)] == [True, True]
    assert not any(m2[q3, i] for i in idx(1, focus=True) + idx(2, focus=True) + idx(0))
    assert all(m2[q3, i] for i in idx(1) + idx(2))


CASES = [  # n, k, W, local, horizon
    (200, 7, 32, 1, None),
    (181, 8, 16, 1, 32),
    (230, 3, 10, 2, None),
    (333, 7, 30, 1, 60),
    (100, 20, 20, 1, 20),  # horizon of one window with local = 1: no Focus memory at all
]


@pytest.mark.parametrize("n,k,W,local,H", CASES)
def test_I2_with_local_band_one_pass_equals_streaming_and_dense(n, k, W, local, H):
    fm = perturbed(k, W, local, H)
    tokens = dna_tokens(2, n, seed=n + k)
    with torch.no_grad():
        one = fm(tokens)
        assert maxdiff(one, fm.forward_dense(tokens)) <= TOL
        for chunk in (1, 3, W + 5, 10_000) if (n, k, W) == CASES[0][:3] else (3, W, 10_000):
            assert maxdiff(one, torch.cat(list(fm.stream(tokens, chunk)), 1)) <= TOL, chunk
        fm.config.local = 0
        paper = fm(tokens)
    # Window 0 sees nothing earlier either way; from window 1 on the band changes the logits.
    assert maxdiff(one[:, :W], paper[:, :W]) <= TOL
    assert maxdiff(one[:, W:], paper[:, W:]) > 1e-4


def test_I2_with_local_band_kmer_scope():
    fm = perturbed(5, 20, 1, scope="kmer")
    tokens = dna_tokens(1, 150, seed=4)
    with torch.no_grad():
        one = fm(tokens)
        assert maxdiff(one, fm.forward_dense(tokens)) <= TOL
        assert maxdiff(one, torch.cat(list(fm.stream(tokens, 7)), 1)) <= TOL


@pytest.mark.parametrize("k,W,local,H", [(7, 32, 1, None), (5, 20, 2, 60), (3, 10, 1, 10)])
def test_I4_with_local_band(k, W, local, H):
    fm = perturbed(k, W, local, H)
    m = -(-W // k)
    h = None if H is None else H // W
    n_windows = 7
    tokens = dna_tokens(1, n_windows * W + 5, seed=9)
    state = fm.init_state(1)
    with torch.no_grad():
        for j in range(n_windows):
            _, state = fm.forward_chunk(tokens[:, j * W: (j + 1) * W], state)
            done = j + 1
            held = done if h is None else min(done, h)
            assert set(state.memory_entries().values()) == {held * m}
            assert set(state.band_entries().values()) == {min(done, local) * W}
            assert state.memory_pos.tolist() == focus_tokens(range(done - held, done), k, W).pos.tolist()
        _, state = fm.forward_chunk(tokens[:, n_windows * W:], state)
    assert set(state.band_entries().values()) == {local * W}
    assert set(state.window_entries().values()) == {5}


def test_I1_untrained_adapter_with_local_band_is_the_base_within_a_window_plus_band():
    """Untrained Focus projections copy the base's (D6): with local = 1 the first two windows see exactly
    what the base sees, so the logits there equal the base's full-context logits."""
    base = stressed_model("SDH*S*", seed=3)
    fm = FocusModel(base, FocusConfig(k=4, window=16, local=1)).eval()
    tokens = dna_tokens(1, 64, seed=2)
    with torch.no_grad():
        full = base(tokens)
        one = fm(tokens)
        assert maxdiff(one[:, :32], full[:, :32]) <= TOL
        assert maxdiff(torch.cat(list(fm.stream(tokens, 5)), 1), one) <= TOL


def test_local_config_validation_and_round_trip():
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="FocusConfig.local"):
            FocusConfig(k=8, window=32, local=bad)
    cfg = FocusConfig(k=8, window=32, local=1, horizon=64)
    assert FocusConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["local"]
    assert FocusConfig.from_dict(old).local == 0  # files written before the option read as the paper's scheme



@pytest.mark.parametrize("pool", ["mean", "trained"])
def test_I2_with_local_band_and_second_level(pool):
    """Band, horizon and second level together: one pass == streaming == dense, and the band still changes
    the logits; a horizon that does not reach past the band is refused by name."""
    k, W, H, k2 = 4, 16, 48, 3
    fm = FocusModel(stressed_model("SDH*S*", seed=5),
                    FocusConfig(k=k, window=W, horizon=H, local=1, level2=k2, level2_pool=pool))
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for p in fm.focus_parameters().values():
            p.add_(0.1 * (p.abs().mean() + 0.1) * torch.randn(p.shape, generator=g))
    fm.eval()
    tokens = dna_tokens(2, 200, seed=8)
    with torch.no_grad():
        one = fm(tokens)
        assert maxdiff(one, fm.forward_dense(tokens)) <= TOL
        for chunk in (5, W, 10_000):
            state = fm.init_state(2)
            assert maxdiff(one, torch.cat(list(fm.stream(tokens, chunk, state=state)), 1)) <= TOL, chunk
        assert set(state.band_entries().values()) == {W} and all(v > 0 for v in state.coarse_entries().values())
        fm.config.local = 0
        assert maxdiff(one[:, W:], fm(tokens)[:, W:]) > 1e-4
    with pytest.raises(ValueError, match="FocusConfig.level2: the horizon \\(16 bases\\) must reach past the local"):
        FocusConfig(k=k, window=W, horizon=16, local=1, level2=k2)
