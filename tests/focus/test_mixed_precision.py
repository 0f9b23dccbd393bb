"""Adapter training on a bf16 base keeps fp32 master weights and optimizer state (DESIGN D10), and
`trainer.precision` means what it says or is refused."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from focus_nemo.evo2 import Evo2Config, Evo2Model
from focus_nemo.focus import FocusConfig, FocusModel
from focus_nemo.train import DataSection, ModelSection, TrainConfig, TrainerSection, check_precision, train

LR = 1e-5  # Adam's first steps move each weight by ~lr: far below half a bf16 ulp of weights of size ~0.05


def config(tmp_path, dtype="bfloat16", precision="bf16-mixed", **trainer) -> TrainConfig:
    return TrainConfig(
        model=ModelSection(checkpoint="random", preset="tiny", dtype=dtype),
        focus=FocusConfig(k=4, window=16, train_ratios=[4]),
        data=DataSection(sample_len=64),
        trainer=TrainerSection(precision=precision, lr=LR, warmup_steps=0, max_steps=3, batch_size=2, **trainer),
        eval_samples=1, eval_len=64, save_every=0, run_dir=str(tmp_path / "run"), seed=0,
    )


def initial_adapter() -> dict[str, torch.Tensor]:
    """The untrained adapter of the tiny random base (D6: copies of the base's projections), fp32."""
    torch.manual_seed(0)
    fm = FocusModel(Evo2Model(Evo2Config.preset("tiny")), FocusConfig(k=4, window=16))
    return {n: p.detach().clone() for n, p in fm.focus_parameters().items()}


def test_bf16_base_trains_fp32_adapter_where_bf16_updates_round_away(tmp_path):
    cfg = config(tmp_path)
    train(cfg)
    got = load_file(str(tmp_path / "run" / "adapter" / "adapter.safetensors"))
    init = initial_adapter()
    assert set(got) == set(init)
    assert {t.dtype for t in got.values()} == {torch.float32}
    changed = lost = total = 0
    for name, t in got.items():
        # The training run started from the bf16 base, so its adapter started as the bf16-rounded copies.
        start = init[name].bfloat16().float()
        delta = t - start
        moved = delta != 0
        changed += int(moved.sum())
        total += t.numel()
        # The same update applied to bf16 weights: rounds back to the starting value.
        lost += int(((start + delta).bfloat16().float() == start)[moved].sum())
    # (The Focus outputs of the last attention block reach no ordinary base: its out_proj gets no gradient.)
    assert changed > 0.25 * total, (changed, total)
    assert bool((got["focus_embedding"] != init["focus_embedding"].bfloat16().float()).all())
    assert lost > 0.5 * changed, (lost, changed)  # a bf16 adapter would not have moved there
    state = torch.load(tmp_path / "run" / "checkpoint" / next(
        p.name for p in (tmp_path / "run" / "checkpoint").iterdir() if p.is_dir()) / "trainer_state.pt",
        weights_only=True)
    moments = [v for s in state["optimizer"]["state"].values() for v in s.values()
               if isinstance(v, torch.Tensor) and v.dim() > 0]
    assert moments and {v.dtype for v in moments} == {torch.float32}


@pytest.mark.parametrize("dtype, precision, match", [
    ("bfloat16", "32", "computes in float32"),
    ("float16", "bf16-mixed", "another 16-bit dtype"),
    ("float32", "16-mixed", "not supported by the single backend"),
])
def test_contradictory_precision_is_refused(tmp_path, dtype, precision, match):
    with pytest.raises(ValueError, match=match):
        check_precision(config(tmp_path, dtype=dtype, precision=precision))


def test_fp32_and_bf16_mixed_are_accepted(tmp_path):
    assert check_precision(config(tmp_path, dtype="float32", precision="32")) == torch.float32
    assert check_precision(config(tmp_path, dtype="float32", precision="bf16-mixed")) == torch.bfloat16
    assert check_precision(config(tmp_path, dtype="bfloat16", precision="bf16-mixed")) == torch.bfloat16


def test_weight_decay_skips_biases_and_1d_parameters_as_megatron(tmp_path):
    """The single backend's AdamW decays the Focus matrices only, as Megatron's optimizer (nemo backend)
    does: not the Focus embedding, not the output biases."""
    cfg = config(tmp_path, dtype="float32", precision="32", weight_decay=0.1)
    cfg.save_every = 1
    cfg.trainer.max_steps = 1
    train(cfg)
    ck = tmp_path / "run" / "checkpoint"
    state = torch.load(next(p for p in ck.iterdir() if p.is_dir()) / "trainer_state.pt", weights_only=True)
    adapter = initial_adapter()
    moments = state["optimizer"]["state"]
    groups = {g["weight_decay"]: g["params"] for g in state["optimizer"]["param_groups"]}
    assert set(groups) == {0.1, 0.0}
    assert len(groups[0.0]) == sum(1 for n, t in adapter.items() if t.dim() == 1 or n.endswith(".bias"))
    assert len(groups[0.1]) == sum(1 for n, t in adapter.items() if t.dim() > 1)
    # the parameters' ranks, read from their Adam moments (the last block's Focus output has none: no gradient)
    ranks = {wd: {moments[i]["exp_avg"].dim() for i in ids if i in moments} for wd, ids in groups.items()}
    assert ranks == {0.0: {1}, 0.1: {2}}
