"""The log-likelihood stream every scorer reads: `LoglikStream` feeds bases through a FOCUS model's
streaming state and returns each base's ``log p(base_t | bases < t)`` (nats, NaN where nothing is scored);
`sequence_loglik` scores one sequence. The units and the score's definition are here (`UNITS`,
`SCORE_DEFINITION`), with `ScoringError`, the error of every scoring input."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import numpy as np
import torch

logger = logging.getLogger(__name__)

UNITS = "nat"

SCORE_DEFINITION = ("log p(base_t | bases < t), natural log, softmax over the full byte vocabulary; "
                    "inputs upper-cased; NaN where base_t is not A/C/G/T and at t = 0")

DEFAULT_CHUNK = 8192

UPPER = np.arange(256, dtype=np.uint8)
UPPER[ord("a"): ord("z") + 1] -= 32
IS_ACGT = np.zeros(256, dtype=bool)
IS_ACGT[list(b"ACGT")] = True
IS_N = np.zeros(256, dtype=bool)
IS_N[list(b"Nn")] = True
IS_LOWER = np.zeros(256, dtype=bool)
IS_LOWER[ord("a"): ord("z") + 1] = True


class ScoringError(ValueError):
    """Bad input or an output directory that cannot be used; the message names the file/record/row."""


class LoglikStream:
    """Per-base log-likelihoods of a sequence fed in consecutive pieces of any length.

    `feed` returns one float32 score per fed base (NaN rules in the module docstring); `fork` copies the
    stream so that two continuations can be scored from one shared prefix.

    Args:
        fm: a FocusModel.
        k, window: the FOCUS ratio and window to stream with.
        chunk_size: bases per `FocusModel.forward_chunk` call (bounds the logits held at once).
    """

    def __init__(self, fm, k: int, window: int, chunk_size: int = DEFAULT_CHUNK) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}")
        self.fm, self.chunk_size = fm, chunk_size
        self.device = next(fm.parameters()).device
        self.state = fm.init_state(1, k, window)
        self.last_logits: torch.Tensor | None = None  # [V] fp32: predicts the next fed base

    @property
    def offset(self) -> int:
        """Bases fed so far."""
        return self.state.offset

    @torch.no_grad()
    def feed(self, raw: np.ndarray | bytes, on_chunk: Callable[[int], None] | None = None) -> np.ndarray:
        """Score the next bases `raw` (bytes or uint8 array, case preserved); returns float32 [len(raw)]."""
        raw = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray)) else np.asarray(raw)
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise TypeError(f"feed: expected a 1-D uint8 array of bases, got {raw.dtype} {raw.shape}")
        out = np.empty(raw.shape[0], dtype=np.float32)
        for s in range(0, raw.shape[0], self.chunk_size):
            piece = UPPER[raw[s: s + self.chunk_size]]
            host = torch.from_numpy(piece.astype(np.int64))[None]
            # The model checks the host copy and moves it itself: no device synchronisation per chunk
            # besides the scores read back below.
            logits, self.state = self.fm.forward_chunk(host, self.state)
            tokens = host.to(self.device)
            logits = logits[0].float()
            rows = logits[:-1] if self.last_logits is None else torch.cat([self.last_logits[None], logits[:-1]])
            targets = tokens[0, -rows.shape[0]:] if rows.shape[0] else tokens[0, :0]
            ll = (rows.gather(1, targets[:, None])[:, 0] - torch.logsumexp(rows, 1)).cpu().numpy()
            n = piece.shape[0]
            res = out[s: s + n]
            res[n - ll.shape[0]:] = ll
            res[: n - ll.shape[0]] = np.nan  # the very first base of the stream
            res[~IS_ACGT[piece]] = np.nan
            self.last_logits = logits[-1].clone()
            if on_chunk is not None:
                on_chunk(n)
        return out

    def fork(self) -> LoglikStream:
        """An independent copy (state and pending prediction) that continues from the same point."""
        other = copy.copy(self)
        other.state = copy.deepcopy(self.state)
        other.last_logits = None if self.last_logits is None else self.last_logits.clone()
        return other


def sequence_loglik(fm, seq: str | bytes | np.ndarray, k: int | None = None, window: int | None = None,
                    chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
    """Per-base scores (float32 [len(seq)]) of one sequence, streamed from its first base."""
    if isinstance(seq, str):
        seq = seq.encode("ascii")
    stream = LoglikStream(fm, fm.config.k if k is None else k, fm.config.window if window is None else window,
                          chunk_size)
    return stream.feed(seq) if len(seq) else np.zeros(0, dtype=np.float32)
