"""Single-device FOCUS adapter training: sample real-DNA windows, draw k per step, optimise only
the Focus parameters, evaluate held-out fidelity, save the adapter.

`train(cfg)` is what the recipe calls. Everything that decides the run lives in `TrainConfig`.
Training resumes from ``<run_dir>/checkpoint`` (adapter tensors, optimizer state, RNG states and
step, committed atomically and verified by checksum): the data, the per-step ratio and the learning
rate are functions of (seed, step), so a run killed at any instant and started again with the same
settings reaches the same adapter as one that was never interrupted (bit for bit on a CPU with the
same thread count), and its ``train_log.jsonl`` holds each step once. Resuming with settings that
change the trajectory, or from a damaged checkpoint, is an error that names the setting or the file
(`ResumeError`).

Precision (DESIGN D10): the adapter parameters and the optimizer state are fp32 whatever the base's dtype
(master weights); `trainer.precision` sets the dtype the forward computes in: ``32`` (fp32; the base must be
fp32) or ``bf16-mixed`` (autocast to bf16; the base is fp32 or bf16). ``16-mixed`` needs loss scaling, which
this loop does not do: it is refused (`check_precision`), as are combinations that contradict each other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from focus_nemo.focus import FocusConfig, FocusModel, focus_loss

log = logging.getLogger(__name__)


@dataclass
class ModelSection:
    checkpoint: str = "embedded"  # a checkpoint path (any format load_evo2 reads) or "embedded"
    preset: str = "tiny"  # used only when checkpoint is "random" (tests)
    dtype: str = "float32"  # the frozen base's weights (the precision policy keeps Hyena filters fp32)
    # Config of a checkpoint path: a preset name (e.g. 7b-262k) or Arc's YAML (evo2-7b-262k.yml); "" = the
    # checkpoint's own (refused for Arc files whose shapes do not determine it).
    config: str = ""


@dataclass
class DataSection:
    train_fasta: str = "bundled:chr20_train"
    train_regions: list[str] = field(default_factory=list)  # empty = every record of the file
    val_fasta: str = "bundled:chr20_heldout"
    val_regions: list[str] = field(default_factory=list)
    sample_len: int = 4096  # bases per training sample (several windows)
    rc_prob: float = 0.5
    max_n_fraction: float = 0.1


BACKENDS = ("single", "nemo")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")


@dataclass
class TrainerSection:
    backend: str = "single"  # single: one-device PyTorch loop; nemo: NeMo/Megatron (TP/PP/DP)
    accelerator: str = "cpu"  # cpu | gpu
    devices: int = 1  # processes per node (GPUs per node)
    num_nodes: int = 1
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    precision: str = "32"  # 32 | bf16-mixed | 16-mixed
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_steps: int = 300
    batch_size: int = 2
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"TrainerSection.backend: {self.backend!r} is not one of {BACKENDS}")
        if self.accelerator not in ("cpu", "gpu"):
            raise ValueError(f"TrainerSection.accelerator: {self.accelerator!r} is not 'cpu' or 'gpu'")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainerSection.precision: {self.precision!r} is not one of {PRECISIONS}")
        for name in ("devices", "num_nodes", "tensor_model_parallel_size", "pipeline_model_parallel_size",
                     "max_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainerSection.{name}: must be >= 1, got {getattr(self, name)}")
        world = self.devices * self.num_nodes
        mp = self.tensor_model_parallel_size * self.pipeline_model_parallel_size
        if world % mp:
            raise ValueError(f"TrainerSection.tensor_model_parallel_size: TP x PP = {mp} does not divide "
                             f"devices x num_nodes = {world}")
        if self.backend == "single" and world != 1:
            raise ValueError(f"TrainerSection.devices: the single backend runs one process; got devices x "
                             f"num_nodes = {world} (use backend: nemo)")

    @property
    def data_parallel_size(self) -> int:
        mp = self.tensor_model_parallel_size * self.pipeline_model_parallel_size
        return self.devices * self.num_nodes // mp


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    focus: FocusConfig = field(default_factory=lambda: FocusConfig(k=100, window=1024))
    data: DataSection = field(default_factory=DataSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    eval_samples: int = 8
    eval_len: int = 4096
    eval_every: int = 0  # 0 = only before and after training
    log_every: int = 10
    save_every: int = 50
    seed: int = 0
    run_dir: str = "runs/focus"
    resume: bool = True
    threads: int = 0


def config_from_hydra(cfg) -> TrainConfig:
    """Validate a composed Hydra/OmegaConf config against the typed schema (errors name the key)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), raw)
    return OmegaConf.to_object(merged)


def resolve_fasta(spec: str) -> str:
    if spec.startswith("bundled:"):
        from focus_nemo.data import bundled_dna

        return str(bundled_dna(spec.split(":", 1)[1]))
    return spec


def load_base(section: ModelSection):
    from focus_nemo.inference import load_base_model

    return load_base_model(section.checkpoint, preset=section.preset, dtype=section.dtype, config=section.config)


# trainer.precision -> dtype of the forward computation on the single backend.
COMPUTE_DTYPES = {"32": torch.float32, "bf16-mixed": torch.bfloat16}


def check_precision(cfg: TrainConfig) -> torch.dtype:
    """The compute dtype of a single-backend run; refuses what `trainer.precision` cannot mean here."""
    from focus_nemo.inference import parse_dtype

    precision, base = cfg.trainer.precision, parse_dtype(cfg.model.dtype)
    if precision not in COMPUTE_DTYPES:
        raise ValueError(f"trainer.precision: {precision!r} is not supported by the single backend (fp16 needs loss "
                         f"scaling); use one of {sorted(COMPUTE_DTYPES)} or trainer.backend=nemo")
    compute = COMPUTE_DTYPES[precision]
    if compute == torch.float32 and base != torch.float32:
        raise ValueError(f"trainer.precision: '32' computes in float32, but model.dtype={cfg.model.dtype!r} stores "
                         "the base in 16 bits; set trainer.precision=bf16-mixed or model.dtype=float32")
    if base not in (torch.float32, compute):
        raise ValueError(f"trainer.precision: {precision!r} computes in {str(compute).removeprefix('torch.')}, but "
                         f"model.dtype={cfg.model.dtype!r} stores the base in another 16-bit dtype; set model.dtype "
                         f"to float32 or {str(compute).removeprefix('torch.')}")
    return compute


def compute_context(device: torch.device, compute: torch.dtype):
    """Autocast to the compute dtype (fp32 adapter weights meet a 16-bit base in every matmul), or nothing."""
    if compute == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=compute)


def fp32_adapter_(fm: FocusModel) -> list[torch.nn.Parameter]:
    """Make the trainable (adapter) parameters fp32 master weights in place; returns them."""
    params = [p for p in fm.parameters() if p.requires_grad]
    for p in params:
        if p.dtype != torch.float32:
            p.data = p.data.float()
    return params


def ratio_for_step(cfg: TrainConfig, step: int) -> int:
    """k for this step: drawn from focus.train_ratios (randomised compression, DESIGN D8)."""
    ratios = cfg.focus.train_ratios or [cfg.focus.k]
    rng = np.random.default_rng([cfg.seed, step, 7])
    return int(ratios[int(rng.integers(len(ratios)))])


def eval_batches(cfg: TrainConfig) -> list[torch.Tensor]:
    from focus_nemo.data import WindowSampler, open_genome

    genome = open_genome(resolve_fasta(cfg.data.val_fasta))
    regions = cfg.data.val_regions or list(genome.names)
    sampler = WindowSampler(genome, regions, cfg.eval_len + 1, seed=cfg.seed + 1_000_003,
                            max_n_fraction=cfg.data.max_n_fraction)
    return [torch.from_numpy(sampler.sample(i).seq.astype(np.int64))[None] for i in range(cfg.eval_samples)]



def _lr(cfg: TrainConfig, step: int) -> float:
    o = cfg.trainer
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    frac = (step - o.warmup_steps) / max(1, o.max_steps - o.warmup_steps)
    return o.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


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
_EARLIER_DEFAULTS = {"model.config": "", "trainer.precision": "32"}


def _flatten(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _resume_settings(cfg: TrainConfig) -> dict:
    """The RESUME_SETTINGS of `cfg` as JSON values under dotted keys (``focus.k``, ``trainer.lr``, ...)."""
    flat = _flatten(json.loads(json.dumps(asdict(cfg))))
    return {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in RESUME_SETTINGS)}


def _rng_state() -> dict:
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


def _set_rng_state(state: dict) -> None:
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


def _save_checkpoint(fm: FocusModel, opt, step: int, run: Path, cfg: TrainConfig) -> Path:
    """Save the resumable state after `step` optimizer steps (layout above); returns the step directory."""
    from focus_nemo.durable import durable_write

    ck = run / CHECKPOINT_DIR
    name = _new_step_directory(ck, step)
    target = ck / name
    fm.save_adapter(target, extra={"step": step})
    state = {"step": step, "optimizer": opt.state_dict(), "rng": _rng_state()}
    digest = durable_write(target / TRAINER_STATE, lambda f: torch.save(state, f))
    _commit_checkpoint(ck, {"format": CHECKPOINT_FORMAT, "step": step, "directory": name,
                            "trainer_state_sha256": digest, "settings": _resume_settings(cfg)})
    return target


def _new_step_directory(ck: Path, step: int) -> str:
    """Create the directory a save of `step` writes into (under `ck`) and return its name."""
    import shutil

    ck.mkdir(parents=True, exist_ok=True)
    committed = _committed_directory(ck)
    name, n = f"step-{step:08d}", 0
    while (ck / name).exists():
        if name != committed:  # left by a save that was interrupted before its commit
            shutil.rmtree(ck / name)
            break
        n += 1  # the committed checkpoint of this step stays intact until the new one is committed
        name = f"step-{step:08d}.{n}"
    (ck / name).mkdir()
    return name


def _commit_checkpoint(ck: Path, record: dict) -> None:
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


def _committed_directory(ck: Path) -> str | None:
    """The step directory the commit record names, if it can be read."""
    try:
        return str(json.loads((ck / CHECKPOINT_RECORD).read_text())["directory"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def _load_checkpoint(fm: FocusModel, opt, run: Path, cfg: TrainConfig) -> tuple[int, dict | None]:
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
        _check_no_other_checkpoint(ck, restart)
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
    now = _resume_settings(cfg)
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


def _check_no_other_checkpoint(ck: Path, restart: str) -> None:
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


def _open_train_log(run: Path, start: int):
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


def train(cfg: TrainConfig) -> dict:
    """Train the adapter; returns the metrics also written to ``<run_dir>/metrics.json``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from torch.utils.tensorboard import SummaryWriter

    from focus_nemo.data import TrainWindowDataset, WindowSampler, open_genome
    from focus_nemo.evaluate import fidelity

    if cfg.trainer.backend == "nemo":
        from focus_nemo.nemo.lightning import train_nemo

        return train_nemo(cfg)
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    compute = check_precision(cfg)
    autocast = lambda: compute_context(device, compute)  # noqa: E731
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    base = load_base(cfg.model).to(device)
    fm = FocusModel(base, cfg.focus)
    params = fp32_adapter_(fm)
    opt = torch.optim.AdamW(params, lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay)
    start, rng = _load_checkpoint(fm, opt, run, cfg)

    genome = open_genome(resolve_fasta(cfg.data.train_fasta))
    sampler = WindowSampler(genome, cfg.data.train_regions or list(genome.names), cfg.data.sample_len + 1,
                            seed=cfg.seed, rc_prob=cfg.data.rc_prob, max_n_fraction=cfg.data.max_n_fraction)
    data = TrainWindowDataset(sampler, cfg.trainer.batch_size, lowercase_weight=cfg.focus.lowercase_weight)
    held = [b.to(device) for b in eval_batches(cfg)]
    metrics: dict = {"start_step": start}
    if start == 0:
        with autocast():
            metrics["before"] = fidelity(fm, held)
    writer = SummaryWriter(str(run / "tensorboard"), purge_step=start)  # hides events of steps run again
    history = _open_train_log(run, start)
    if rng is not None:
        _set_rng_state(rng)  # last before the loop: the first step draws what it drew in the killed run
    t0 = time.time()
    with Progress(TextColumn("[bold]focus[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn()) as progress:
        task = progress.add_task("train", total=cfg.trainer.max_steps, completed=start, info="")
        for step in range(start, cfg.trainer.max_steps):
            for g in opt.param_groups:
                g["lr"] = _lr(cfg, step)
            k = ratio_for_step(cfg, step)
            batch = data.batch(step)
            with autocast():
                out = focus_loss(fm, batch.raw.to(device), k=k)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            gn = torch.nn.utils.clip_grad_norm_(params, cfg.trainer.grad_clip) if cfg.trainer.grad_clip else None
            opt.step()
            rec = {"step": step, "k": k, "lr": _lr(cfg, step), **{n: float(v.detach()) for n, v in out.items()}}
            if gn is not None:
                rec["grad_norm"] = float(gn)
            history.write(json.dumps(rec) + "\n")
            for n, v in rec.items():
                if n != "step":
                    writer.add_scalar(f"train/{n}", v, step)
            progress.update(task, advance=1, info=f"loss {rec['loss']:.4f} k={k}")
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0:
                with autocast():
                    ev = fidelity(fm, held)
                for n, v in ev.items():
                    writer.add_scalar(f"heldout/{n}", v, step)
            if cfg.save_every and (step + 1) % cfg.save_every == 0:
                _save_checkpoint(fm, opt, step + 1, run, cfg)
    history.close()
    if start < cfg.trainer.max_steps and not (cfg.save_every and cfg.trainer.max_steps % cfg.save_every == 0):
        _save_checkpoint(fm, opt, cfg.trainer.max_steps, run, cfg)  # else the loop's last save holds max_steps
    fm.save_adapter(run / "adapter", extra={"steps": cfg.trainer.max_steps})
    with autocast():
        metrics["after"] = fidelity(fm, held)
    metrics["train_seconds"] = round(time.time() - t0, 1)
    for n, v in metrics["after"].items():
        writer.add_scalar(f"heldout/{n}", v, cfg.trainer.max_steps)
    writer.close()
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def fidelity_table(metrics: dict, cfg: TrainConfig) -> None:
    """Print held-out fidelity (before/after training) as a table on the console."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Held-out fidelity, k={cfg.focus.k}, W={cfg.focus.window} "
                    f"(positions after the first window; distances over A/C/G/T)")
    for col in ("model", "bits/base", "mean |dp(true)|", "KL(full || model)", "JS"):
        t.add_column(col, justify="right")
    after = metrics["after"]
    t.add_row("full context", f"{after['bits_full']:.4f}", "0", "0", "0")
    rows = [("truncation", "truncation", after)]
    if "before" in metrics:
        rows.append(("FOCUS, untrained", "focus", metrics["before"]))
    rows.append(("FOCUS, trained", "focus", after))
    for label, key, m in rows:
        t.add_row(label, f"{m['bits_' + key]:.4f}", f"{m[key + '_abs_dp_true']:.5f}", f"{m[key + '_kl']:.2e}",
                  f"{m[key + '_js']:.2e}")
    Console().print(t)
