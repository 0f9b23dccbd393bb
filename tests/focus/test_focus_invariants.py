"""FOCUS invariants I1 (no compression = base), I2 (one pass = streaming), I4 (bounded memory),
D3 masks by hand, and the dense reference = the block-sparse one-pass kernel."""

from __future__ import annotations

import pytest
import torch
from conftest import dna_tokens, maxdiff, perturbed_focus_model

from focus_nemo.focus import FocusConfig, FocusModel, Layout, visible
from focus_nemo.focus.layout import focus_tokens, ordinary_tokens

TOL = 1e-5


def perturbed_focus(pattern="SDH*S*", k=7, window=32, scope="window", seed=0) -> FocusModel:
    """FocusModel whose Focus parameters differ from the base copies (as after training)."""
    return perturbed_focus_model(FocusConfig(k=k, window=window, scope=scope), pattern, seed)


@pytest.mark.parametrize("n", [1, 17, 31, 32])
def test_I1_single_window_is_the_base_model(n):
    fm = perturbed_focus(window=32)
    tokens = dna_tokens(2, n, seed=n)
    with torch.no_grad():
        assert maxdiff(fm(tokens), fm.base(tokens)) <= TOL
        assert maxdiff(fm(tokens, window=4096), fm.base(tokens)) <= TOL


def test_I1_large_window_long_sequence():
    fm = perturbed_focus(window=32)
    tokens = dna_tokens(1, 700, seed=5)
    with torch.no_grad():
        assert maxdiff(fm(tokens, k=100, window=1024), fm.base(tokens)) <= TOL
        # ... and compression really changes later windows (the check above can fail).
        assert maxdiff(fm(tokens, k=100, window=128), fm.base(tokens)) > 1e-3


CASES = [  # (length, k, window): multiples and non-multiples of k and W
    (100, 7, 32), (64, 8, 32), (65, 8, 32), (33, 5, 32), (200, 32, 32), (150, 1, 16), (97, 3, 10),
    (130, 10, 30), (61, 20, 20), (90, 30, 31),
]


@pytest.mark.parametrize("n,k,W", CASES)
def test_I2_one_pass_equals_streaming_and_dense(n, k, W):
    fm = perturbed_focus(k=k, window=W)
    tokens = dna_tokens(2, n, seed=n + k)
    with torch.no_grad():
        one = fm(tokens)
        dense = fm.forward_dense(tokens)
        assert maxdiff(one, dense) <= TOL
        # Token-by-token streaming is slow in Python; run it on the first few cases only.
        chunks = (1, 3, W, W + 5, 10_000) if (n, k, W) in CASES[:3] else (3, W, W + 5, 10_000)
        for chunk in chunks:
            streamed = torch.cat(list(fm.stream(tokens, chunk)), 1)
            assert maxdiff(one, streamed) <= TOL, chunk
    if n > W:
        assert maxdiff(one, fm.base(tokens)) > 1e-4


@pytest.mark.parametrize("scope", ["window", "kmer"])
def test_I2_scopes_and_they_differ(scope):
    fm = perturbed_focus(k=5, window=20, scope=scope)
    tokens = dna_tokens(1, 90, seed=3)
    with torch.no_grad():
        one = fm(tokens)
        assert maxdiff(one, fm.forward_dense(tokens)) <= TOL
        assert maxdiff(one, torch.cat(list(fm.stream(tokens, 7)), 1)) <= TOL
        fm.config.scope = "kmer" if scope == "window" else "window"
        assert maxdiff(one, fm(tokens)) > 1e-5


def test_I4_memory_holds_only_focus_entries():
    k, W = 7, 32
    fm = perturbed_focus(k=k, window=W)
    tokens = dna_tokens(1, 10 * W + 5, seed=9)
    state = fm.init_state(1)
    hyena_sizes = []
    with torch.no_grad():
        for j in range(10):
            _, state = fm.forward_chunk(tokens[:, j * W: (j + 1) * W], state)
            n_windows = j + 1
            for layer, entries in state.memory_entries().items():
                assert entries == n_windows * -(-W // k), (layer, entries)
            assert all(v == 0 for v in state.window_entries().values())  # no ordinary entries kept
            # the memory's entries are exactly the Focus tokens of the completed windows
            assert state.memory_pos.tolist() == focus_tokens(range(n_windows), k, W).pos.tolist()
            hyena_sizes.append(state.nbytes()["hyena"])
        _, state = fm.forward_chunk(tokens[:, 10 * W:], state)  # a partial window: its bases only
    assert len(set(hyena_sizes)) == 1
    assert set(state.window_entries().values()) == {5}
    assert set(state.memory_entries().values()) == {10 * -(-W // k)}


def test_masks_by_hand():
    # W = 6, k = 4: window 0 = bases 0..5 with blocks [0..3], [4..5]; Focus F0 after base 3, F1 after 5.
    lay = Layout(8, 4, 6)
    toks, src = lay.interleaved()
    assert src.tolist() == [0, 1, 2, 3, -1, 4, 5, -2, 6, 7]
    assert toks.pos.tolist() == [0, 1, 2, 3, 3, 4, 5, 5, 6, 7]
    m = visible(toks, toks).int()
    expect = torch.tensor([
        # 0  1  2  3 F0  4  5 F1  6  7
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # base 0
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],  # F0: bases 0..3 and itself
        [1, 1, 1, 1, 0, 1, 0, 0, 0, 0],  # base 4 does not see F0 (own window)
        [1, 1, 1, 1, 0, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 1, 0, 0],  # F1: whole window + F0 + itself
        [0, 0, 0, 0, 1, 0, 0, 1, 1, 0],  # base 6 (window 1): memory F0, F1 and itself
        [0, 0, 0, 0, 1, 0, 0, 1, 1, 1],
    ])
    assert torch.equal(m, expect)
    km = visible(toks, toks, "kmer").int()
    assert km[7].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0]  # F1 with kmer scope: block [4, 5] only
    assert lay.num_focus == 2 and Layout(6, 4, 6).num_focus == 0


def test_ordinary_descriptors():
    t = ordinary_tokens(95, 105, 10, 100)
    assert t.window.tolist() == [0] * 5 + [1] * 5
    assert t.block.tolist() == [9] * 5 + [0] * 5


def test_generation_with_compressed_cache():
    fm = perturbed_focus(k=4, window=16)
    prompt = dna_tokens(1, 20, seed=1)
    g = torch.Generator().manual_seed(0)
    out, state = fm.generate(prompt, 30, temperature=0.0, generator=g)
    assert out.shape == (1, 30)
    assert set(out.unique().tolist()) <= {65, 67, 71, 84}
    assert state.offset == 49  # prompt + 29 fed samples
    assert set(state.memory_entries().values()) == {3 * 4}  # 3 completed windows of 16, 4 Focus each
    # Greedy decoding equals argmax of the one-pass forward over the generated sequence.
    full = torch.cat([prompt, out], 1)
    with torch.no_grad():
        logits = fm(full)
    acgt = torch.tensor([65, 67, 71, 84])
    greedy = acgt[logits[0, 19:-1][:, acgt].argmax(-1)]
    assert torch.equal(greedy, out[0])


def test_bad_ratio_errors_name_the_field():
    fm = perturbed_focus()
    tokens = dna_tokens(1, 10)
    with pytest.raises(ValueError, match="FocusConfig.k"):
        fm(tokens, k=0)
    with pytest.raises(ValueError, match="larger than the window"):
        fm(tokens, k=64, window=32)
    with pytest.raises(ValueError, match="vocabulary"):
        fm(torch.full((1, 5), 600))
    with pytest.raises(ValueError, match="scope"):
        FocusConfig(scope="global")
