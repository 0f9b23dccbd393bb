"""Genomic regions: `Region` (bases ``[start, end)`` of a record) and `parse_region`, which reads the
samtools form (``chr1:1,001-2,000``, 1-based inclusive) or a record name."""

from __future__ import annotations

import re
from dataclasses import dataclass

_REGION = re.compile(r"^(?P<chrom>.+):(?P<start>[\d,]+)-(?P<end>[\d,]+)$")


@dataclass(frozen=True)
class Region:
    """Bases ``[start, end)`` (0-based, half open) of record `chrom`."""

    chrom: str
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"Region {self.chrom!r}: need 0 <= start <= end, got [{self.start}, {self.end})")

    def __len__(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:  # samtools style, 1-based inclusive
        return f"{self.chrom}:{self.start + 1}-{self.end}"


def parse_region(text: str, genome=None) -> Region | str:
    """``"chr1"`` -> ``"chr1"`` (whole record); ``"chr1:1,001-2,000"`` -> ``Region("chr1", 1000, 2000)``.

    With `genome`, a text that is itself a record name stays a name even if it contains ``:``.
    """
    if genome is not None and text in genome:
        return text
    m = _REGION.match(text.strip())
    if m is None:
        return text.strip()
    start, end = int(m["start"].replace(",", "")), int(m["end"].replace(",", ""))
    if start < 1 or end < start:
        raise ValueError(f"region {text!r}: need 1 <= start <= end (1-based, inclusive)")
    return Region(m["chrom"], start - 1, end)
