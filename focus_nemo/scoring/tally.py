"""A record's summary figures (`RecordTally`): counts, log-likelihood sums and the plausibility check of its
bits per base, computed the same way whether the scores come from the model or from the output files."""

from __future__ import annotations

import hashlib
import logging
import math

import numpy as np

from focus_nemo.scoring.stream import IS_ACGT, IS_LOWER, IS_N, UPPER

logger = logging.getLogger(__name__)

# A uniform guess over A/C/G/T costs 2 bits per base: a model that does worse than that is not reading DNA
# it knows (or its streaming state has drifted), whatever else the scores say.
UNIFORM_BITS = 2.0

IMPLAUSIBLE = "worse than a uniform guess: outside the model's domain, or a model whose state drifts"

CHECK_SPAN = 1_000_000  # bases per logged plausibility check while a record streams


def check_max_bits(value) -> float:
    """The bits-per-base threshold (``--max-bits-per-base``): a positive number."""
    try:
        bits = float(value)
    except (TypeError, ValueError):
        bits = math.nan
    if not bits > 0 or math.isinf(bits):
        raise ValueError(f"max_bits_per_base (--max-bits-per-base): must be a positive number of bits, "
                         f"got {value!r}")
    return bits


def implausible_note(bits: float | None, max_bits: float) -> str:
    """The reason a record's or span's `bits` per base cannot be right, or "" when they can."""
    if bits is None or not bits > max_bits:
        return ""
    return f"{bits:.2f} bits/base > {max_bits:g}: {IMPLAUSIBLE}"


class RecordTally:
    """Counts, sums and the sequence checksum of one record, fed read by read (`add`) in order.

    `max_bits` set: each `CHECK_SPAN` bases (and the record's last, shorter span) whose scored bases average
    more bits than that is logged as a warning naming the record and the span.
    """

    def __init__(self, name: str, length: int, max_bits: float | None = None, span: int = CHECK_SPAN) -> None:
        self.name, self.length, self.max_bits, self.span = name, length, max_bits, span
        self.seq_hash = hashlib.sha256()
        self.counts = dict.fromkeys(("scored", "n_bases", "iupac_bases", "soft_masked", "soft_masked_scored"), 0)
        self.total = 0.0
        self.first_acgt = False
        self.position = 0
        self.span_sum, self.span_scored, self.flagged_spans = 0.0, 0, 0

    def add(self, raw: np.ndarray, ll: np.ndarray) -> None:
        """The next `raw` bases (as read) and their scores (NaN where unscored)."""
        if raw.shape != ll.shape:
            raise ValueError(f"record {self.name!r}: {raw.shape[0]} bases but {ll.shape[0]} scores")
        self.seq_hash.update(raw.tobytes())
        if self.position == 0 and raw.shape[0]:
            self.first_acgt = bool(IS_ACGT[UPPER[raw[0]]])
        ok = ~np.isnan(ll)
        lower = IS_LOWER[raw]
        c = self.counts
        c["scored"] += int(ok.sum())
        c["n_bases"] += int(IS_N[raw].sum())
        c["iupac_bases"] += int((~IS_ACGT[UPPER[raw]] & ~IS_N[raw]).sum())
        c["soft_masked"] += int(lower.sum())
        c["soft_masked_scored"] += int((lower & ok).sum())
        self.total += float(ll[ok].astype(np.float64).sum())
        if self.max_bits is not None:
            self._check_spans(ll, ok)
        self.position += raw.shape[0]

    def _check_spans(self, ll: np.ndarray, ok: np.ndarray) -> None:
        start, end = self.position, self.position + ll.shape[0]
        pos = start
        while pos < end:
            stop = min(end, (pos // self.span + 1) * self.span)
            part = slice(pos - start, stop - start)
            self.span_sum += float(ll[part][ok[part]].astype(np.float64).sum())
            self.span_scored += int(ok[part].sum())
            pos = stop
            if stop % self.span == 0 or stop == self.length:
                self._check_span(stop)

    def _check_span(self, stop: int) -> None:
        first = (stop - 1) // self.span * self.span
        if self.span_scored:
            note = implausible_note(-self.span_sum / self.span_scored / math.log(2), self.max_bits)
            if note:
                self.flagged_spans += 1
                logger.warning("%s:%d-%d: %s", self.name, first, stop, note)
        self.span_sum, self.span_scored = 0.0, 0

    def stats(self, seconds: float | None) -> dict:
        """The record's summary row (columns of `focus_nemo.scoring.outputs.SUMMARY_COLUMNS` but ``status``'s
        flag, which depends on the threshold of the run that writes the summary)."""
        c, n = self.counts, self.length
        mean = self.total / c["scored"] if c["scored"] else None
        return {
            "record": self.name, "length": n, "scored": c["scored"], "not_scored": n - c["scored"],
            **{k: c[k] for k in ("n_bases", "iupac_bases", "soft_masked", "soft_masked_scored")},
            "sum_ll_nats": self.total, "mean_ll_nats": mean,
            "bits_per_base": None if mean is None else -mean / math.log(2),
            "perplexity": None if mean is None else math.exp(-mean),
            "seconds": seconds, "bases_per_s": n / seconds if seconds else None,
            "status": "scored" if c["scored"] else "nothing_scored",
            "note": "" if c["scored"] else self.nothing_scored_note(),
        }

    def nothing_scored_note(self) -> str:
        c, n = self.counts, self.length
        if n == 1 and self.first_acgt:
            return "a single base: the first base of a sequence has no prediction"
        return (f"no A/C/G/T base after the first ({c['n_bases']} N, {c['iupac_bases']} other IUPAC code(s) of {n} "
                f"bases)")
