"""The data both trainers read: the seeded training-window sampler, the held-out batches (FASTA specs such
as ``bundled:chr20_train`` resolved by `focus_nemo.data.assets.resolve_fasta`), and the frozen base."""

from __future__ import annotations

import numpy as np
import torch

from focus_nemo.data.assets import resolve_fasta
from focus_nemo.training.config import ModelSection, TrainConfig


def train_sampler(cfg: TrainConfig):
    """The `WindowSampler` of training windows (``data.sample_len + 1`` bases: inputs and next-base targets);
    window s is a function of (seed, s), so every backend and every resumed run reads the same data."""
    from focus_nemo.data import WindowSampler, open_genome

    genome = open_genome(resolve_fasta(cfg.data.train_fasta))
    return WindowSampler(genome, cfg.data.train_regions or list(genome.names), cfg.data.sample_len + 1,
                         seed=cfg.seed, rc_prob=cfg.data.rc_prob, max_n_fraction=cfg.data.max_n_fraction)


def eval_batches(cfg: TrainConfig) -> list[torch.Tensor]:
    """The held-out batches (``eval_samples`` windows of ``eval_len + 1`` bases from ``data.val_fasta`` /
    ``data.val_regions``), each [1, eval_len + 1] raw byte ids."""
    from focus_nemo.data import WindowSampler, open_genome

    genome = open_genome(resolve_fasta(cfg.data.val_fasta))
    regions = cfg.data.val_regions or list(genome.names)
    sampler = WindowSampler(genome, regions, cfg.eval_len + 1, seed=cfg.seed + 1_000_003,
                            max_n_fraction=cfg.data.max_n_fraction)
    return [torch.from_numpy(sampler.sample(i).seq.astype(np.int64))[None] for i in range(cfg.eval_samples)]


def load_base(section: ModelSection):
    """The frozen base model of a model section (single-device `Evo2Model`)."""
    from focus_nemo.loading import load_base_model

    return load_base_model(section.checkpoint, preset=section.preset, dtype=section.dtype, config=section.config)
