"""One bf16 NeMo training step (TP=2, gloo) through the chr1 run's code: `run_nemo_training` with
``precision: bf16-mixed`` (Float16Module, Megatron's mixed-precision optimizer keeping fp32 main params for
the Focus parameters, the frozen bf16 base), against one single-backend bf16-mixed step on the same batch.

This file is also the worker (``python tests/nemo/test_bf16_training.py ...`` under ``torch.distributed.run``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.nemo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

PATTERN = "SDH*SD*"
LR = 1e-5  # below half a bf16 ulp of most adapter weights: a bf16 adapter copy would lose the Adam step
WD = 1000.0  # decoupled decay lr * WD = 1% of each decayed weight: which tensors decay is plain to see


def bf16_config(base_dir: str, run_dir: str, backend: str, tp: int = 1):
    from focus_nemo.focus import FocusConfig
    from focus_nemo.train import DataSection, ModelSection, TrainConfig, TrainerSection

    return TrainConfig(
        model=ModelSection(checkpoint=base_dir, dtype="bfloat16"),
        focus=FocusConfig(k=16, window=128, train_ratios=[16], distill_weight=1.0),
        data=DataSection(sample_len=300),
        trainer=TrainerSection(backend=backend, devices=tp, tensor_model_parallel_size=tp, max_steps=1, batch_size=2,
                               lr=LR, weight_decay=WD, warmup_steps=0, grad_clip=1.0, precision="bf16-mixed"),
        run_dir=run_dir, save_every=0, eval_samples=1, eval_len=300, eval_every=0)


# --------------------------------------------------------------------------- worker side
def _worker(args) -> None:
    from focus_nemo.nemo.trainer import run_nemo_training

    cfg = bf16_config(args.base, args.rundir, "nemo", tp=args.tp)
    _, model = run_nemo_training(cfg)
    fm = model.focus_model()
    dtypes = {n: (str(p.dtype), str(getattr(p, "main_param", p).dtype)) for n, p in fm.named_parameters()
              if p.requires_grad}
    base_dtypes = sorted({str(p.dtype) for p in fm.base.parameters()})
    if torch.distributed.get_rank() == 0:
        torch.save({"dtypes": dtypes, "base_dtypes": base_dtypes, "tp": torch.distributed.get_world_size()}, args.out)


def _main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--rundir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tp", type=int, default=2)
    _worker(p.parse_args())


# --------------------------------------------------------------------------- test side
def initial_adapter(base_dir: Path) -> dict[str, torch.Tensor]:
    """The untrained adapter of the bf16 base (copies of its projections), fp32: where both runs start."""
    from focus_nemo.evo2 import load_evo2
    from focus_nemo.focus import FocusConfig, FocusModel

    fm = FocusModel(load_evo2(base_dir).to(torch.bfloat16), FocusConfig(k=16, window=128))
    return {n: p.detach().float().clone() for n, p in fm.focus_parameters().items()}


@pytest.mark.slow  # ~2.5 min on two cores
def test_bf16_nemo_step_tp2_matches_single_backend(tmp_path):
    """The bf16 NeMo step (TP=2) and the single-backend bf16-mixed step move the adapter alike: the same
    decoupled weight decay on the same tensors (none on the 1-D Focus embedding and biases, as Megatron's
    optimizer does), Adam steps of the same sign almost everywhere (bf16 gradients), fp32 master weights
    (the saved adapter keeps steps a bf16 copy rounds away)."""
    from conftest import require_nemo, run_worker, stressed_model
    from safetensors.torch import load_file

    from focus_nemo.evo2.checkpoint import save_evo2
    from focus_nemo.train import train
    from focus_nemo.training.optim import decays

    require_nemo()
    base = tmp_path / "base"
    save_evo2(stressed_model(pattern=PATTERN, seed=3), base)
    run_worker(__file__, "--base", str(base), "--rundir", str(tmp_path / "nemo"), "--out", str(tmp_path / "out.pt"),
               "--tp", "2", nproc=2, timeout=600)
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["tp"] == 2 and out["base_dtypes"] == ["torch.bfloat16"]
    assert out["dtypes"] and all(d == ("torch.bfloat16", "torch.float32") for d in out["dtypes"].values()), out

    train(bf16_config(str(base), str(tmp_path / "single"), "single"))
    init = initial_adapter(base)
    nemo = load_file(str(tmp_path / "nemo" / "adapter" / "adapter.safetensors"))
    single = load_file(str(tmp_path / "single" / "adapter" / "adapter.safetensors"))
    assert set(nemo) == set(single) == set(init)
    agree = total = 0
    for name, p0 in init.items():
        dn, ds = nemo[name] - p0, single[name] - p0
        assert nemo[name].dtype == torch.float32
        if not ds.any():
            # No gradient reaches it (the last attention block's Focus output): torch's AdamW skips such a
            # parameter, Megatron's Adam steps it with a zero gradient (decay only). Neither trains it.
            assert "out_proj" in name, name
            continue
        decay = LR * WD * p0 if decays(name, p0) else torch.zeros_like(p0)
        an, as_ = dn + decay, ds + decay  # the Adam parts: +-LR where the gradient is not ~0
        # Same decay on both backends; the Adam steps differ at most by a flipped sign (bf16 gradients).
        assert ((dn - ds).abs() <= 2 * LR * 1.01 + 1e-7).all(), (name, (dn - ds).abs().max().item())
        assert (an.abs() <= LR * 1.01 + 1e-7).all() and (as_.abs() <= LR * 1.01 + 1e-7).all(), name
        big = (an.abs() > 0.5 * LR) & (as_.abs() > 0.5 * LR)
        agree += int((an.sign() == as_.sign())[big].sum())
        total += int(big.sum())
    assert total > 0 and agree >= 0.9 * total, (agree, total)


def test_medium_filter_compile_is_a_setting_chr1_turns_off():
    """`trainer.compile_medium_filter` decides whether NeMo's medium filter is compiled on GPUs; the chr1
    experiment runs it eagerly."""
    from conftest import require_nemo
    from hydra import compose, initialize_config_dir

    require_nemo()
    from nemo.collections.llm.gpt.model.megatron.hyena import hyena_utils

    from focus_nemo.nemo import cpu_shims
    from focus_nemo.nemo.trainer import apply_shims
    from focus_nemo.train import TrainerSection, config_from_hydra

    with initialize_config_dir(config_dir=str(HERE.parents[1] / "conf"), version_base="1.3"):
        cfg = config_from_hydra(compose(config_name="train_focus", overrides=["+experiment=chr1"]))
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.compile_medium_filter is False
    assert TrainerSection().compile_medium_filter is True  # NeMo's own behaviour unless a config says otherwise
    was_applied = cpu_shims.is_applied() or cpu_shims.portable_applied()
    compiled = hyena_utils.ExplicitSingleDecayFilter.__dict__["filter"]
    try:
        apply_shims(cfg.trainer)
        assert not cpu_shims.medium_filter_compiled()
        apply_shims(TrainerSection(accelerator="gpu", backend="nemo"))
        assert cpu_shims.medium_filter_compiled() == (not cpu_shims.is_applied())
        assert (hyena_utils.ExplicitSingleDecayFilter.__dict__["filter"] is compiled) == (not cpu_shims.is_applied())
    finally:
        if not was_applied:
            cpu_shims.remove()


if __name__ == "__main__":
    _main()
