"""Continued pretraining (init_from) and exact resume of focus_nemo.pretraining.

A run of 2N steps split into two sessions (N steps, then on to 2N from the committed checkpoint) must
end with the same weights and optimizer state, bit for bit, and log the same losses, as a run of 2N
steps in one go; a run started from a checkpoint (init_from) starts from its weights exactly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import random_dna
from safetensors.torch import load_file

from focus_nemo.evo2 import Evo2Config, Evo2Model
from focus_nemo.evo2.checkpoint import CheckpointError, load_evo2, save_evo2
from focus_nemo.pretraining import (
    PretrainConfig,
    PretrainResumeError,
    add_slow_modes,
    pretrain,
    project_poles,
    read_pretrain_checkpoint,
)

N = 3


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("genome") / "g.fa"
    seq = random_dna(30_000, seed=5).decode()
    path.write_text(">chrT\n" + "\n".join(seq[i: i + 80] for i in range(0, len(seq), 80)) + "\n")
    return path


def config(fasta: Path, out: Path, **kw) -> PretrainConfig:
    base = dict(fasta=str(fasta), chrom="chrT", train_range=(0, 20_000), heldout_range=(20_000, 30_000),
                preset="tiny", seq_len=128, batch_size=2, max_steps=2 * N, time_budget_s=1e9, lr=3e-3,
                min_lr=3e-4, warmup_steps=2, eval_windows=2, eval_len=128, markov_order=0, seed=3, threads=1,
                out_dir=str(out), save_every=N, lr_follows_time=False)
    base.update(kw)
    return PretrainConfig(**base)


def log_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_resume_is_bit_identical(fasta, tmp_path):
    whole = pretrain(config(fasta, tmp_path / "whole"))
    first = pretrain(config(fasta, tmp_path / "split", stop_at_step=N))
    assert first["steps"] == N
    second = pretrain(config(fasta, tmp_path / "split"))
    assert whole["steps"] == second["steps"] == 2 * N
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = read_pretrain_checkpoint(config(fasta, tmp_path / "whole"))[1]
    sb = read_pretrain_checkpoint(config(fasta, tmp_path / "split"))[1]
    assert sa["step"] == sb["step"] == 2 * N
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values(), strict=True):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(pa[key], pb[key]), key
    assert sa["sampler_rng"] == sb["sampler_rng"]
    la, lb = log_records(tmp_path / "whole"), log_records(tmp_path / "split")
    assert [r["step"] for r in lb] == list(range(2 * N))  # each step logged once
    assert [(r["loss_bits"], r["lr"]) for r in la] == [(r["loss_bits"], r["lr"]) for r in lb]
    assert whole["heldout_bits_per_base"] == second["heldout_bits_per_base"]


def test_resume_after_kill_between_saves_drops_repeated_log_records(fasta, tmp_path):
    whole = tmp_path / "whole"
    pretrain(config(fasta, whole))
    out = tmp_path / "killed"
    pretrain(config(fasta, out, stop_at_step=N))
    # A kill after two more steps, before the next save: their log records exist, the checkpoint is at N.
    with open(out / "train_log.jsonl", "a") as f:
        f.write(json.dumps({"step": N, "loss_bits": -1.0}) + "\n" + '{"step": ' )
    pretrain(config(fasta, out))
    assert [r["step"] for r in log_records(out)] == list(range(2 * N))
    assert log_records(out) == [{**r, "elapsed_s": r2["elapsed_s"]} for r, r2 in
                                zip(log_records(whole), log_records(out), strict=True)]


def test_resume_refuses_other_settings_and_resume_false_starts_over(fasta, tmp_path):
    pretrain(config(fasta, tmp_path, stop_at_step=N))
    with pytest.raises(PretrainResumeError, match=r"lr: 0.003 -> 0.001"):
        pretrain(config(fasta, tmp_path, lr=1e-3))
    fresh = pretrain(config(fasta, tmp_path, lr=1e-3, resume=False, stop_at_step=1))
    assert fresh["steps"] == 1


def test_resume_refuses_corrupt_trainer_state(fasta, tmp_path):
    pretrain(config(fasta, tmp_path, stop_at_step=N))
    where, _ = read_pretrain_checkpoint(config(fasta, tmp_path))
    state = where / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(PretrainResumeError, match="trainer_state.pt: SHA-256"):
        pretrain(config(fasta, tmp_path))


def test_init_from_starts_from_the_checkpoint(fasta, tmp_path):
    src = Evo2Model(Evo2Config.preset("tiny"))
    src.reset_parameters(11)
    save_evo2(src, tmp_path / "src")
    # Zero steps: the saved model is the starting point itself (and differs from the preset's own init).
    out = tmp_path / "cont"
    metrics = pretrain(config(fasta, out, init_from=str(tmp_path / "src"), stop_at_step=0, max_steps=0,
                              model_overrides={"name": "tiny_long"}))
    assert metrics["steps"] == 0
    got = load_evo2(out)
    assert got.config.name == "tiny_long"
    for k, v in src.state_dict().items():
        assert torch.equal(got.state_dict()[k], v), k
    fresh = Evo2Model(Evo2Config.preset("tiny"))
    fresh.reset_parameters(3)
    assert not torch.equal(fresh.state_dict()["embedding.weight"], src.state_dict()["embedding.weight"])
    # Training from it moves the weights, and the continued run resumes like any other.
    cfg = config(fasta, tmp_path / "cont2", init_from=str(tmp_path / "src"))
    pretrain(dataclasses.replace(cfg, stop_at_step=N))
    pretrain(cfg)
    whole = pretrain(config(fasta, tmp_path / "cont3", init_from=str(tmp_path / "src")))
    assert whole["steps"] == 2 * N
    a = load_file(str(tmp_path / "cont2" / "model.safetensors"))
    b = load_file(str(tmp_path / "cont3" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["embedding.weight"], src.state_dict()["embedding.weight"])


def test_max_log_pole_keeps_every_pole_decaying(fasta, tmp_path):
    """Log-poles pushed to or above 0 (integrators the filter's clamp no longer trains) are set to
    max_log_pole at the start and stay at or below it after every step; the setting is part of a resume."""
    src = Evo2Model(Evo2Config.preset("tiny"))
    src.reset_parameters(11)
    names = [n for n, _ in src.named_parameters() if n.endswith("filter.log_poles")]
    assert names
    with torch.no_grad():
        lp = dict(src.named_parameters())[names[0]]
        lp[0, :3] = torch.tensor([0.0, 0.02, -1e-6])
    save_evo2(src, tmp_path / "src")
    out = tmp_path / "proj"
    pretrain(config(fasta, out, init_from=str(tmp_path / "src"), max_log_pole=-1e-3, lr=3e-2, stop_at_step=N))
    got = load_file(str(out / "model.safetensors"))
    for n in names:
        assert got[n].max().item() <= -1e-3, n
    # set to the bound at the start (the 0 and 0.02 no longer stuck at the clamp), then trained from there
    probe = load_evo2(tmp_path / "src")
    assert project_poles(probe, -1e-3) == 3
    assert torch.equal(dict(probe.named_parameters())[names[0]][0, :3], torch.full((3,), -1e-3))
    assert project_poles(probe, None) == 0 and project_poles(probe, -1e-3) == 0
    assert not torch.equal(got[names[0]][0, :3], torch.full((3,), -1e-3))
    below = src.state_dict()[names[0]] < -1e-3
    assert not torch.equal(got[names[0]][below], src.state_dict()[names[0]][below])  # the others train
    with pytest.raises(PretrainResumeError, match=r"max_log_pole: -0.001 -> None"):
        pretrain(config(fasta, out, init_from=str(tmp_path / "src")))
    with pytest.raises(ValueError, match=r"PretrainConfig.max_log_pole: must be < 0"):
        pretrain(config(fasta, tmp_path / "bad", max_log_pole=0.0))


def _long_filters(model):
    return [(n, m) for n, m in model.named_modules() if getattr(m, "kind", None) == "H" and hasattr(m, "log_poles")]


def test_add_slow_modes_replaces_the_least_used_modes_silently():
    """Per long-filter group, the modes of least impulse-response mass become slow modes with a zero
    residue; when those modes already carried nothing, the model's output does not change."""
    model = Evo2Model(Evo2Config.preset("tiny"))
    model.reset_parameters(4)
    (name, f), = _long_filters(model)
    G, M = f.log_poles.shape
    with torch.no_grad():
        f.residues[:, 5] = 0.0  # no mass
        f.residues[:, 9] = 1e-6  # next least
        f.log_poles[0, 2] = 0.0  # an integrator (unbounded mass) is never picked
    tokens = torch.randint(0, 512, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(tokens)
    assert add_slow_modes(model, 1, (1e-4, 1e-2)) == G
    assert torch.equal(f.log_poles[:, 5], torch.full((G,), -1e-4)) and torch.equal(f.residues[:, 5], torch.zeros(G))
    assert f.log_poles[0, 2] == 0.0
    with torch.no_grad():
        after = model(tokens)
    assert torch.allclose(before, after, atol=1e-6, rtol=0)  # the replaced mode carried nothing
    # Two per group: log-spaced over the range, the next least-used mode taken.
    assert add_slow_modes(model, 2, (1e-4, 1e-2)) == 2 * G
    assert torch.allclose(f.log_poles[:, 5], torch.full((G,), -1e-4))  # least mass: the slowest
    assert torch.allclose(f.log_poles[:, 9], torch.full((G,), -1e-2))
    assert (f.residues[:, [5, 9]] == 0).all()
    with pytest.raises(ValueError, match=r"slow_modes: 17 exceeds the 16 modes"):
        add_slow_modes(model, M + 1, (1e-4, 1e-2))
    with pytest.raises(ValueError, match=r"slow_mode_decay: need 0 < low <= high < 1"):
        add_slow_modes(model, 1, (1e-2, 1e-4))


def test_slow_modes_train_and_poles_take_their_own_learning_rate(fasta, tmp_path):
    """A run with slow modes starts them silent and trains their residues; with pole_lr_scale the
    log-poles move by about lr * scale per step while the rest trains at lr; both settings are part
    of a resume, and bad values are refused before the genome is read."""
    src = Evo2Model(Evo2Config.preset("tiny"))
    src.reset_parameters(11)
    save_evo2(src, tmp_path / "src")
    (name, _), = _long_filters(src)
    out = tmp_path / "slow"
    scale = 1e-2
    pretrain(config(fasta, out, init_from=str(tmp_path / "src"), slow_modes=2, slow_mode_decay=(1e-4, 1e-3),
                    pole_lr_scale=scale, lr=3e-2, stop_at_step=N))
    got = load_file(str(out / "model.safetensors"))
    probe = load_evo2(tmp_path / "src")
    add_slow_modes(probe, 2, (1e-4, 1e-3))
    start = dict(probe.named_parameters())
    lp0, lpN = start[name + ".log_poles"].detach(), got[name + ".log_poles"]
    slow = start[name + ".residues"].detach() == 0
    assert int(slow.sum()) == 2 * lp0.shape[0]
    assert (got[name + ".residues"][slow] != 0).all()  # the silent modes learned a residue
    # Adam moves each parameter by at most ~lr per step: poles by lr * scale, the others by lr.
    assert (lpN - lp0).abs().max().item() <= 3e-2 * scale * N * 1.5
    assert (lpN - lp0).abs().max().item() > 0
    emb = "embedding.weight"
    assert (got[emb] - src.state_dict()[emb]).abs().max().item() > 3e-2 * scale * N * 1.5
    with pytest.raises(PretrainResumeError, match=r"pole_lr_scale: 0.01 -> 1.0"):
        pretrain(config(fasta, out, init_from=str(tmp_path / "src"), slow_modes=2, slow_mode_decay=(1e-4, 1e-3)))
    with pytest.raises(PretrainResumeError, match=r"slow_modes: 2 -> 0"):
        pretrain(config(fasta, out, init_from=str(tmp_path / "src"), slow_mode_decay=(1e-4, 1e-3),
                        pole_lr_scale=scale))
    with pytest.raises(ValueError, match=r"PretrainConfig.slow_mode_decay"):
        pretrain(config(tmp_path / "missing.fa", tmp_path / "bad", slow_modes=1, slow_mode_decay=(0.0, 1e-3)))
    with pytest.raises(ValueError, match=r"PretrainConfig.pole_lr_scale: must be > 0"):
        pretrain(config(tmp_path / "missing.fa", tmp_path / "bad", pole_lr_scale=0.0))


def test_a_checkpoint_from_before_a_setting_existed_resumes_with_its_default(fasta, tmp_path):
    out = tmp_path / "old"
    pretrain(config(fasta, out, stop_at_step=N))
    from focus_nemo.training.checkpoint import CHECKPOINT_DIR, CHECKPOINT_RECORD

    record_path = out / CHECKPOINT_DIR / CHECKPOINT_RECORD
    record = json.loads(record_path.read_text())
    for k in ("slow_modes", "slow_mode_decay", "pole_lr_scale"):
        del record["settings"][k]
    record_path.write_text(json.dumps(record))
    assert pretrain(config(fasta, out))["steps"] == 2 * N
    record = json.loads(record_path.read_text())
    for k in ("slow_modes", "slow_mode_decay", "pole_lr_scale"):
        del record["settings"][k]
    record_path.write_text(json.dumps(record))
    with pytest.raises(PretrainResumeError, match=r"pole_lr_scale: 1.0 -> 0.5"):
        pretrain(config(fasta, out, pole_lr_scale=0.5, max_steps=3 * N))


def test_init_from_refuses_shape_overrides(fasta, tmp_path):
    src = Evo2Model(Evo2Config.preset("tiny"))
    src.reset_parameters(11)
    save_evo2(src, tmp_path / "src")
    with pytest.raises(CheckpointError, match="ffn_hidden_size"):
        pretrain(config(fasta, tmp_path / "x", init_from=str(tmp_path / "src"),
                        model_overrides={"ffn_hidden_size": 96}))


def test_sigterm_ends_the_run_with_a_saved_checkpoint(fasta, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = config(fasta, tmp_path, max_steps=100_000, save_every=100_000)
    code = ("import sys, json; from focus_nemo.pretraining import PretrainConfig, pretrain; "
            "cfg = PretrainConfig(**json.loads(sys.argv[1])); print(json.dumps(pretrain(cfg)['steps']))")
    args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    log = tmp_path / "train_log.jsonl"
    deadline = time.time() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 2):
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() < deadline, "no training steps within 120 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    steps = int(out.strip().splitlines()[-1])
    assert steps >= 2
    _, state = read_pretrain_checkpoint(cfg)
    assert state["step"] == steps == len(log_records(tmp_path))
    again = pretrain(dataclasses.replace(cfg, stop_at_step=steps + 1))
    assert again["steps"] == steps + 1
    assert [r["step"] for r in log_records(tmp_path)] == list(range(steps + 1))
