"""The per-device training-memory estimate (`focus_nemo.profiling.training_memory`) and
``recipes/train_focus.py --dry-run``. Its agreement with measured peaks: tests/nemo/test_teacher_memory.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from focus_nemo.evo2 import Evo2Config
from focus_nemo.profiling.training_memory import TERMS, estimate_training_memory

REPO = Path(__file__).resolve().parents[1]


def test_estimate_scales_as_the_step_does():
    cfg = Evo2Config.preset("tiny", pattern="SDH*SD*", hidden_size=256, ffn_hidden_size=512, num_heads=8,
                            hcl_groups=256)
    one = estimate_training_memory(cfg, seq_len=4096, micro_batch=1, tp=1, k=16)
    # linear in length and batch: the teacher's attention holds no [L, L] scores
    two = estimate_training_memory(cfg, seq_len=8192, micro_batch=1, tp=1, k=16)
    assert two.teacher == pytest.approx(2 * one.teacher, rel=1e-6)
    assert two.activations == pytest.approx(2 * one.activations, rel=1e-3)
    batch = estimate_training_memory(cfg, seq_len=4096, micro_batch=3, tp=1, k=16)
    assert batch.activations == pytest.approx(3 * one.activations, rel=1e-6)
    assert (batch.base_parameters, batch.optimizer_state) == (one.base_parameters, one.optimizer_state)
    # no teacher without distillation; bf16 keeps fp32 masters (2 + 4 bytes) and fp32 Adam state
    assert estimate_training_memory(cfg, seq_len=4096, k=16, distill=False).teacher == 0
    bf16 = estimate_training_memory(cfg, seq_len=4096, k=16, precision="bf16-mixed")
    fp32 = estimate_training_memory(cfg, seq_len=4096, k=16, precision="32")
    assert bf16.focus_parameters * 4 == fp32.focus_parameters * 6 and bf16.optimizer_state == fp32.optimizer_state
    assert bf16.base_parameters * 2 == fp32.base_parameters
    # TP splits the parameters and part of the activations
    tp2 = estimate_training_memory(cfg, seq_len=4096, k=16, tp=2, precision="bf16-mixed")
    assert tp2.base_parameters < 0.51 * bf16.base_parameters and tp2.activations < bf16.activations
    with pytest.raises(ValueError, match="precision"):
        estimate_training_memory(cfg, seq_len=4096, precision="8")


def test_dry_run_prints_the_estimate_and_trains_nothing(tmp_path):
    from hydra import compose, initialize_config_dir

    from focus_nemo.profiling.training_memory import estimate_for_config
    from focus_nemo.train import config_from_hydra

    run = tmp_path / "run"
    overrides = ["+experiment=chr1", f"run_dir={run}"]
    proc = subprocess.run([sys.executable, "recipes/train_focus.py", *overrides, "--dry-run"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines()[1:] if line.strip())
    assert list(lines) == [*TERMS, "total"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = config_from_hydra(compose(config_name="train_focus", overrides=overrides))
    want = estimate_for_config(cfg)
    assert lines["total"] == f"{want.total / 2**30:10.3f} GiB".strip()
    assert "TP=8" in proc.stdout.splitlines()[0] and not (run / "config.json").exists()
