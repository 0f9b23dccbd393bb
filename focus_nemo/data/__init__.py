"""Real-DNA data: FASTA files (plain, gzip, bgzip), chromosome splits, training and evaluation windows."""

from focus_nemo.data.assets import BUNDLED_DNA, bundled_dna, bundled_dna_dir, resolve_fasta
from focus_nemo.data.fasta import (
    FastaError,
    FastaFile,
    FastaFormatError,
    FastaPolicy,
    FastaWarning,
    Genome,
    RecordNotFoundError,
    canonical_name,
    default_cache_dir,
    open_genome,
)
from focus_nemo.data.regions import Region, parse_region
from focus_nemo.data.splits import Splits, make_splits, splits_from_config, tail_holdout
from focus_nemo.data.windows import (
    Batch,
    SamplerStats,
    TileDataset,
    TrainWindowDataset,
    Window,
    WindowSampler,
    loss_weights,
    make_batch,
    reverse_complement,
)

__all__ = [
    "BUNDLED_DNA", "Batch", "FastaError", "FastaFile", "FastaFormatError", "FastaPolicy", "FastaWarning", "Genome",
    "RecordNotFoundError", "Region", "SamplerStats", "Splits", "TileDataset", "TrainWindowDataset", "Window",
    "WindowSampler", "bundled_dna", "bundled_dna_dir", "canonical_name", "default_cache_dir", "loss_weights",
    "make_batch", "make_splits", "open_genome", "parse_region", "resolve_fasta", "reverse_complement",
    "splits_from_config", "tail_holdout",
]
