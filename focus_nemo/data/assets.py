"""Paths of the real DNA bundled with the package (``focus_nemo/assets/dna``, provenance in its README)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

BUNDLED_DNA: dict[str, str] = {
    "chr20_train": "grch37_chr20_train.fa.gz",  # record chr20_train: GRCh37 chr20:33,000,001-35,000,000
    "chr20_heldout": "grch37_chr20_heldout.fa.gz",  # record chr20_heldout: GRCh37 chr20:50,000,001-51,000,000
    "chr17_softmasked": "hg19_chr17_part_softmasked.fa",  # record chr17: 40 kb, repeats in lower case
    "chr1_chr2_first100kb": "grch37_chr1_chr2_first100kb.fa.gz",  # records 1, 2, 3
    "phage_lambda": "phage_lambda.fa.gz",  # record NC_001416.1 (out of distribution)
}
"""Short name -> file name in the bundled folder."""


def bundled_dna_dir() -> Path:
    """The folder holding the bundled FASTA files and their indexes."""
    return Path(str(files("focus_nemo") / "assets" / "dna"))


def bundled_dna(name: str) -> Path:
    """Path of a bundled FASTA file by short name (a key of `BUNDLED_DNA`)."""
    if name not in BUNDLED_DNA:
        raise KeyError(f"no bundled DNA named {name!r}; available: {', '.join(BUNDLED_DNA)}")
    return bundled_dna_dir() / BUNDLED_DNA[name]


def resolve_fasta(spec: str) -> str:
    """``bundled:NAME`` -> the bundled file's path (`bundled_dna`); anything else is a path, returned as is."""
    if spec.startswith("bundled:"):
        return str(bundled_dna(spec.split(":", 1)[1]))
    return spec
