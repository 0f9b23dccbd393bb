"""Training the FOCUS adapter through NeMo (the HyenaModel subclass, nemo.lightning Trainer,
MegatronStrategy, Megatron optimizer) on CPU at TP=2 and TP=1.

This file is also the worker (``python tests/nemo/test_nemo_training.py ...``, under
``torch.distributed.run`` for TP=2): it trains with `focus_nemo.nemo.trainer.run_nemo_training`,
then records the trained model's logits and whether its base still equals the checkpoint. The tests
compare with the single-device `FocusModel` in the pytest process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.nemo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

PATTERN = "SDH*SD*"  # two attention blocks
K, W, RATIOS, SAMPLE_LEN = 16, 128, [8, 16, 32], 300


def train_config(base_dir: str, run_dir: str, *, steps: int, tp: int = 1, devices: int = 1, save_every: int = 2,
                 lr: float = 1e-2, distill: float = 0.0, eval_samples: int = 2, eval_len: int = 400,
                 eval_every: int = 2):
    from focus_nemo.focus import FocusConfig
    from focus_nemo.train import DataSection, ModelSection, TrainConfig, TrainerSection

    return TrainConfig(
        model=ModelSection(checkpoint=base_dir),
        focus=FocusConfig(k=K, window=W, train_ratios=RATIOS, distill_weight=distill),
        data=DataSection(sample_len=SAMPLE_LEN),
        trainer=TrainerSection(backend="nemo", devices=devices, tensor_model_parallel_size=tp, max_steps=steps,
                               batch_size=2, lr=lr, warmup_steps=1, grad_clip=1.0),
        run_dir=run_dir, save_every=save_every, eval_samples=eval_samples, eval_len=eval_len, eval_every=eval_every)


# --------------------------------------------------------------------------- worker side
def _worker(args) -> None:
    from megatron.core import parallel_state

    from focus_nemo.evo2 import load_evo2
    from focus_nemo.evo2.nemo2 import evo2_to_megatron
    from focus_nemo.nemo.build import shard_for_rank
    from focus_nemo.nemo.trainer import run_nemo_training

    cfg = train_config(args.base, args.rundir, steps=args.steps, tp=args.tp, devices=args.tp, distill=args.distill)
    _, model = run_nemo_training(cfg)
    fm = model.focus_model().eval()
    tokens = torch.load(args.tokens, weights_only=True)
    with torch.no_grad():
        logits = fm(tokens)
    base = load_evo2(args.base)
    full = evo2_to_megatron(base.state_dict(), base.config)
    rank, size = parallel_state.get_tensor_model_parallel_rank(), parallel_state.get_tensor_model_parallel_world_size()
    changed = []
    for name, p in fm.base.state_dict().items():
        if name.endswith("_extra_state") or name not in full:
            continue
        want = full[name]
        if name.endswith("embedding.word_embeddings.weight"):
            want = torch.cat([want, want.new_zeros(p.shape[0] * size - want.shape[0], *want.shape[1:])])
        if not torch.equal(shard_for_rank(name, want, rank, size), p):
            changed.append(name)
    flags = torch.tensor([len(changed)])
    torch.distributed.all_reduce(flags)
    if torch.distributed.get_rank() == 0:
        torch.save({"logits": logits, "base_changed": int(flags), "names": changed}, args.out)


def _main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--rundir", required=True)
    p.add_argument("--tokens", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--distill", type=float, default=0.0)
    _worker(p.parse_args())


# --------------------------------------------------------------------------- test side
@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from conftest import stressed_model

    from focus_nemo.evo2.checkpoint import save_evo2

    d = tmp_path_factory.mktemp("base") / "tiny"
    save_evo2(stressed_model(pattern=PATTERN, seed=3), d)
    return d


def first_batch_loss(base_dir: Path, cfg, step: int = 0) -> float:
    """The single-device FOCUS objective on the batch the NeMo run trains on at `step` (DP = 1)."""
    from focus_nemo.data import WindowSampler, open_genome
    from focus_nemo.evo2 import load_evo2
    from focus_nemo.focus import FocusModel, focus_loss
    from focus_nemo.train import ratio_for_step, resolve_fasta

    genome = open_genome(resolve_fasta(cfg.data.train_fasta))
    regions = cfg.data.train_regions or list(genome.names)
    sampler = WindowSampler(genome, regions, cfg.data.sample_len + 1, seed=cfg.seed, rc_prob=cfg.data.rc_prob,
                            max_n_fraction=cfg.data.max_n_fraction)
    gbs = cfg.trainer.batch_size
    raw = torch.stack([torch.from_numpy(sampler.sample(step * gbs + i).seq.astype(np.int64)) for i in range(gbs)])
    fm = FocusModel(load_evo2(base_dir), cfg.focus)
    with torch.no_grad():
        return float(focus_loss(fm, raw, k=ratio_for_step(cfg, step))["loss"])


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("tp,distill", [(2, 1.0)])
def test_nemo_training_tp2(base_dir, tmp_path, tp, distill):
    """TP=2 through nemo.lightning: the first step's loss is the single-device objective on the same
    batch, the base is untouched, and the adapter file gives FocusModel the NeMo model's logits."""
    from conftest import require_nemo, run_worker

    from focus_nemo.evo2 import load_evo2
    from focus_nemo.focus import FocusModel, read_adapter_config

    require_nemo()
    from conftest import dna_tokens

    tokens = dna_tokens(1, 333, seed=4)
    torch.save(tokens, tmp_path / "tokens.pt")
    run = tmp_path / "run"
    run_worker(__file__, "--base", str(base_dir), "--rundir", str(run), "--tokens", str(tmp_path / "tokens.pt"),
               "--out", str(tmp_path / "out.pt"), "--steps", "4", "--tp", str(tp), "--distill", str(distill),
               nproc=tp, timeout=600)
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["base_changed"] == 0, out["names"]

    log = read_log(run)
    assert [r["step"] for r in log] == [0, 1, 2, 3]
    cfg = train_config(str(base_dir), str(run), steps=4, tp=tp, devices=tp, distill=distill)
    ref = first_batch_loss(base_dir, cfg)
    assert abs(log[0]["loss"] - ref) <= 1e-4 * abs(ref), (log[0]["loss"], ref)
    assert all(r["k"] in RATIOS for r in log) and "kl" in log[0]

    fm = FocusModel(load_evo2(base_dir))
    fm.load_adapter(run / "adapter")
    assert read_adapter_config(run / "adapter")["steps"] == 4 and fm.config.k == K and fm.config.window == W
    untrained = FocusModel(load_evo2(base_dir), fm.config)
    with torch.no_grad():
        got = fm(tokens)
        assert ((out["logits"] - got).abs().max() / got.abs().max()).item() <= 1e-4
        assert (got - untrained(tokens)).abs().max().item() > 1e-4  # the adapter did train
    record = json.loads((run / "checkpoint" / "latest.json").read_text())
    assert record["step"] == 4 and len(record["optimizer_sha256"]) == tp

    # held-out fidelity through the shared pieces: what the single backend measures on the same adapter
    from focus_nemo.evaluation.metrics import fidelity
    from focus_nemo.training.data import eval_batches

    metrics = json.loads((run / "metrics.json").read_text())
    held = eval_batches(cfg)
    for key, model in (("before", untrained), ("after", fm)):
        want = fidelity(model, held)
        assert metrics[key]["positions"] == want["positions"] > 0
        for name in ("bits_full", "bits_focus", "bits_truncation", "focus_kl", "focus_abs_dp_true"):
            assert abs(metrics[key][name] - want[name]) <= 1e-4 * abs(want[name]) + 1e-6, (key, name)


def _launch(base_dir: Path, run: Path, steps: int, save_every: int) -> subprocess.Popen:
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); from test_nemo_training import train_config; "
            "from focus_nemo.train import train; "
            f"train(train_config({str(base_dir)!r}, {str(run)!r}, steps={steps}, save_every={save_every}))")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code], cwd=HERE.parents[1], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_nemo_training_resumes_exactly_after_kill(base_dir, tmp_path):
    """SIGKILL after the first committed checkpoint; the resumed run ends with the same adapter and
    the same per-step losses as an uninterrupted run, each step logged once."""
    from conftest import require_nemo
    from safetensors.torch import load_file

    require_nemo()
    steps, every = 12, 2
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    proc = _launch(base_dir, killed, steps, every)
    record = killed / "checkpoint" / "latest.json"
    deadline = time.time() + 300
    while not record.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before its first checkpoint: {proc.stderr.read()[-3000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = json.loads(record.read_text())["step"]
    assert 2 <= at_kill < steps
    for run in (killed, whole):
        p = _launch(base_dir, run, steps, every)
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    a, b = load_file(whole / "adapter" / "adapter.safetensors"), load_file(killed / "adapter" / "adapter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    la, lb = read_log(whole), read_log(killed)
    assert [r["step"] for r in lb] == list(range(steps))
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    assert not list(killed.rglob("*.tmp"))


def test_resume_with_other_settings_is_refused(base_dir, tmp_path):
    from focus_nemo.nemo.checkpoint import NEMO_CHECKPOINT_FORMAT, parallel_settings, read_checkpoint_record
    from focus_nemo.training.checkpoint import ResumeError, resume_settings

    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    cfg = train_config(str(base_dir), str(run), steps=4)

    record = {"format": NEMO_CHECKPOINT_FORMAT, "step": 2, "directory": "step-00000002", "optimizer_sha256": ["x"],
              "parallel": parallel_settings(cfg), "settings": resume_settings(cfg)}
    (run / "checkpoint" / "latest.json").write_text(json.dumps(record))
    assert read_checkpoint_record(run, cfg)["step"] == 2
    other = train_config(str(base_dir), str(run), steps=4, lr=5e-3)
    with pytest.raises(ResumeError, match="trainer.lr"):
        read_checkpoint_record(run, other)
    wider = train_config(str(base_dir), str(run), steps=4, tp=2, devices=2)
    with pytest.raises(ResumeError, match="tensor_model_parallel_size"):
        read_checkpoint_record(run, wider)
    record["format"] = "focus-nemo-train-checkpoint/1"
    (run / "checkpoint" / "latest.json").write_text(json.dumps(record))
    with pytest.raises(ResumeError, match="another backend"):
        read_checkpoint_record(run, cfg)


if __name__ == "__main__":
    _main()
