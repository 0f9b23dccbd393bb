"""Exact resume of adapter training after a kill.

The data stream, the ratio k and the learning rate of a step are functions of (seed, step); the
checkpoint holds the adapter, the optimizer state and the RNG states. So a run killed at any instant
and started again reaches the same adapter, bit for bit, and logs the same loss at every step as a
run that was never interrupted. The first test kills a real training process with SIGKILL; the
others pin the pieces: the commit protocol under a crash at every write, RNG restoration, the
training log after a resume.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from focus_nemo.evo2 import Evo2Config, Evo2Model
from focus_nemo.focus import FocusConfig, FocusModel, focus_loss
from focus_nemo.training.checkpoint import (
    CHECKPOINT_DIR,
    CHECKPOINT_RECORD,
    TRAIN_LOG,
    load_checkpoint,
    open_train_log,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from focus_nemo.training.config import ModelSection, TrainConfig, TrainerSection

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "train_focus.py"
MAX_STEPS, SAVE_EVERY = 30, 6
OVERRIDES = [
    "model=evo2_tiny_random", f"trainer.max_steps={MAX_STEPS}", f"save_every={SAVE_EVERY}", "trainer.warmup_steps=4",
    "trainer.batch_size=2", "eval_samples=1", "eval_len=160", "data.sample_len=384", "focus.k=16",
    "focus.window=64", "focus.train_ratios=[8,16,32]", "+threads=1",
]


def recipe_command(run_dir: Path) -> list[str]:
    return [sys.executable, str(RECIPE), *OVERRIDES, f"run_dir={run_dir}"]


def child_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def run_to_completion(run_dir: Path) -> None:
    done = subprocess.run(recipe_command(run_dir), env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def log_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / TRAIN_LOG).read_text().splitlines()]


def last_logged_step(path: Path) -> int:
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return -1
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue  # a line being written
    return -1


def test_sigkill_at_a_random_step_then_resume_is_bit_identical(tmp_path):
    target = int(np.random.default_rng(7).integers(SAVE_EVERY + 1, MAX_STEPS - 6))  # past the first checkpoint
    killed = tmp_path / "killed"
    proc = subprocess.Popen(recipe_command(killed), env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while last_logged_step(killed / TRAIN_LOG) < target:
            assert proc.poll() is None, f"training ended before step {target}: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, f"step {target} not reached in time"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    record = json.loads((killed / CHECKPOINT_DIR / CHECKPOINT_RECORD).read_text())
    assert SAVE_EVERY <= record["step"] < MAX_STEPS
    killed_lines = (killed / TRAIN_LOG).read_bytes().splitlines(keepends=True)
    complete = [json.loads(line)["step"] for line in killed_lines if line.endswith(b"\n")]  # a kill may cut one
    assert complete == list(range(len(complete))) and complete[-1] >= target

    run_to_completion(killed)  # resumes from the checkpoint
    reference = tmp_path / "reference"
    run_to_completion(reference)

    assert json.loads((killed / "metrics.json").read_text())["start_step"] == record["step"]
    assert json.loads((reference / "metrics.json").read_text())["start_step"] == 0
    for name in ("adapter", f"{CHECKPOINT_DIR}/step-{MAX_STEPS:08d}"):
        got = load_file(killed / name / "adapter.safetensors")
        want = load_file(reference / name / "adapter.safetensors")
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), (name, key)
    resumed_log, reference_log = log_records(killed), log_records(reference)
    assert [r["step"] for r in resumed_log] == list(range(MAX_STEPS))  # no duplicate or missing step
    assert resumed_log == reference_log  # identical loss, k, lr, grad norm at every step
    assert (json.loads((killed / "metrics.json").read_text())["after"]
            == json.loads((reference / "metrics.json").read_text())["after"])
    leftovers = [p for p in killed.rglob("*") if ".tmp" in p.name]
    assert not leftovers
    assert sorted(p.name for p in (killed / CHECKPOINT_DIR).iterdir()) == [CHECKPOINT_RECORD, f"step-{MAX_STEPS:08d}"]


# -- the pieces, in process ------------------------------------------------------------------------------


def tiny_setup(seed: int = 0, **trainer):
    cfg = TrainConfig(model=ModelSection(checkpoint="random", preset="tiny"),
                      focus=FocusConfig(k=4, window=16, train_ratios=[4, 8]),
                      trainer=TrainerSection(max_steps=10, **trainer), seed=seed)
    torch.manual_seed(seed)
    fm = FocusModel(Evo2Model(Evo2Config.preset("tiny")), cfg.focus)
    opt = torch.optim.AdamW([p for p in fm.parameters() if p.requires_grad], lr=1e-2)
    return cfg, fm, opt


def take_steps(fm, opt, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    acgt = torch.tensor([65, 67, 71, 84])
    for _ in range(n):
        raw = acgt[torch.randint(0, 4, (2, 41), generator=g)]
        out = focus_loss(fm, raw, k=4)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()


def adapter_tensors(fm) -> dict:
    return {n: p.detach().clone() for n, p in fm.focus_parameters().items()}


class Crash(BaseException):
    """Stands for the process dying at this instant (not an Exception: nothing may catch it)."""


SAVE_WRITES = ["adapter.safetensors", "adapter_config.json", "trainer_state.pt", CHECKPOINT_RECORD]


@pytest.mark.parametrize("crash_at", [*SAVE_WRITES, "cleanup"])
def test_crash_at_any_write_of_a_save_leaves_a_complete_checkpoint(tmp_path, monkeypatch, crash_at):
    cfg, fm, opt = tiny_setup()
    take_steps(fm, opt, 2, seed=1)
    save_checkpoint(fm, opt, 2, tmp_path, cfg)
    at_2 = adapter_tensors(fm)
    take_steps(fm, opt, 2, seed=2)
    at_4 = adapter_tensors(fm)
    renames = []
    real_replace = os.replace

    def dying_replace(src, dst):  # every file of a save lands through os.replace
        if Path(dst).name == crash_at:
            shutil.copyfile(src, f"{src}.tmp")  # a killed process leaves its temporary file behind
            raise Crash
        renames.append(Path(dst).name)
        real_replace(src, dst)

    def dying_rmtree(path, *args, **kwargs):
        raise Crash

    monkeypatch.setattr(os, "replace", dying_replace)
    if crash_at == "cleanup":
        monkeypatch.setattr(shutil, "rmtree", dying_rmtree)
    with pytest.raises(Crash):
        save_checkpoint(fm, opt, 4, tmp_path, cfg)
    monkeypatch.undo()
    committed = crash_at == "cleanup"
    assert renames == SAVE_WRITES[: len(SAVE_WRITES) if committed else SAVE_WRITES.index(crash_at)]

    _, fresh, fresh_opt = tiny_setup()
    step, _ = load_checkpoint(fresh, fresh_opt, tmp_path, cfg)
    assert step == (4 if committed else 2)
    want = at_4 if committed else at_2
    for name, p in fresh.focus_parameters().items():
        assert torch.equal(p, want[name]), name
    # The next save deletes whatever the interrupted one left behind.
    save_checkpoint(fresh, fresh_opt, 6, tmp_path, cfg)
    assert sorted(p.name for p in (tmp_path / CHECKPOINT_DIR).iterdir()) == [CHECKPOINT_RECORD, "step-00000006"]
    assert not [p for p in (tmp_path / CHECKPOINT_DIR).rglob("*") if ".tmp" in p.name]


def test_same_step_saved_twice_keeps_the_committed_checkpoint_until_the_new_one_commits(tmp_path):
    cfg, fm, opt = tiny_setup()
    take_steps(fm, opt, 1, seed=1)
    first = save_checkpoint(fm, opt, 1, tmp_path, cfg)
    second = save_checkpoint(fm, opt, 1, tmp_path, cfg)
    assert first.name == "step-00000001" and second.name == "step-00000001.1" and not first.exists()
    assert load_checkpoint(tiny_setup()[1], tiny_setup()[2], tmp_path, cfg)[0] == 1


def test_optimizer_state_round_trips(tmp_path):
    cfg, fm, opt = tiny_setup()
    take_steps(fm, opt, 3, seed=1)
    save_checkpoint(fm, opt, 3, tmp_path, cfg)
    _, fresh, fresh_opt = tiny_setup()
    load_checkpoint(fresh, fresh_opt, tmp_path, cfg)
    take_steps(fm, opt, 2, seed=5)
    take_steps(fresh, fresh_opt, 2, seed=5)
    for name, p in fresh.focus_parameters().items():
        assert torch.equal(p, fm.focus_parameters()[name]), name


def test_rng_states_are_saved_and_restored(tmp_path):
    cfg, fm, opt = tiny_setup()
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    torch.rand(3), np.random.rand(3), random.random(), np.random.standard_normal()  # leaves a cached gaussian
    save_checkpoint(fm, opt, 0, tmp_path, cfg)
    draws = (torch.rand(5), np.random.rand(5), np.random.standard_normal(), [random.random() for _ in range(5)],
             random.gauss(0, 1))
    torch.rand(100), np.random.rand(100), random.random()  # the streams move on (as a killed run's would)
    step, rng = load_checkpoint(FocusModel(Evo2Model(Evo2Config.preset("tiny")), cfg.focus), opt, tmp_path, cfg)
    assert step == 0 and rng is not None
    set_rng_state(rng)
    again = (torch.rand(5), np.random.rand(5), np.random.standard_normal(), [random.random() for _ in range(5)],
             random.gauss(0, 1))
    assert torch.equal(again[0], draws[0]) and np.array_equal(again[1], draws[1])
    assert again[2:] == draws[2:]
    state = rng_state()
    assert set(state) >= {"torch", "numpy", "python"}


def test_train_log_after_resume_keeps_only_earlier_steps(tmp_path):
    lines = [json.dumps({"step": s, "loss": 1.0 / (s + 1)}) for s in range(8)]
    (tmp_path / TRAIN_LOG).write_text("\n".join(lines) + "\n" + '{"step": 8, "lo')  # cut short by a kill
    with open_train_log(tmp_path, 5) as log:
        log.write(json.dumps({"step": 5, "loss": 0.5}) + "\n")
        assert [json.loads(x)["step"] for x in (tmp_path / TRAIN_LOG).read_text().splitlines()] == [0, 1, 2, 3, 4, 5]
    with open_train_log(tmp_path, 0):
        pass
    assert (tmp_path / TRAIN_LOG).read_text() == ""  # a run started over (resume=false) starts an empty log


def test_resume_false_retires_the_old_checkpoint(tmp_path, caplog):
    cfg, fm, opt = tiny_setup()
    take_steps(fm, opt, 1, seed=1)
    save_checkpoint(fm, opt, 1, tmp_path, cfg)
    cfg.resume = False
    assert load_checkpoint(fm, opt, tmp_path, cfg) == (0, None)
    assert not (tmp_path / CHECKPOINT_DIR / CHECKPOINT_RECORD).exists()
    cfg.resume = True  # a later resume must not mix the old run into the new one
    assert load_checkpoint(fm, opt, tmp_path, cfg) == (0, None)
    assert "no committed checkpoint" in caplog.text
