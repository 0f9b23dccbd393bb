"""Edits of DNA byte arrays: reverse complement, point substitutions, small indels (case kept)."""

from __future__ import annotations

import numpy as np

# Byte-wise complement: A<->T, C<->G in either case; every other byte (N, IUPAC codes) maps to itself.
_COMPLEMENT = np.arange(256, dtype=np.uint8)
for _a, _b in (b"AT", b"CG", b"at", b"cg"):
    _COMPLEMENT[_a], _COMPLEMENT[_b] = _b, _a
BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


def reverse_complement(seq: np.ndarray) -> np.ndarray:
    """Reverse complement of a byte array (case kept; non-ACGT bytes are their own complement)."""
    return _COMPLEMENT[np.asarray(seq, dtype=np.uint8)[::-1]]


def substitute(seq: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of `seq` in which each A/C/G/T base is replaced, with probability `rate`, by one of the other
    three (case kept); other bytes are never changed."""
    out = np.array(seq, dtype=np.uint8, copy=True)
    upper = out & 0xDF
    is_base = np.isin(upper, BASES)
    hit = is_base & (rng.random(len(out)) < rate)
    if hit.any():
        idx = np.flatnonzero(hit)
        cur = np.searchsorted(BASES, upper[idx])  # BASES is sorted: A C G T
        new = BASES[(cur + rng.integers(1, 4, len(idx))) % 4]
        out[idx] = new | (out[idx] & 0x20)  # keep lower case (soft-masking)
    return out


def indels(seq: np.ndarray, rate: float, max_len: int, rng: np.random.Generator) -> np.ndarray:
    """`seq` with small insertions (random bases) and deletions, each starting at a position with
    probability `rate`/2 and 1..`max_len` bases long."""
    if rate <= 0 or len(seq) == 0:
        return np.asarray(seq, dtype=np.uint8)
    pieces, i, n = [], 0, len(seq)
    events = np.flatnonzero(rng.random(n) < rate)
    for e in events:
        if e < i:
            continue
        pieces.append(seq[i:e])
        size = int(rng.integers(1, max_len + 1))
        if rng.random() < 0.5:  # insertion before base e
            pieces.append(BASES[rng.integers(0, 4, size)])
            i = e
        else:  # deletion of bases e .. e+size
            i = min(n, e + size)
    pieces.append(seq[i:])
    return np.concatenate(pieces).astype(np.uint8)
