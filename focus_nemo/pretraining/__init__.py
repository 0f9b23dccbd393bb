"""Pretraining of the small embedded Evo-2-architecture backbone: samples with planted repeats
(`repeats`, `data`), long-filter poles that decay by construction (`poles`), the resumable loop (`loop`)
and the evidence of what a backbone does with context (`evidence`; recall: `focus_nemo.evaluation.recall`)."""

from focus_nemo.pretraining.data import ChromWindows, read_region
from focus_nemo.pretraining.evidence import heldout_sequences, long_context_evidence, markov_bits_per_base
from focus_nemo.pretraining.loop import (
    PretrainConfig,
    PretrainResumeError,
    add_slow_modes,
    check_slow_mode_decay,
    heldout_bits,
    pretrain,
    project_poles,
    read_pretrain_checkpoint,
    save_pretrain_checkpoint,
)
from focus_nemo.pretraining.repeats import RepeatConfig, plant_repeats

__all__ = ["ChromWindows", "PretrainConfig", "PretrainResumeError", "RepeatConfig", "add_slow_modes",
           "check_slow_mode_decay", "heldout_bits", "heldout_sequences", "long_context_evidence",
           "markov_bits_per_base", "plant_repeats", "pretrain", "project_poles", "read_pretrain_checkpoint",
           "read_region", "save_pretrain_checkpoint"]
