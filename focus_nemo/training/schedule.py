"""What each training step uses, as functions of (settings, global step) alone: the learning rate and the
compression ratio k. Both backends call them, so a resumed run continues exactly where it stopped."""

from __future__ import annotations

import math

import numpy as np

from focus_nemo.training.config import TrainConfig


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over ``trainer.warmup_steps``, then cosine decay to zero at ``trainer.max_steps``."""
    o = cfg.trainer
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    frac = (step - o.warmup_steps) / max(1, o.max_steps - o.warmup_steps)
    return o.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def ratio_for_step(cfg: TrainConfig, step: int) -> int:
    """k for this step: drawn from focus.train_ratios (randomised compression, DESIGN D8)."""
    ratios = cfg.focus.train_ratios or [cfg.focus.k]
    rng = np.random.default_rng([cfg.seed, step, 7])
    return int(ratios[int(rng.integers(len(ratios)))])
