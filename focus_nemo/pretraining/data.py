"""Pretraining samples: random windows of a chromosome region (few N), with planted repeats."""

from __future__ import annotations

import numpy as np

from focus_nemo.pretraining.repeats import RepeatConfig, plant_repeats


class ChromWindows:
    """Random fixed-length windows of one chromosome region, skipping N-rich ones (counted).

    With `repeats`, each window then gets planted copies (`plant_repeats`), drawn from the same random
    stream, so that a saved and restored ``rng`` state reproduces the samples exactly; ``planted`` counts
    the bases overwritten by copies.
    """

    def __init__(self, seq: np.ndarray, length: int, max_n_fraction: float, rng: np.random.Generator,
                 repeats: RepeatConfig | None = None) -> None:
        self.seq, self.length, self.max_n, self.rng = seq, length, max_n_fraction, rng
        self.repeats = repeats if repeats is not None and repeats.fraction > 0 else None
        self.skipped = 0
        self.planted = 0
        if len(seq) < length:
            raise ValueError(f"region of {len(seq)} bases is shorter than the window {length}")

    def sample(self) -> np.ndarray:
        for _ in range(10_000):
            s = int(self.rng.integers(0, len(self.seq) - self.length + 1))
            w = self.seq[s: s + self.length]
            if np.mean((w == ord("N")) | (w == ord("n"))) <= self.max_n:
                if self.repeats is None:
                    return w
                w, n = plant_repeats(w, self.repeats, self.rng)
                self.planted += n
                return w
            self.skipped += 1
        raise RuntimeError("could not find a window with few enough N bases in 10000 draws")


def read_region(fasta: str, chrom: str, start: int, end: int) -> np.ndarray:
    """Bases [start, end) of a record, case kept (chr1/1 aliases and errors as in focus_nemo.data)."""
    from focus_nemo.data import open_genome

    return open_genome(fasta).fetch(chrom, start, end)
