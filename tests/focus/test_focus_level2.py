"""The second level of Focus memory (DESIGN D12): grouping by hand, I2 (one pass == streaming == dense)
with coarse entries, I4 with a second level, mean == untrained trained pooling, gradients to the level-2
queries, config validation and the adapter round trip."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import dna_tokens, maxdiff, perturbed_focus_model, stressed_model

from focus_nemo.focus import FocusConfig, FocusModel, Layout
from focus_nemo.focus.adapter import CONFIG, TENSORS
from focus_nemo.focus.layout import focus_tokens
from focus_nemo.focus.level2 import coarse_count, dense_masks, fine_start, pool_groups

TOL = 1e-5


def perturbed(k, window, horizon, k2, pool="trained", scope="window", seed=0, q2_scale=1.0) -> FocusModel:
    cfg = FocusConfig(k=k, window=window, scope=scope, horizon=horizon, level2=k2, level2_pool=pool)
    return perturbed_focus_model(cfg, seed=seed, q2_scale=q2_scale)


def test_grouping_by_hand():
    # m = 3 entries per window, h = 1 window, k2 = 2: entries e = 3j + t, groups {0,1}, {2,3}, {4,5}, ...
    m, h, k2 = 3, 1, 2
    # window j: plain horizon start (j-1)*3 rounded down to a multiple of 2; coarse = groups wholly before it
    want = {0: (0, 0), 1: (0, 0), 2: (2, 1), 3: (6, 3), 4: (8, 4), 5: (12, 6), 6: (14, 7)}
    for j, (lo, c) in want.items():
        assert fine_start(j, m, h, k2) == lo and coarse_count(j, m, h, k2) == c, j
        assert j * m - lo <= h * m + k2 - 1  # I4: fine entries
        assert lo == c * k2  # no gap, no overlap: fine entries start where the coarse groups end
    js = torch.arange(7)
    assert fine_start(js, m, h, k2).tolist() == [want[j][0] for j in range(7)]
    # without a second level: the plain horizon; without a horizon: everything
    assert [fine_start(j, m, h, None) for j in range(4)] == [0, 0, 3, 6]
    assert [coarse_count(j, m, h, None) for j in range(4)] == [0, 0, 0, 0]
    assert fine_start(5, m, None, None) == 0

    # The dense mask on a tiny layout: W = 6, k = 2 (m = 3), horizon 1 window, k2 = 2.
    lay = Layout(40, 2, 6)
    toks, _ = lay.interleaved()
    mask = dense_masks(toks, "window", m, h, k2)
    n_focus = lay.num_focus
    assert mask.shape == (len(toks), len(toks) + n_focus // k2)
    plain = lay.dense_mask(horizon_windows=None)
    focus_index = (toks.window * m + toks.block)
    for qi in range(len(toks)):
        qw = int(toks.window[qi])
        lo, c = want[qw]
        for ki in range(len(toks)):
            if toks.is_focus[ki] and int(toks.window[ki]) < qw:
                assert bool(mask[qi, ki]) == (int(focus_index[ki]) >= lo), (qi, ki)
            else:
                assert bool(mask[qi, ki]) == bool(plain[qi, ki]), (qi, ki)
        assert mask[qi, len(toks):].tolist() == [g < c for g in range(n_focus // k2)], qi


def test_pool_groups_by_hand():
    g = torch.Generator().manual_seed(0)
    k = torch.randn(2, 3, 7, 4, generator=g)
    v = torch.randn(2, 3, 7, 4, generator=g)
    q2 = torch.randn(3, 4, generator=g)
    ck, cv = pool_groups(k, v, 3, None)
    assert ck.shape == (2, 3, 2, 4)  # the incomplete group {6} has no coarse entry
    assert torch.allclose(ck[:, :, 1], k[:, :, 3:6].mean(2)) and torch.allclose(cv[:, :, 0], v[:, :, 0:3].mean(2))
    ck, cv = pool_groups(k, v, 3, q2[None, :, None, :].expand(1, 3, 2, 4))  # per group: the same query here
    w = torch.softmax((k[:, :, 3:6] @ q2[None, :, :, None]).squeeze(-1) / 2.0, -1)  # sqrt(hd) = 2
    assert torch.allclose(ck[:, :, 1], (w[..., None] * k[:, :, 3:6]).sum(2), atol=1e-6)
    assert torch.allclose(cv[:, :, 1], (w[..., None] * v[:, :, 3:6]).sum(2), atol=1e-6)
    zero = pool_groups(k, v, 3, torch.zeros(1, 3, 2, 4))
    assert torch.allclose(zero[0], pool_groups(k, v, 3, None)[0], atol=1e-7)


CASES = [  # (length, k, W, H, k2): m = ceil(W/k); k2 below, equal to, above and not a multiple of m
    (200, 7, 32, 32, 3),  # m = 5
    (181, 8, 16, 32, 2),  # m = 2, k2 = m
    (230, 3, 10, 30, 5),  # m = 4
    (333, 7, 30, 60, 9),  # m = 5, k2 > m
    (300, 20, 20, 20, 1),  # m = 1, one coarse entry per Focus entry
]


@pytest.mark.parametrize("pool", ["mean", "trained"])
@pytest.mark.parametrize("n,k,W,H,k2", CASES)
def test_I2_level2_one_pass_equals_streaming_and_dense(n, k, W, H, k2, pool):
    fm = perturbed(k, W, H, k2, pool)
    tokens = dna_tokens(2, n, seed=n + k)
    with torch.no_grad():
        one = fm(tokens)
        assert maxdiff(one, fm.forward_dense(tokens)) <= TOL
        for chunk in (3, W + 5, 10_000):
            assert maxdiff(one, torch.cat(list(fm.stream(tokens, chunk)), 1)) <= TOL, chunk
        fm.config.level2 = None
        horizon_only = fm(tokens)
        fm.config.level2 = k2
    # The second level changes nothing while nothing has left the horizon (the first H + W bases), then it matters.
    assert maxdiff(one[:, : H + W], horizon_only[:, : H + W]) <= TOL
    assert maxdiff(one[:, H + W:], horizon_only[:, H + W:]) > 1e-4


def test_I2_level2_kmer_scope_and_stream_offset():
    fm = perturbed(5, 20, 40, 3, scope="kmer")
    tokens = dna_tokens(1, 190, seed=4)
    with torch.no_grad():
        one = fm(tokens)
        assert maxdiff(one, fm.forward_dense(tokens)) <= TOL
        assert maxdiff(one, torch.cat(list(fm.stream(tokens, 7)), 1)) <= TOL
        # a stream starting at a window-aligned offset counts its windows (and groups) from there
        state = fm.init_state(1, offset=20 * 1000)
        assert maxdiff(one, torch.cat(list(fm.stream(tokens, 7, state=state)), 1)) <= TOL


def test_trained_with_zero_query_equals_mean():
    fm = perturbed(7, 32, 32, 3, "trained", q2_scale=0.0)
    tokens = dna_tokens(2, 260, seed=1)
    with torch.no_grad():
        trained = fm(tokens)
        fm.config.level2_pool = "mean"
        mean = fm(tokens)
        with torch.no_grad():
            for p in fm.level2_query.values():
                p.normal_()
        mean_ignores_q2 = fm(tokens)
        fm.config.level2_pool = "trained"
        moved = fm(tokens)
    assert maxdiff(trained, mean) <= 1e-6 and maxdiff(mean, mean_ignores_q2) == 0
    assert maxdiff(moved, mean) > 1e-4


@pytest.mark.parametrize("k,W,H,k2", [(7, 32, 64, 3), (5, 20, 20, 4), (3, 10, 50, 7)])
def test_I4_level2_memory_bounds(k, W, H, k2):
    fm = perturbed(k, W, H, k2)
    m, h = -(-W // k), H // W
    n_windows = 3 * h + 6
    tokens = dna_tokens(1, n_windows * W + 5, seed=9)
    state = fm.init_state(1)
    assert state.level2 == k2 and set(state.coarse) == set(state.memory)
    with torch.no_grad():
        for j in range(n_windows):
            _, state = fm.forward_chunk(tokens[:, j * W: (j + 1) * W], state)
            done = j + 1  # the next window is `done`: it sees fine [lo, done m) and `coarse` groups
            lo = (max(0, (done - h) * m) // k2) * k2
            fine, coarse = done * m - lo, lo // k2
            assert fine <= h * m + k2 - 1
            assert set(state.memory_entries().values()) == {fine}, j
            assert set(state.coarse_entries().values()) == {coarse}, j
            assert coarse * k2 + fine == done * m  # every entry, fine or in a coarse entry, exactly once
            assert state.memory_pos.tolist() == focus_tokens(range(done), k, W).pos.tolist()[lo:]
        assert state.nbytes()["coarse_memory"] > 0


def test_onepass_parts_per_window_are_fine_and_coarse(monkeypatch):
    """The one-pass forward hands window j its coarse entries and its fine entries as two parts (views of
    tensors pooled once per forward), of the sizes of the grouping rule."""
    import focus_nemo.focus.model as focus_model_module

    k, W, H, k2 = 4, 16, 32, 3
    m, h = 4, 2
    fm = perturbed(k, W, H, k2)
    sizes = []
    real = focus_model_module.attention_parts

    def spy(q, parts):
        if q.shape[2] == W:  # a window's bases (a Focus query block has m rows)
            sizes.append([p.k.shape[2] for p in parts if p.mask is None])
        return real(q, parts)

    monkeypatch.setattr(focus_model_module, "attention_parts", spy)
    n_windows = 12
    with torch.no_grad():
        fm(dna_tokens(1, n_windows * W, seed=1))
    attention_blocks = len(fm.focus_proj)
    want = [[] if j == 0 else ([coarse_count(j, m, h, k2)] if coarse_count(j, m, h, k2) else [])
            + [j * m - fine_start(j, m, h, k2)] for j in range(n_windows)]
    assert sizes == want * attention_blocks
    assert max(s[-1] for s in sizes if s) <= h * m + k2 - 1


def test_gradients_reach_the_level2_queries():
    # the pooling itself: exact gradients to the query, keys and values (fp64 gradcheck)
    g = torch.Generator().manual_seed(0)
    k, v = (torch.randn(1, 2, 6, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2))
    q = torch.randn(1, 2, 2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, k, v: pool_groups(k, v, 3, q), (q, k, v))
    # through the model: every block's query gets the gradient of the loss (finite difference along it)
    fm = perturbed(7, 32, 32, 3, q2_scale=3.0)
    fm.train()
    raw = dna_tokens(2, 230, seed=3)

    proj = torch.randn(2, 166, 512, generator=g, dtype=torch.float64)

    def loss():  # past the first H + W bases, accumulated in fp64
        return (fm(raw)[:, 64:].double() * proj).sum()

    loss().backward()
    for i, p in fm.level2_query.items():
        assert p.grad is not None and float(p.grad.abs().max()) > 0, i
    i, p = max(fm.level2_query.items(), key=lambda item: float(item[1].grad.norm()))
    d = p.grad / p.grad.norm()
    eps = 1e-1
    with torch.no_grad():
        p.add_(eps * d)
        up = loss()
        p.sub_(2 * eps * d)
        down = loss()
        p.add_(eps * d)
    fd = float(up - down) / (2 * eps)
    assert abs(fd - float(p.grad.norm())) <= 0.1 * float(p.grad.norm()), (fd, float(p.grad.norm()))
    # mean pooling does not read the queries
    fm.zero_grad()
    fm.config.level2_pool = "mean"
    loss().backward()
    assert all(p.grad is None for p in fm.level2_query.values())


def test_level2_config_validation_names_the_field():
    for bad in (0, -3, 1.5, True, "4"):
        with pytest.raises(ValueError, match="FocusConfig.level2"):
            FocusConfig(k=8, window=32, horizon=64, level2=bad)
    with pytest.raises(ValueError, match="FocusConfig.level2: 4 needs a horizon"):
        FocusConfig(k=8, window=32, level2=4)
    with pytest.raises(ValueError, match="FocusConfig.level2_pool"):
        FocusConfig(k=8, window=32, horizon=64, level2=4, level2_pool="max")
    cfg = FocusConfig(k=8, window=32, horizon=64, level2=4, level2_pool="mean")
    assert FocusConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    old = cfg.to_dict()
    del old["level2"], old["level2_pool"]  # a config written before the second level existed
    assert FocusConfig.from_dict(old).level2 is None and FocusConfig.from_dict(old).level2_pool == "trained"
    assert FocusConfig(k=8, window=32, horizon="auto", level2=4).level2 == 4
    # at run time too: a horizon removed later, or trained pooling without queries, is refused by name
    fm = perturbed(4, 16, 32, 3)
    fm.config.horizon = None
    with pytest.raises(ValueError, match="FocusConfig.level2: 3 needs a horizon"):
        fm(dna_tokens(1, 50))
    plain = FocusModel(stressed_model("SDH*S*"), FocusConfig(k=4, window=16, horizon=32))
    assert "level2_query.3" not in plain.focus_parameters()
    plain.config.level2 = 3
    with pytest.raises(ValueError, match="FocusConfig.level2_pool: 'trained' pooling needs"):
        plain(dna_tokens(1, 50))
    plain.config.level2_pool = "mean"
    plain(dna_tokens(1, 50))


def test_adapter_round_trip_with_level2_queries(tmp_path):
    fm = perturbed(7, 32, 32, 3)
    tokens = dna_tokens(1, 260, seed=2)
    fm.save_adapter(tmp_path / "a")
    meta = json.loads((tmp_path / "a" / CONFIG).read_text())
    assert meta["focus"]["level2"] == 3 and meta["tensors"]["level2_query.3"] == [4, 16]
    fresh = FocusModel(stressed_model("SDH*S*"), FocusConfig(k=7, window=32))  # no level 2, no queries
    fresh.load_adapter(tmp_path / "a")
    assert fresh.config == fm.config
    with torch.no_grad():
        assert torch.equal(fresh(tokens), fm(tokens))
    # an adapter without level-2 queries loads into a model that has them as zeros (mean pooling)
    plain = FocusModel(stressed_model("SDH*S*"), FocusConfig(k=7, window=32, horizon=32))
    plain.save_adapter(tmp_path / "b")
    fm.load_adapter(tmp_path / "b")
    assert all(float(p.abs().max()) == 0 for p in fm.level2_query.values())
    assert fm.config.level2 is None
    from safetensors.torch import load_file

    assert not any(n.startswith("level2_query") for n in load_file(tmp_path / "b" / TENSORS))
