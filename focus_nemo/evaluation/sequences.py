"""The evaluated sequences and what is measured on each: `sample_sequences` draws them (every (source,
length) from its own seeded stream), `evaluate_sequence` runs every method and k on one and returns its
per-sequence metric means and position `Profile`s. `sliding_span` / `attention_budget` define the
sliding-window baseline's span and each method's key/value budget (see `focus_nemo.evaluate`)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from focus_nemo.data.assets import resolve_fasta
from focus_nemo.evaluation.config import EvalConfig, source_name
from focus_nemo.evaluation.metrics import (
    METHODS,
    METRICS,
    SEGMENT_END_METRICS,
    acgt_probs,
    bits_per_base,
    distribution_metrics,
    scored_positions,
    segment_end_metrics,
    true_base_index,
)
from focus_nemo.focus.loss import split_case


def sliding_span(length: int, k: int, window: int, horizon_windows: int | None = None) -> int:
    """Attention span of the sliding-window baseline for `length` input bases: W + ceil(W/k) * J,
    J = (length - 1) // W completed windows before the last base's window, at most `horizon_windows`
    of them (FOCUS with a horizon; None: all) (the FOCUS budget)."""
    completed = (length - 1) // window
    if horizon_windows is not None:
        completed = min(completed, horizon_windows)
    return window + -(-window // k) * completed


def attention_budget(method: str, length: int, k: int, window: int, horizon_windows: int | None = None) -> int:
    """Most key/value entries per attention block a method holds while reading `length` bases."""
    if method == "full":
        return length
    if method == "truncation":
        return min(window, length)
    if method in ("focus_local", "sliding_local"):  # the exact band of the previous window on top of the memory
        return sliding_span(length, k, window, horizon_windows) + min(window, max(0, length - window))
    return sliding_span(length, k, window, horizon_windows)  # focus and sliding


@dataclass
class EvalSequence:
    sequence_id: str
    source: str
    chrom: str
    start: int
    end: int
    strand: str
    raw: np.ndarray  # uint8 [length + 1]: the inputs and the next-base target of the last one

    @property
    def length(self) -> int:
        return len(self.raw) - 1


def _stream_seed(seed: int, name: str, length: int) -> int:
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode()), length]).generate_state(1)[0])


def sample_sequences(cfg: EvalConfig) -> list[EvalSequence]:
    """Every (source, length) draws its sequences from its own seeded stream (order-independent)."""
    from focus_nemo.data import WindowSampler, open_genome

    out = []
    for src in cfg.sources:
        name = source_name(src)
        path = resolve_fasta(src.fasta)
        if not src.fasta.startswith("bundled:") and not Path(path).exists():
            raise FileNotFoundError(f"EvalConfig.sources[{name}].fasta: {path} does not exist")
        genome = open_genome(path)
        regions = src.regions or list(genome.names)
        for length in cfg.lengths:
            sampler = WindowSampler(genome, regions, length + 1, seed=_stream_seed(cfg.seed, name, length),
                                    rc_prob=cfg.rc_prob, max_n_fraction=cfg.max_n_fraction, short_region="skip")
            for i in range(src.num_sequences or cfg.num_sequences):
                w = sampler.sample(i)
                out.append(EvalSequence(f"{name}_{length}_{i:04d}", name, w.chrom, w.start, w.end, w.strand, w.seq))
    return out


@dataclass
class Profile:
    """Sums of per-position metrics in bins of position-in-window and of window index."""

    in_window: np.ndarray  # [bins, 1 + n_metrics]: count, then sums
    by_window: np.ndarray  # [windows, 1 + n_metrics]

    def add(self, other: Profile) -> None:
        if other.by_window.shape[0] > self.by_window.shape[0]:
            grown = np.zeros_like(other.by_window)
            grown[: self.by_window.shape[0]] = self.by_window
            self.by_window = grown
        self.in_window += other.in_window
        self.by_window[: other.by_window.shape[0]] += other.by_window


PROFILE_METRICS = ("bits_delta",) + METRICS


def _with_local(fm, local: int, run):
    """`run()` with the model's exact local band set to `local` windows (DESIGN D11), restored after."""
    saved = fm.config.local
    fm.config.local = local
    try:
        return run()
    finally:
        fm.config.local = saved


@torch.no_grad()
def method_logits(fm, x: torch.Tensor, method: str, k: int, window: int) -> torch.Tensor:
    """Logits [B, L, V] of one evaluated method on inputs `x` [B, L] (the definitions in `focus_nemo.evaluate`).

    ``full``: the frozen base reading everything; ``truncation``: attention within the current window only (`k`
    is unused); ``focus`` / ``focus_local``: FOCUS at ratio `k` and window `window` without / with the exact
    local band (local = 0 / 1), with the model's horizon and second level; ``sliding`` / ``sliding_local``: the
    base with sliding-window attention whose span is that FOCUS's key/value budget for `x`'s length. Both the
    fidelity evaluation and the recall probe compute every method's logits here.
    """
    L = x.shape[1]
    h = fm.config.horizon_windows(window)
    if method == "full":
        return fm.base(x)
    if method == "truncation":
        return fm(x, k=k, window=window, memory=False)
    if method in ("focus", "focus_local"):
        return _with_local(fm, int(method == "focus_local"), lambda: fm(x, k=k, window=window))
    if method in ("sliding", "sliding_local"):
        return fm.base(x, attention_span=attention_budget(method, L, k, window, h))
    raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")


@torch.no_grad()
def evaluate_sequence(fm, seq: EvalSequence, ks: Sequence[int], window: int, methods: Sequence[str],
                      bins: int) -> tuple[list[dict], dict[tuple[int | None, str], Profile]]:
    """Per-sequence metric means for every (method, k) and their position profiles.

    FOCUS runs with the model's horizon (``fm.config.horizon``: its one-pass forward takes at most
    horizon/W windows of Focus keys per window, linear in the length), and the sliding baseline's span
    is the same budget.

    Returns:
        (rows with the `SEQUENCE_COLUMNS` fields, {(k or None, method): Profile}); ``full`` and
        ``truncation`` do not depend on k and have k None.
    """
    h = fm.config.horizon_windows(window)
    dev = fm.focus_embedding.device
    raw = torch.from_numpy(seq.raw.astype(np.int64))[None].to(dev)
    tokens, _ = split_case(raw, 1.0)
    x, y = tokens[:, :-1], tokens[:, 1:]
    L = x.shape[1]
    scored = scored_positions(raw, window)[0]
    if not bool(scored.any()):
        raise ValueError(f"{seq.sequence_id}: no scored position (no A/C/G/T target after the first window)")
    pos = torch.arange(L, device=dev)[scored]
    bin_in = ((pos % window) * bins // window).cpu().numpy()
    win_idx = (pos // window).cpu().numpy()
    n_windows = -(-L // window)
    true_idx = true_base_index(y)[0][scored]
    # the published protocol: the last base of each W-base segment after the first
    seg_end = torch.zeros_like(scored)
    seg_end[2 * window - 1::window] = True
    seg_end &= scored
    full = fm.base(x)
    p = acgt_probs(full[0][scored], torch.float64)
    bits_full = bits_per_base(full, y)[0][scored].double()

    def measure(method: str, k: int | None, logits: torch.Tensor | None) -> tuple[dict, Profile]:
        if logits is None:  # the reference itself
            per = {m: torch.zeros_like(bits_full) for m in METRICS}
            seg = {m: torch.zeros(int(seg_end.sum()), dtype=torch.float64) for m in SEGMENT_END_METRICS}
            bits = bits_full
        else:
            per = distribution_metrics(p, acgt_probs(logits[0][scored], torch.float64), true_idx)
            seg = segment_end_metrics(full[0][seg_end], logits[0][seg_end], y[0][seg_end])
            bits = bits_per_base(logits, y)[0][scored].double()
        per["bits_delta"] = bits - bits_full
        row = {"sequence_id": seq.sequence_id, "source": seq.source, "chrom": seq.chrom, "start": seq.start,
               "end": seq.end, "strand": seq.strand, "length": L, "k": "" if k is None else k, "method": method,
               "attention_budget": attention_budget(method, L, k or ks[0], window, h), "positions": int(scored.sum()),
               "bits": float(bits.mean())}
        row.update({m: float(per[m].mean()) for m in ("bits_delta",) + METRICS})
        row.update({m: float(v.mean()) if v.numel() else float("nan") for m, v in seg.items()})
        vals = np.stack([np.ones(len(pos))] + [per[m].cpu().numpy() for m in PROFILE_METRICS], 1)
        prof = Profile(np.zeros((bins, vals.shape[1])), np.zeros((n_windows, vals.shape[1])))
        for c in range(vals.shape[1]):
            prof.in_window[:, c] = np.bincount(bin_in, vals[:, c], minlength=bins)
            prof.by_window[:, c] = np.bincount(win_idx, vals[:, c], minlength=n_windows)
        return row, prof

    results = [measure("full", None, None)]
    if "truncation" in methods:
        results.append(measure("truncation", None, method_logits(fm, x, "truncation", ks[0], window)))
    for k in ks:
        for method in ("focus", "focus_local", "sliding", "sliding_local"):
            if method in methods:
                results.append(measure(method, k, method_logits(fm, x, method, k, window)))
    rows = [r for r, _ in results]
    profiles = {(None if r["k"] == "" else r["k"], r["method"]): pr for r, pr in results}
    return rows, profiles
