"""`+experiment=chr1` (the cluster run: NeMo backend) composes and runs on CPU when pointed at a small
FASTA with chr1/chr2 records and a tiny Evo-2 NeMo 2 checkpoint written by NeMo's own machinery."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.nemo

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _run(args: list[str], timeout: int = 600) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def nemo2_base(tmp_path_factory):
    """A tiny Evo-2 (two attention blocks) as a NeMo 2 checkpoint, written by recipes/convert_checkpoint.py."""
    from conftest import require_nemo, stressed_model

    from focus_nemo.evo2.checkpoint import save_evo2

    require_nemo()
    tmp = tmp_path_factory.mktemp("chr1")
    save_evo2(stressed_model(pattern="SDH*SD*", seed=5), tmp / "ours")
    _run(["recipes/convert_checkpoint.py", "--input", str(tmp / "ours"), "--output", str(tmp / "nemo2"),
          "--format", "nemo2"])
    return tmp / "nemo2"


def overrides(ckpt: Path, run: Path, steps: int = 2) -> list[str]:
    return ["+experiment=chr1", f"model.checkpoint={ckpt}",
            "data.train_fasta=bundled:chr1_chr2_first100kb", "data.val_fasta=bundled:chr1_chr2_first100kb",
            "trainer.accelerator=cpu", "trainer.devices=1", "trainer.tensor_model_parallel_size=1",
            "trainer.precision=32", f"trainer.max_steps={steps}", "trainer.warmup_steps=1", "trainer.batch_size=1",
            "data.sample_len=2048", "save_every=1", "eval_samples=2", "eval_len=2048", f"run_dir={run}"]


def test_chr1_composes_for_the_cluster():
    from hydra import compose, initialize_config_dir

    from focus_nemo.train import config_from_hydra

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = config_from_hydra(compose(config_name="train_focus", overrides=["+experiment=chr1"]))
    assert cfg.trainer.backend == "nemo" and cfg.trainer.tensor_model_parallel_size == 8
    assert cfg.model.preset == "7b-1m" and cfg.data.train_regions == ["chr1"] and cfg.data.val_regions == ["chr2"]


def test_chr1_runs_on_cpu_from_a_nemo2_checkpoint(nemo2_base, tmp_path):
    """Two steps through the recipe; the first step's loss is the single-device objective of the
    NeMo 2 base read by focus_nemo (so the subclass loaded NeMo's weights), and the adapter loads
    into FocusModel on that base."""
    from hydra import compose, initialize_config_dir
    from test_nemo_training import first_batch_loss

    from focus_nemo.evo2 import load_evo2
    from focus_nemo.focus import FocusModel
    from focus_nemo.train import config_from_hydra

    run = tmp_path / "run"
    _run(["recipes/train_focus.py", *overrides(nemo2_base, run)])
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = config_from_hydra(compose(config_name="train_focus", overrides=overrides(nemo2_base, run)))
    ref = first_batch_loss(nemo2_base, cfg)
    assert abs(log[0]["loss"] - ref) <= 1e-4 * abs(ref), (log[0]["loss"], ref)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["backend"] == "nemo"
    # held-out chr2 windows (data.val_regions) measured before and after training, as by the single backend
    assert metrics["before"]["positions"] == metrics["after"]["positions"] > 0
    assert all(math.isfinite(metrics["after"][n]) for n in ("bits_full", "bits_focus", "focus_kl"))
    assert list((run / "tensorboard").rglob("events.out.tfevents*")), "no TensorBoard log"
    fm = FocusModel(load_evo2(nemo2_base)).load_adapter(run / "adapter")
    assert fm.config.train_ratios == [25, 50, 100, 200] and fm.config.window == 1024
    with torch.no_grad():
        assert torch.isfinite(fm(torch.full((1, 1500), 65))).all()
