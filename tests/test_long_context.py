"""focus_nemo.pretraining.long_context_evidence: the truncated-context scores it compares."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import random_dna

from focus_nemo.evo2 import Evo2Config, Evo2Model
from focus_nemo.focus import FocusConfig, FocusModel
from focus_nemo.pretraining import long_context_evidence

W, SHORT, L = 64, 128, 256


@pytest.fixture(scope="module")
def model() -> Evo2Model:
    torch.manual_seed(0)
    m = Evo2Model(Evo2Config.preset("tiny"))
    m.reset_parameters(4)
    return m


def seqs(n: int, length: int = L + 1) -> list[np.ndarray]:
    out = [np.frombuffer(random_dna(length, seed=i), np.uint8).copy() for i in range(n)]
    out[0][10:14] = ord("N")  # not scored
    return out


def nats(logits, targets):
    return torch.nn.functional.cross_entropy(logits[0].double(), targets[0], reduction="none")


def test_matches_a_direct_computation(model):
    data = seqs(3)
    res = long_context_evidence(model, data, window=W, short_len=SHORT)
    full_cost, attn_cost, short_gap, full_bits = [], [], [], []
    fm = FocusModel(Evo2Model(model.config), FocusConfig(k=16, window=W))
    fm.base.load_state_dict(model.state_dict())
    with torch.no_grad():
        for s in data:
            t = torch.from_numpy(s.astype(np.int64))[None]
            x, y = t[:, :-1], t[:, 1:]
            w = torch.isin(y[0], torch.tensor([65, 67, 71, 84])).double()
            full = nats(model(x), y)
            alone = torch.cat([nats(model(x[:, i: i + W]), y[:, i: i + W]) for i in range(0, L, W)])
            attn = nats(fm(x, memory=False), y)
            short = torch.cat([nats(model(x[:, i: i + SHORT]), y[:, i: i + SHORT]) for i in range(0, L, SHORT)])
            after = w.clone()
            after[:W] = 0
            full_bits.append(float((full * w).sum() / w.sum()) / math.log(2))
            full_cost.append(float(((alone - full) * after).sum() / after.sum()))
            attn_cost.append(float(((attn - full) * after).sum() / after.sum()))
            short_gap.append(float(((short - full) * w).sum() / w.sum()) / math.log(2))
    for key, ref in (("full_bits", full_bits), ("windows_alone_cost_nats", full_cost),
                     ("attention_window_cost_nats", attn_cost), ("short_minus_full_bits", short_gap)):
        assert res[key]["mean"] == pytest.approx(np.mean(ref), abs=1e-5), key
        assert res[key]["se"] == pytest.approx(np.std(ref, ddof=1) / math.sqrt(3), abs=1e-5), key
    assert res["sequences"] == 3 and res["length"] == L
    # The tiny random model does use context: the costs are real differences, not zeros.
    assert abs(res["windows_alone_cost_nats"]["mean"]) > 1e-4
    assert abs(res["attention_window_cost_nats"]["mean"]) > 1e-4
    # The first window sees the same context either way (causality).
    assert res["by_window"]["windows_alone_cost_nats"][0] == pytest.approx(0.0, abs=1e-5)
    assert len(res["by_window"]["full_nats"]) == L // W


def test_no_truncation_costs_nothing_and_model_state_is_restored(model):
    model.train()
    res = long_context_evidence(model, seqs(2), window=W, short_len=L)
    assert res["short_minus_full_bits"]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert res["last_short_short_minus_full_bits"]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_refuses_lengths_that_do_not_tile(model):
    with pytest.raises(ValueError, match=r"multiple of the window 64.*got lengths \[200\]"):
        long_context_evidence(model, seqs(2, 200), window=W, short_len=SHORT)
