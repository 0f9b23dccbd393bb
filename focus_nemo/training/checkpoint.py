"""The training checkpoint protocol both backends share, and the single-device checkpoint itself.

A checkpoint lives in ``<run_dir>/checkpoint/``: step directories (``step-00000050/``) and the commit
record ``latest.json`` naming the committed one, with checksums and the run settings. A save writes a new
step directory (`new_step_directory`), then commits it (`commit_checkpoint`: the record is replaced
atomically, last, and everything else is deleted). A run killed at any instant therefore leaves a record
naming a complete, verifiable checkpoint, or none. Resuming with settings that change the trajectory
(`RESUME_SETTINGS`, compared by `resume_settings`) or from a damaged checkpoint is a `ResumeError` that
names the setting or the file. The random streams (`rng_state`) and the training log (`open_train_log`,
which keeps only the steps before the resumed one) complete what a resumed run needs.

`save_checkpoint` / `load_checkpoint` are the single backend's files (adapter, optimizer and RNG state in
one ``trainer_state.pt``); the NeMo backend writes its own step directories (`focus_nemo.nemo.checkpoint`)
through the same protocol.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from focus_nemo.training.config import TrainConfig

log = logging.getLogger(__name__)


class ResumeError(ValueError):
    """A training checkpoint cannot be resumed from: unreadable, truncated, or written with other
    settings. The message names the file or the setting."""


# Checkpoint layout (single backend): <run_dir>/checkpoint/
#   step-00000050/   adapter.safetensors, adapter_config.json, trainer_state.pt (optimizer, step, RNG)
#   latest.json      the commit record: step, directory, SHA-256 of trainer_state.pt, run settings
# A save writes a new step directory, then replaces latest.json (atomically, last), then deletes the
# previous step directory. A run killed at any instant therefore leaves latest.json naming a complete,
# verifiable checkpoint (or none before the first save). The directory belongs to the trainer: each save
# deletes everything in it but latest.json and the new step directory (leftovers of interrupted saves).
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_RECORD = "latest.json"
CHECKPOINT_FORMAT = "focus-nemo-train-checkpoint/1"
TRAINER_STATE = "trainer_state.pt"
TRAIN_LOG = "train_log.jsonl"
# The settings a run's trajectory depends on (prefixes of dotted keys of TrainConfig). Resuming with any
# of them changed is refused; the others (evaluation, logging, run_dir, threads, device) may change.
RESUME_SETTINGS = ("seed", "model.checkpoint", "model.preset", "model.dtype", "model.config", "focus",
                   "data.train_fasta", "data.train_regions", "data.sample_len", "data.rc_prob", "data.max_n_fraction",
                   "trainer.lr", "trainer.weight_decay", "trainer.warmup_steps", "trainer.max_steps",
                   "trainer.batch_size", "trainer.grad_clip", "trainer.precision")
# Settings added to RESUME_SETTINGS after checkpoints were written without them: their value then.
_EARLIER_DEFAULTS = {"model.config": "", "trainer.precision": "32", "focus.horizon": None, "focus.local": 0,
                    "focus.level2": None, "focus.level2_pool": "trained"}


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resume_settings(cfg: TrainConfig) -> dict:
    """The RESUME_SETTINGS of `cfg` as JSON values under dotted keys (``focus.k``, ``trainer.lr``, ...)."""
    flat = _flatten(json.loads(json.dumps(asdict(cfg))))
    return {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in RESUME_SETTINGS)}


def rng_state() -> dict:
    """Every random stream a training step could draw from (torch CPU and CUDA, NumPy, Python)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            log.warning("checkpoint holds CUDA RNG states of %d devices, this process sees %d: not restored",
                        len(state["cuda"]), torch.cuda.device_count())


def save_checkpoint(fm, opt, step: int, run: Path, cfg: TrainConfig) -> Path:
    """Save the resumable state after `step` optimizer steps (layout above); returns the step directory."""
    from focus_nemo.durable import durable_write

    ck = run / CHECKPOINT_DIR
    name = new_step_directory(ck, step)
    target = ck / name
    fm.save_adapter(target, extra={"step": step})
    state = {"step": step, "optimizer": opt.state_dict(), "rng": rng_state()}
    digest = durable_write(target / TRAINER_STATE, lambda f: torch.save(state, f))
    commit_checkpoint(ck, {"format": CHECKPOINT_FORMAT, "step": step, "directory": name,
                            "trainer_state_sha256": digest, "settings": resume_settings(cfg)})
    return target


def new_step_directory(ck: Path, step: int) -> str:
    """Create the directory a save of `step` writes into (under `ck`) and return its name."""
    import shutil

    ck.mkdir(parents=True, exist_ok=True)
    committed = committed_directory(ck)
    name, n = f"step-{step:08d}", 0
    while (ck / name).exists():
        if name != committed:  # left by a save that was interrupted before its commit
            shutil.rmtree(ck / name)
            break
        n += 1  # the committed checkpoint of this step stays intact until the new one is committed
        name = f"step-{step:08d}.{n}"
    (ck / name).mkdir()
    return name


def commit_checkpoint(ck: Path, record: dict) -> None:
    """Write the commit record (atomically, the commit point), then delete everything in `ck` but the
    record and the step directory it names (the previous checkpoint, leftovers of interrupted saves)."""
    import shutil

    from focus_nemo.durable import durable_write_bytes

    durable_write_bytes(ck / CHECKPOINT_RECORD, json.dumps(record, indent=2).encode())
    for entry in ck.iterdir():
        if entry.name in (CHECKPOINT_RECORD, record["directory"]):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            pass


def committed_directory(ck: Path) -> str | None:
    """The step directory the commit record names, if it can be read."""
    try:
        return str(json.loads((ck / CHECKPOINT_RECORD).read_text())["directory"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def load_checkpoint(fm, opt, run: Path, cfg: TrainConfig) -> tuple[int, dict | None]:
    """Restore the adapter and optimizer from ``<run>/checkpoint``; returns (step, RNG states), or
    (0, None) when there is no committed checkpoint or ``cfg.resume`` is false (which retires the
    checkpoint: the first save of the new run replaces it). The caller restores the RNG states right
    before its first step.

    Raises:
        ResumeError: the record or trainer state is unreadable or fails its checksum, the adapter is
            refused, or the checkpoint was written with other RESUME_SETTINGS; the message names the
            file or the setting.
    """
    import hashlib

    from focus_nemo.focus.adapter import load_adapter

    ck = run / CHECKPOINT_DIR
    record_path = ck / CHECKPOINT_RECORD
    restart = f"to start over, delete {ck} or set resume=false"
    if not cfg.resume:
        if record_path.is_file():  # start over: the old checkpoint must never be resumed into this run
            record_path.unlink()
            log.info("resume=false: %s is discarded", ck)
        return 0, None
    if not record_path.is_file():
        check_no_other_checkpoint(ck, restart)
        return 0, None
    try:
        record = json.loads(record_path.read_text())
        step, name, digest = int(record["step"]), str(record["directory"]), str(record["trainer_state_sha256"])
        saved = dict(record["settings"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ResumeError(f"{record_path}: unreadable checkpoint record ({type(e).__name__}: {e}); "
                          f"{restart}") from None
    if record.get("format") != CHECKPOINT_FORMAT:
        raise ResumeError(f"{record_path}: format {record.get('format')!r}, expected {CHECKPOINT_FORMAT!r}; {restart}")
    if Path(name).name != name or name in ("", ".", ".."):
        raise ResumeError(f"{record_path}: directory {name!r} is not a step directory of {ck}; {restart}")
    now = resume_settings(cfg)
    for key, value in _EARLIER_DEFAULTS.items():
        saved.setdefault(key, value)
    changed = [f"{key}: {saved.get(key, '(absent)')!r} in the checkpoint, {value!r} now"
               for key, value in now.items() if saved.get(key, "(absent)") != value]
    if changed:
        raise ResumeError(f"{record_path}: the checkpoint was written with other settings ({'; '.join(changed)}); "
                          f"resume with the same settings, or {restart}")
    target = ck / name
    state_path = target / TRAINER_STATE
    try:
        f = open(state_path, "rb")  # noqa: SIM115 - hashed, then read from the same open file
    except OSError as e:
        raise ResumeError(f"{state_path}: cannot read the trainer state ({e.strerror}); {restart}") from None
    with f:
        h = hashlib.sha256()
        while chunk := f.read(1 << 22):
            h.update(chunk)
        if h.hexdigest() != digest:
            raise ResumeError(f"{state_path}: checksum mismatch (file is {h.hexdigest()[:12]}..., "
                              f"{record_path.name} records {digest[:12]}...): the file is truncated or was "
                              f"modified; {restart}")
        f.seek(0)
        try:
            state = torch.load(f, weights_only=True, map_location="cpu")
            state_step, optimizer, rng = int(state["step"]), state["optimizer"], state["rng"]
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file; name it
            raise ResumeError(f"{state_path}: unreadable trainer state ({type(e).__name__}: {e}); "
                              f"{restart}") from None
    if state_step != step:
        raise ResumeError(f"{state_path}: holds step {state_step}, {record_path.name} records {step}; {restart}")
    try:
        meta = load_adapter(fm, target, strict_config=True)
    except (OSError, ValueError) as e:
        raise ResumeError(f"{e}; {restart}") from None
    if meta.get("step") != step:
        raise ResumeError(f"{target}: adapter of step {meta.get('step')}, {record_path.name} records {step}; "
                          f"{restart}")
    try:
        opt.load_state_dict(optimizer)
    except (ValueError, KeyError, RuntimeError) as e:
        raise ResumeError(f"{state_path}: optimizer state does not fit the trainable parameters ({e}); "
                          f"{restart}") from None
    log.info("resumed from %s at step %d", target, step)
    return step, rng


def check_no_other_checkpoint(ck: Path, restart: str) -> None:
    """No commit record: fine when nothing, or only an unfinished first save, is there; an error when a
    checkpoint of another layout (another backend, an older version) is, rather than silently starting over."""
    if not ck.is_dir():
        return
    markers = (TRAINER_STATE, "trainer_state.json", "adapter_config.json")
    other = sorted(p.name for p in ck.iterdir() if p.name in markers)
    if other:
        raise ResumeError(f"{ck}: holds a checkpoint without {CHECKPOINT_RECORD} ({', '.join(other)}), written by "
                          f"another backend or an older version; resume it with what wrote it, or {restart}")
    if any(ck.iterdir()):
        log.warning("%s: no committed checkpoint (none was completed, or resume=false discarded it); starting at "
                    "step 0", ck)


def open_train_log(run: Path, start: int):
    """``train_log.jsonl`` opened for appending (line-buffered) with only the records of steps before
    `start`: a killed run logs steps after its last checkpoint, which the resumed run takes (and logs)
    again. Lines cut short by a kill are dropped too."""
    from focus_nemo.durable import durable_write_bytes

    path = run / TRAIN_LOG
    if path.exists():
        kept, dropped = [], 0
        for line in path.read_bytes().splitlines():
            try:
                step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                step = None
            if isinstance(step, int) and step < start:
                kept.append(line + b"\n")
            else:
                dropped += 1
        if dropped:
            durable_write_bytes(path, b"".join(kept))
            log.info("%s: dropped %d record(s) of steps >= %d (they are run again)", path, dropped, start)
    return open(path, "a", buffering=1)
