"""Planted repeats: copies of a segment placed later in the same sample, as genomes have them.

A pretraining sample of real DNA rarely holds a copy that the model could recall within a few kb, so a
model trained on real DNA alone learns composition statistics and never learns to copy. `plant_repeats`
copies segments of a sample to later places in it: exact copies, diverged copies (point substitutions and
small indels) and reverse complements, with lengths and distances spread log-uniformly, so that copying pays
at every distance a sample spans. Real repeats in the sample stay as they are. Everything is drawn from the
caller's `numpy.random.Generator`, so a resumed run plants the same copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from focus_nemo.data.edits import indels, reverse_complement, substitute

__all__ = ["RepeatConfig", "indels", "plant_repeats", "reverse_complement", "substitute"]

@dataclass
class RepeatConfig:
    """How `plant_repeats` plants copies into a pretraining sample.

    Attributes:
        fraction: share of samples that get planted copies (the others stay real DNA).
        coverage: in a sample that gets copies, the share of its bases overwritten by copies (drawn
            uniformly between 0 and this, per sample).
        min_len, max_len: copy lengths, log-uniform between them (bases).
        min_distance: smallest gap between the end of the source and the start of the copy; the largest
            is what the sample length allows. Gaps are log-uniform, so every scale of distance is seen.
        exact, diverged, reverse: relative frequencies of exact copies, diverged copies and reverse
            complements (a diverged copy may also be reverse complemented with probability `reverse`).
        substitution_rate: (low, high) per-base substitution rate of a diverged copy, drawn uniformly.
        indel_rate: per-base rate of small indels in a diverged copy; indel_max: their longest length.
    """

    fraction: float = 0.75
    coverage: float = 0.4
    min_len: int = 24
    max_len: int = 1024
    min_distance: int = 0
    exact: float = 0.5
    diverged: float = 0.3
    reverse: float = 0.2
    substitution_rate: tuple[float, float] = (0.01, 0.1)
    indel_rate: float = 0.005
    indel_max: int = 3

    def check(self, field: str = "RepeatConfig") -> None:
        def bad(name, why):
            raise ValueError(f"{field}.{name}: {why}")

        if not 0 <= self.fraction <= 1:
            bad("fraction", f"must lie in [0, 1], got {self.fraction}")
        if not 0 <= self.coverage < 1:
            bad("coverage", f"must lie in [0, 1), got {self.coverage}")
        if not 1 <= self.min_len <= self.max_len:
            bad("min_len", f"need 1 <= min_len <= max_len, got {self.min_len} and {self.max_len}")
        if self.min_distance < 0:
            bad("min_distance", f"must be >= 0, got {self.min_distance}")
        weights = (self.exact, self.diverged, self.reverse)
        if min(weights) < 0 or sum(weights) <= 0:
            bad("exact", f"exact/diverged/reverse must be >= 0 with a positive sum, got {weights}")
        lo, hi = (float(x) for x in self.substitution_rate)
        if not 0 <= lo <= hi <= 1:
            bad("substitution_rate", f"need 0 <= low <= high <= 1, got {tuple(self.substitution_rate)}")
        if not 0 <= self.indel_rate < 1 or self.indel_max < 1:
            bad("indel_rate", f"need 0 <= indel_rate < 1 and indel_max >= 1, got {self.indel_rate}, "
                              f"{self.indel_max}")


def _log_uniform_int(rng: np.random.Generator, lo: int, hi: int) -> int:
    """An integer in [lo, hi], log-uniform over [lo + 1, hi + 1] (so lo = 0 works)."""
    x = int(math.floor(math.exp(rng.uniform(math.log(lo + 1), math.log(hi + 2))))) - 1
    return min(hi, max(lo, x))


def plant_repeats(seq: np.ndarray, cfg: RepeatConfig, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Copies planted into a sample of real DNA.

    Args:
        seq: the sample (bytes, any case); not modified.
        cfg: what to plant.
        rng: the random stream (all draws come from it).

    Returns:
        (the sample with copies, number of bases overwritten by copies). The length never changes: a copy
        overwrites the bases at its destination, and a diverged copy whose indels changed its length is cut
        or continued with the source's next bases to fill its slot.
    """
    out = np.array(seq, dtype=np.uint8, copy=True)
    n = len(out)
    if rng.random() >= cfg.fraction or n < 2 * cfg.min_len + cfg.min_distance:
        return out, 0
    target = rng.uniform(0, cfg.coverage) * n
    weights = np.array([cfg.exact, cfg.diverged, cfg.reverse], dtype=np.float64)
    weights /= weights.sum()
    planted, tries = 0, 0
    while planted < target and tries < 1000:
        tries += 1
        length = _log_uniform_int(rng, cfg.min_len, min(cfg.max_len, (n - cfg.min_distance) // 2))
        if length < cfg.min_len:
            continue
        max_gap = n - 2 * length
        gap = _log_uniform_int(rng, cfg.min_distance, max_gap)
        src = int(rng.integers(0, n - 2 * length - gap + 1))
        dst = src + length + gap
        kind = rng.choice(3, p=weights)
        piece = out[src: src + length]
        if kind == 1:
            lo, hi = cfg.substitution_rate
            piece = substitute(indels(piece, cfg.indel_rate, cfg.indel_max, rng), rng.uniform(lo, hi), rng)
            if rng.random() < cfg.reverse:
                piece = reverse_complement(piece)
            if len(piece) < length:  # deletions: continue with the source's next bases
                piece = np.concatenate([piece, out[src + length: src + 2 * length - len(piece)]])
            piece = piece[:length]
        elif kind == 2:
            piece = reverse_complement(piece)
        out[dst: dst + length] = piece
        planted += length
    return out, planted
