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


def train(cfg: TrainConfig) -> dict:
    """Train the adapter with the backend ``cfg.trainer.backend`` names; returns its metrics."""
    if cfg.trainer.backend == "nemo":
        from focus_nemo.nemo.trainer import train_nemo

        return train_nemo(cfg)
    from focus_nemo.training.single import train_single

    return train_single(cfg)


__all__ = ["BACKENDS", "PRECISIONS", "DataSection", "ModelSection", "ResumeError", "TrainConfig", "TrainerSection",
           "check_precision", "config_from_hydra", "fidelity_table", "learning_rate", "ratio_for_step",
           "resolve_fasta", "train"]
