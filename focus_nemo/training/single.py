"""Single-device FOCUS adapter training: sample real-DNA windows, draw k per step, optimise only the Focus
parameters, evaluate held-out fidelity, save the adapter (`train_single`, the ``single`` backend).

Training resumes from ``<run_dir>/checkpoint`` (`focus_nemo.training.checkpoint`): the data, the per-step
ratio and the learning rate are functions of (seed, step) (`focus_nemo.training.schedule`), so a run killed
at any instant and started again with the same settings reaches the same adapter as one that was never
interrupted (bit for bit on a CPU with the same thread count), and its ``train_log.jsonl`` holds each step
once.

Precision (DESIGN D10): the adapter parameters and the optimizer state are fp32 whatever the base's dtype
(master weights); `trainer.precision` sets the dtype the forward computes in: ``32`` (fp32; the base must be
fp32) or ``bf16-mixed`` (autocast to bf16; the base is fp32 or bf16). ``16-mixed`` needs loss scaling, which
this loop does not do: it is refused (`check_precision`), as are combinations that contradict each other.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from focus_nemo.focus import FocusModel, focus_loss
from focus_nemo.training.checkpoint import load_checkpoint, open_train_log, save_checkpoint, set_rng_state
from focus_nemo.training.config import TrainConfig
from focus_nemo.training.data import load_base, train_sampler
from focus_nemo.training.heldout import HeldOut
from focus_nemo.training.optim import adamw_param_groups
from focus_nemo.training.schedule import learning_rate, ratio_for_step

# trainer.precision -> dtype of the forward computation on the single backend.
COMPUTE_DTYPES = {"32": torch.float32, "bf16-mixed": torch.bfloat16}


def check_precision(cfg: TrainConfig) -> torch.dtype:
    """The compute dtype of a single-backend run; refuses what `trainer.precision` cannot mean here."""
    from focus_nemo.loading import parse_dtype

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


def train_single(cfg: TrainConfig) -> dict:
    """Train the adapter on one device; returns the metrics also written to ``<run_dir>/metrics.json``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    from torch.utils.tensorboard import SummaryWriter

    from focus_nemo.data import TrainWindowDataset

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
    # Weight decay as Megatron's optimizer applies it (the nemo backend): not on biases or 1-D parameters.
    opt = torch.optim.AdamW(adamw_param_groups(fm.focus_parameters().items(), cfg.trainer.weight_decay),
                            lr=cfg.trainer.lr)
    start, rng = load_checkpoint(fm, opt, run, cfg)

    data = TrainWindowDataset(train_sampler(cfg), cfg.trainer.batch_size, lowercase_weight=cfg.focus.lowercase_weight)
    held = HeldOut(cfg, device)
    metrics: dict = {"start_step": start}
    if start == 0:
        with autocast():
            metrics["before"] = held.measure(fm)
    writer = SummaryWriter(str(run / "tensorboard"), purge_step=start)  # hides events of steps run again
    history = open_train_log(run, start)
    if rng is not None:
        set_rng_state(rng)  # last before the loop: the first step draws what it drew in the killed run
    t0 = time.time()
    with Progress(TextColumn("[bold]focus[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn()) as progress:
        task = progress.add_task("train", total=cfg.trainer.max_steps, completed=start, info="")
        for step in range(start, cfg.trainer.max_steps):
            lr = learning_rate(cfg, step)
            for g in opt.param_groups:
                g["lr"] = lr
            k = ratio_for_step(cfg, step)
            batch = data.batch(step)
            with autocast():
                out = focus_loss(fm, batch.raw.to(device), k=k)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            gn = torch.nn.utils.clip_grad_norm_(params, cfg.trainer.grad_clip) if cfg.trainer.grad_clip else None
            opt.step()
            rec = {"step": step, "k": k, "lr": lr, **{n: float(v.detach()) for n, v in out.items()}}
            if gn is not None:
                rec["grad_norm"] = float(gn)
            history.write(json.dumps(rec) + "\n")
            for n, v in rec.items():
                if n != "step":
                    writer.add_scalar(f"train/{n}", v, step)
            progress.update(task, advance=1, info=f"loss {rec['loss']:.4f} k={k}")
            if held.due(step):
                with autocast():
                    ev = held.measure(fm)
                for n, v in ev.items():
                    writer.add_scalar(f"heldout/{n}", v, step)
            if cfg.save_every and (step + 1) % cfg.save_every == 0:
                save_checkpoint(fm, opt, step + 1, run, cfg)
    history.close()
    if start < cfg.trainer.max_steps and not (cfg.save_every and cfg.trainer.max_steps % cfg.save_every == 0):
        save_checkpoint(fm, opt, cfg.trainer.max_steps, run, cfg)  # else the loop's last save holds max_steps
    fm.save_adapter(run / "adapter", extra={"steps": cfg.trainer.max_steps})
    with autocast():
        metrics["after"] = held.measure(fm)
    metrics["train_seconds"] = round(time.time() - t0, 1)
    for n, v in metrics["after"].items():
        writer.add_scalar(f"heldout/{n}", v, cfg.trainer.max_steps)
    writer.close()
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
