"""Single-device FOCUS adapter training: sample real-DNA windows, draw k per step, optimise only
the Focus parameters, evaluate held-out fidelity, save the adapter.

`train(cfg)` is what the recipe calls. Everything that decides the run lives in `TrainConfig`.
Training resumes from ``<run_dir>/checkpoint`` (adapter tensors, optimizer state and step): the data
and the per-step ratio are functions of (seed, step), so a resumed run continues the same stream.
"""

from __future__ import annotations

import json
import logging
import math
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
    dtype: str = "float32"


@dataclass
class DataSection:
    train_fasta: str = "bundled:chr20_train"
    train_regions: list[str] = field(default_factory=list)  # empty = every record of the file
    val_fasta: str = "bundled:chr20_heldout"
    val_regions: list[str] = field(default_factory=list)
    sample_len: int = 4096  # bases per training sample (several windows)
    rc_prob: float = 0.5
    max_n_fraction: float = 0.1


@dataclass
class TrainerSection:
    backend: str = "single"  # single-device PyTorch loop
    accelerator: str = "cpu"  # cpu | gpu
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_steps: int = 300
    batch_size: int = 2
    grad_clip: float = 1.0


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

    return load_base_model(section.checkpoint, preset=section.preset, dtype=section.dtype)


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


def _save_checkpoint(fm: FocusModel, opt, step: int, run: Path) -> None:
    from focus_nemo.focus.adapter import atomic_write_bytes

    ck = run / "checkpoint"
    fm.save_adapter(ck, extra={"step": step})
    import io

    buf = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "step": step}, buf)
    atomic_write_bytes(ck / "trainer_state.pt", buf.getvalue())


def _load_checkpoint(fm: FocusModel, opt, run: Path) -> int:
    ck = run / "checkpoint"
    if not (ck / "trainer_state.pt").is_file():
        return 0
    fm.load_adapter(ck)
    state = torch.load(ck / "trainer_state.pt", weights_only=True, map_location="cpu")
    opt.load_state_dict(state["optimizer"])
    log.info("resumed from %s at step %d", ck, state["step"])
    return int(state["step"])


def train(cfg: TrainConfig) -> dict:
    """Train the adapter; returns the metrics also written to ``<run_dir>/metrics.json``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from torch.utils.tensorboard import SummaryWriter

    from focus_nemo.data import TrainWindowDataset, WindowSampler, open_genome
    from focus_nemo.evaluate import fidelity

    if cfg.trainer.backend != "single":
        raise ValueError(f"TrainerSection.backend: {cfg.trainer.backend!r} is not available; use 'single'")
    device = torch.device("cuda" if cfg.trainer.accelerator == "gpu" else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    base = load_base(cfg.model).to(device)
    fm = FocusModel(base, cfg.focus)
    params = [p for p in fm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay)
    start = _load_checkpoint(fm, opt, run) if cfg.resume else 0

    genome = open_genome(resolve_fasta(cfg.data.train_fasta))
    sampler = WindowSampler(genome, cfg.data.train_regions or list(genome.names), cfg.data.sample_len + 1,
                            seed=cfg.seed, rc_prob=cfg.data.rc_prob, max_n_fraction=cfg.data.max_n_fraction)
    data = TrainWindowDataset(sampler, cfg.trainer.batch_size, lowercase_weight=cfg.focus.lowercase_weight)
    held = [b.to(device) for b in eval_batches(cfg)]
    metrics: dict = {"start_step": start}
    if start == 0:
        metrics["before"] = fidelity(fm, held)
    writer = SummaryWriter(str(run / "tensorboard"))
    history = open(run / "train_log.jsonl", "a")
    t0 = time.time()
    with Progress(TextColumn("[bold]focus[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn()) as progress:
        task = progress.add_task("train", total=cfg.trainer.max_steps, completed=start, info="")
        for step in range(start, cfg.trainer.max_steps):
            for g in opt.param_groups:
                g["lr"] = _lr(cfg, step)
            k = ratio_for_step(cfg, step)
            batch = data.batch(step)
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
                ev = fidelity(fm, held)
                for n, v in ev.items():
                    writer.add_scalar(f"heldout/{n}", v, step)
            if cfg.save_every and (step + 1) % cfg.save_every == 0:
                _save_checkpoint(fm, opt, step + 1, run)
    history.close()
    _save_checkpoint(fm, opt, cfg.trainer.max_steps, run)
    fm.save_adapter(run / "adapter", extra={"steps": cfg.trainer.max_steps})
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
