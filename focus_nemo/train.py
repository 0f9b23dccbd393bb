"""Train a FOCUS adapter: `train(cfg)` is what ``recipes/train_focus.py`` calls.

Everything that decides the run lives in `TrainConfig` (`focus_nemo.training.config`). `train` hands it
to the backend ``trainer.backend`` names: ``single`` (one device, `focus_nemo.training.single`) or ``nemo``
(NeMo/Megatron with tensor and data parallelism, `focus_nemo.nemo.trainer`). Both read the same data,
schedules, checkpoint protocol and held-out evaluation (`focus_nemo.training`), and return the metrics
they write to ``<run_dir>/metrics.json``: held-out fidelity before (a run that starts at step 0) and after
training, which `fidelity_table` prints.
"""

from __future__ import annotations

from focus_nemo.data.assets import resolve_fasta
from focus_nemo.training.checkpoint import ResumeError
from focus_nemo.training.config import (
    BACKENDS,
    PRECISIONS,
    DataSection,
    ModelSection,
    TrainConfig,
    TrainerSection,
    config_from_hydra,
)
from focus_nemo.training.heldout import fidelity_table
from focus_nemo.training.schedule import learning_rate, ratio_for_step
from focus_nemo.training.single import check_precision


def memory_report(cfg: TrainConfig) -> str:
    """The per-device memory estimate of one training step of `cfg` (`focus_nemo.profiling.training_memory`),
    as ``recipes/train_focus.py --dry-run`` prints it."""
    from focus_nemo.profiling.training_memory import estimate_for_config, format_memory

    t = cfg.trainer
    ratios = cfg.focus.train_ratios or [cfg.focus.k]
    title = (f"memory per device (estimate): {t.backend} backend, TP={t.tensor_model_parallel_size}, micro-batch "
             f"{t.batch_size}, {cfg.data.sample_len} bases, k >= {min(ratios)}, precision {t.precision}, "
             f"distillation {'on' if cfg.focus.distill_weight > 0 else 'off'}")
    return format_memory(estimate_for_config(cfg), title)


def train(cfg: TrainConfig) -> dict:
    """Train the adapter with the backend ``cfg.trainer.backend`` names; returns its metrics."""
    if cfg.trainer.backend == "nemo":
        from focus_nemo.nemo.trainer import train_nemo

        return train_nemo(cfg)
    from focus_nemo.training.single import train_single

    return train_single(cfg)


__all__ = ["BACKENDS", "PRECISIONS", "DataSection", "ModelSection", "ResumeError", "TrainConfig", "TrainerSection",
           "check_precision", "config_from_hydra", "fidelity_table", "learning_rate", "memory_report",
           "ratio_for_step", "resolve_fasta", "train"]
