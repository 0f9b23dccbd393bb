"""Held-out evaluation during training, the same for both backends: `eval_samples` windows of `eval_len`
bases from ``data.val_fasta`` / ``data.val_regions`` (`focus_nemo.training.data.eval_batches`), measured
with `focus_nemo.evaluation.metrics.fidelity` before training (a run that starts at step 0), every
`eval_every` steps and after training."""

from __future__ import annotations

import torch

from focus_nemo.evaluation.metrics import fidelity
from focus_nemo.training.config import TrainConfig
from focus_nemo.training.data import eval_batches


class HeldOut:
    """The held-out batches of a run on `device`, and when and how they are measured."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.every = cfg.eval_every
        self.batches = [b.to(device) for b in eval_batches(cfg)]

    def due(self, step: int) -> bool:
        """Whether held-out fidelity is measured after step `step` (0-based) besides before and after training."""
        return bool(self.every) and (step + 1) % self.every == 0

    def measure(self, fm) -> dict:
        """`fidelity` of a FOCUS model on the held-out batches (a collective for tensor-parallel models)."""
        return fidelity(fm, self.batches)


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
