"""I5 (only the adapter trains; the adapter file holds only Focus tensors), adapter round trips,
the D9 loss conventions, and randomised ratios."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import dna_tokens, stressed_model
from safetensors.torch import load_file

from focus_nemo.focus import FocusConfig, FocusModel, focus_loss, split_case
from focus_nemo.focus.adapter import CONFIG, TENSORS


def make(k=5, window=20, pattern="SDH*S*", seed=0):
    return FocusModel(stressed_model(pattern, seed=seed), FocusConfig(k=k, window=window, train_ratios=[4, 5, 10]))


def test_I5_only_focus_trains_and_base_is_bit_identical(tmp_path):
    fm = make()
    trainable = {n for n, p in fm.named_parameters() if p.requires_grad}
    assert trainable == set(fm.focus_parameters())
    assert trainable == {"focus_embedding", "focus_proj.3.wqkv", "focus_proj.3.out_proj.weight",
                         "focus_proj.3.out_proj.bias", "focus_proj.5.wqkv", "focus_proj.5.out_proj.weight",
                         "focus_proj.5.out_proj.bias"}
    before = {n: p.detach().clone() for n, p in fm.base.state_dict().items()}
    focus_before = {n: p.detach().clone() for n, p in fm.focus_parameters().items()}
    opt = torch.optim.AdamW([p for p in fm.parameters() if p.requires_grad], lr=1e-2)
    raw = dna_tokens(2, 81, seed=1)
    for step in range(3):
        k = fm.config.train_ratios[step % 3]
        out = focus_loss(fm, raw, k=k)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    for n, p in fm.base.state_dict().items():
        assert torch.equal(p, before[n]), n
    moved = {n for n, p in fm.focus_parameters().items() if not torch.equal(p, focus_before[n])}
    # Every Focus tensor trains except the last attention block's output projection: a Focus
    # token's output there is read by no later layer (its keys/values are what later windows use).
    assert moved == set(focus_before) - {"focus_proj.5.out_proj.weight", "focus_proj.5.out_proj.bias"}
    path = fm.save_adapter(tmp_path / "adapter")
    tensors = load_file(path / TENSORS)
    assert set(tensors) == trainable
    assert sum(t.numel() for t in tensors.values()) == sum(p.numel() for p in fm.focus_parameters().values())
    meta = json.loads((path / CONFIG).read_text())
    assert meta["focus"]["k"] == 5 and meta["focus"]["window"] == 20
    assert meta["base"]["shape_hash"] == fm.base.config.shape_hash()


def test_adapter_round_trip_gives_equal_logits(tmp_path):
    fm = make()
    with torch.no_grad():
        for p in fm.focus_parameters().values():
            p.add_(0.05 * torch.randn_like(p))
    fm.save_adapter(tmp_path / "a")
    fresh = make()  # same base weights, Focus params re-initialised
    tokens = dna_tokens(1, 70, seed=2)
    with torch.no_grad():
        assert (fresh(tokens) - fm(tokens)).abs().max() > 1e-4
        fresh.load_adapter(tmp_path / "a")
        assert torch.equal(fresh(tokens), fm(tokens))


def test_adapter_on_mismatched_base_is_refused(tmp_path):
    fm = make()
    fm.save_adapter(tmp_path / "a")
    other = FocusModel(stressed_model("SDH*SDH*"), FocusConfig(k=5, window=20))
    with pytest.raises(ValueError, match="different base model"):
        other.load_adapter(tmp_path / "a")


def test_truncated_adapter_is_refused(tmp_path):
    fm = make()
    path = fm.save_adapter(tmp_path / "a")
    data = (path / TENSORS).read_bytes()
    (path / TENSORS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="checksum mismatch"):
        make().load_adapter(path)
    with pytest.raises(FileNotFoundError, match="not an adapter directory"):
        make().load_adapter(tmp_path / "nothing")


def test_loss_conventions_by_hand():
    raw = torch.tensor([[ord(c) for c in "ACgtNRa"]])
    tokens, w = split_case(raw, 0.1)
    assert tokens.tolist() == [[ord(c) for c in "ACGTNRA"]]
    assert torch.allclose(w, torch.tensor([[1, 1, 0.1, 0.1, 0, 0, 0.1]]))


def test_loss_value_and_distillation():
    fm = make()
    raw = dna_tokens(1, 41, seed=3)
    raw[0, 10:15] += 32  # soft-masked stretch
    raw[0, 20] = ord("N")
    out = focus_loss(fm, raw, lowercase_weight=0.1)
    tokens, w = split_case(raw, 0.1)
    logits = fm(tokens[:, :-1])
    ce = torch.nn.functional.cross_entropy(logits[0], tokens[0, 1:], reduction="none")
    expect = (ce * w[0, 1:]).sum() / w[0, 1:].sum()
    assert torch.allclose(out["ce"], expect, atol=1e-6)
    # The window covers the sample, so FOCUS equals the base: the distillation term vanishes.
    d = focus_loss(fm, raw, window=64, distill_weight=1.0)
    assert float(d["kl"]) < 1e-8
    d = focus_loss(fm, raw, k=4, window=20, distill_weight=1.0)
    assert float(d["kl"]) > 1e-6
    assert torch.allclose(d["loss"], d["ce"] + d["kl"])
