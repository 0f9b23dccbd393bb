"""NeMo training at data-parallel size 2 (TP=1, two CPU processes with gloo): every file of the run's
checkpoints and final adapter is written by exactly one process, global rank 0, and the replicas end
with the same adapter.

This file is also the worker (``python -m torch.distributed.run --nproc_per_node 2
tests/nemo/test_nemo_data_parallel.py ...``): each rank records the files it renames into place (every
file of a save lands through os.replace).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.nemo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _worker(args) -> None:
    from test_nemo_training import train_config

    from focus_nemo.nemo.trainer import run_nemo_training

    run = Path(args.rundir)
    writes = []
    real_replace = os.replace

    def recording_replace(src, dst):
        if Path(dst).resolve().is_relative_to(run.resolve()):
            writes.append(str(Path(dst).resolve().relative_to(run.resolve())))
        return real_replace(src, dst)

    os.replace = recording_replace
    cfg = train_config(args.base, args.rundir, steps=2, devices=2, save_every=1)
    _, model = run_nemo_training(cfg)
    os.replace = real_replace
    dist = torch.distributed
    sd = model.focus_model().focus_state_dict()
    replicas = [None] * dist.get_world_size()
    dist.all_gather_object(replicas, {n: t.detach().clone() for n, t in sd.items()})
    same = all(torch.equal(replicas[0][n], r[n]) for r in replicas for n in sd)
    (Path(args.out) / f"rank{dist.get_rank()}.json").write_text(
        json.dumps({"writes": writes, "replicas_equal": same, "world": dist.get_world_size()}))


@pytest.mark.slow
def test_data_parallel_2_has_one_writer(tmp_path):
    from conftest import require_nemo, run_worker, stressed_model
    from test_nemo_training import PATTERN

    from focus_nemo.evo2 import load_evo2
    from focus_nemo.evo2.checkpoint import save_evo2
    from focus_nemo.focus import FocusModel

    require_nemo()
    base = tmp_path / "base"
    save_evo2(stressed_model(pattern=PATTERN, seed=3), base)
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    run_worker(__file__, "--base", str(base), "--rundir", str(run), "--out", str(out), nproc=2, timeout=600)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world"] == 2 and r["replicas_equal"] for r in ranks)
    assert ranks[1]["writes"] == [], ranks[1]["writes"]
    writes = ranks[0]["writes"]
    assert writes.count("checkpoint/latest.json") == 2, writes  # the commit record, once per save
    files = [w for w in writes if w != "checkpoint/latest.json"]
    assert len(files) == len(set(files)), writes  # every other file once
    assert {w for w in writes if w.startswith("adapter/")} == {"adapter/adapter.safetensors",
                                                               "adapter/adapter_config.json"}
    for step in (1, 2):
        assert {w for w in writes if w.startswith(f"checkpoint/step-{step:08d}/")} == {
            f"checkpoint/step-{step:08d}/{name}"
            for name in ("adapter.safetensors", "adapter_config.json", "optimizer_tp0.pt")}
    record = json.loads((run / "checkpoint" / "latest.json").read_text())
    assert record["step"] == 2 and len(record["optimizer_sha256"]) == 1
    assert sorted(p.name for p in (run / "checkpoint" / "step-00000002").iterdir()) == [
        "adapter.safetensors", "adapter_config.json", "optimizer_tp0.pt"]
    assert not list(run.rglob("*.tmp"))
    FocusModel(load_evo2(base)).load_adapter(run / "adapter")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--rundir", required=True)
    p.add_argument("--out", required=True)
    _worker(p.parse_args())
