"""Evidence of what a pretrained backbone does with context: an order-k Markov baseline, costs of
truncated contexts (`long_context_evidence`) and held-out sequences for them."""

from __future__ import annotations

import math

import numpy as np
import torch

from focus_nemo.evo2 import Evo2Model
from focus_nemo.pretraining.data import ChromWindows, read_region


def markov_bits_per_base(train: np.ndarray, test: np.ndarray, order: int) -> float:
    """Held-out bits/base of an order-`order` Markov chain with add-1/2 smoothing over ACGT."""
    lut = np.full(256, -1, dtype=np.int64)
    for i, c in enumerate(b"ACGT"):
        lut[c] = i
        lut[c + 32] = i

    def contexts(seq):
        codes = lut[seq]
        n = len(codes) - order
        ctx = np.zeros(n, dtype=np.int64)
        valid = codes[order:] >= 0
        for j in range(order):
            c = codes[j: j + n]
            valid &= c >= 0
            ctx = ctx * 4 + np.maximum(c, 0)
        return ctx[valid], codes[order:][valid]

    ctx, nxt = contexts(train)
    counts = np.zeros((4 ** order, 4), dtype=np.float64)
    np.add.at(counts, (ctx, nxt), 1.0)
    counts += 0.5
    probs = counts / counts.sum(1, keepdims=True)
    tctx, tnxt = contexts(test)
    return float(-np.log2(probs[tctx, tnxt]).mean())


# ------------------------------------------------------------------------------------ long-context evidence
def _per_position_nats(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits[0].float(), targets[0], reduction="none").double()


def _mean_se(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")
    return {"mean": float(a.mean()), "se": se}


@torch.no_grad()
def long_context_evidence(model: Evo2Model, sequences: list[np.ndarray], window: int = 1024,
                          short_len: int = 4096) -> dict:
    """How much a model uses context beyond one attention window and beyond `short_len` bases.

    Each sequence holds L + 1 bases (L a multiple of `window` and of `short_len`); its L targets are scored
    (A/C/G/T only) under four contexts:

    - ``full``: the whole sequence in one pass;
    - ``windows_alone``: each `window`-base piece run alone (attention and Hyena state start afresh);
    - ``attention_window``: attention limited to the current `window`-base window while the Hyena blocks
      read the whole sequence (FocusModel(...).forward(memory=False), no Focus memory);
    - ``short``: each `short_len`-base piece run alone.

    Costs are differences to ``full`` in nats per base over the positions after the first window (where the
    contexts differ); bits per base compare ``full`` with ``short`` over all L targets and over the last
    `short_len` targets (the same end positions at L and at `short_len` bases of context). Every figure is a
    mean over sequences with its standard error; ``by_window`` gives the mean full-context nats per base and
    the windows-alone cost of each window.
    """
    from focus_nemo.focus import FocusConfig, FocusModel, split_case

    was_training = model.training
    grads = [p.requires_grad for p in model.parameters()]
    L = len(sequences[0]) - 1
    if L % window or L % short_len or any(len(s) != L + 1 for s in sequences):
        lengths = sorted({len(s) for s in sequences})
        raise ValueError(f"long_context_evidence: sequences must all hold L + 1 bases with L a multiple of the "
                         f"window {window} and of short_len {short_len} (got lengths {lengths})")
    # k is unused without memory; the constructor also puts `model` in eval mode.
    attn_only = FocusModel(model, FocusConfig(k=window, window=window)).eval()
    per: dict[str, list[float]] = {k: [] for k in (
        "full_bits", "full_bits_after_first_window", "windows_alone_cost_nats", "attention_window_cost_nats",
        "short_bits", "short_minus_full_bits", "last_short_full_bits", "last_short_short_bits",
        "last_short_short_minus_full_bits")}
    by_window_full = np.zeros(L // window)
    by_window_cost = np.zeros(L // window)
    ln2 = math.log(2)
    for seq in sequences:
        raw = torch.from_numpy(seq.astype(np.int64))[None]
        tokens, wt = split_case(raw, 1.0)
        x, y, w = tokens[:, :-1], tokens[:, 1:], wt[0, 1:].double()
        full = _per_position_nats(model(x), y)
        alone = torch.cat([_per_position_nats(model(x[:, s: s + window]), y[:, s: s + window])
                           for s in range(0, L, window)])
        attn = _per_position_nats(attn_only(x, memory=False), y)
        short = torch.cat([_per_position_nats(model(x[:, s: s + short_len]), y[:, s: s + short_len])
                           for s in range(0, L, short_len)])

        def mean(v, lo=0, hi=L, w=w):
            return float((v[lo:hi] * w[lo:hi]).sum() / w[lo:hi].sum())

        per["full_bits"].append(mean(full) / ln2)
        per["full_bits_after_first_window"].append(mean(full, window) / ln2)
        per["windows_alone_cost_nats"].append(mean(alone - full, window))
        per["attention_window_cost_nats"].append(mean(attn - full, window))
        per["short_bits"].append(mean(short) / ln2)
        per["short_minus_full_bits"].append(mean(short - full) / ln2)
        per["last_short_full_bits"].append(mean(full, L - short_len) / ln2)
        per["last_short_short_bits"].append(mean(short, L - short_len) / ln2)
        per["last_short_short_minus_full_bits"].append(mean(short - full, L - short_len) / ln2)
        for j in range(L // window):
            by_window_full[j] += mean(full, j * window, (j + 1) * window) / len(sequences)
            by_window_cost[j] += mean(alone - full, j * window, (j + 1) * window) / len(sequences)
    model.train(was_training)
    for p, g in zip(model.parameters(), grads, strict=True):  # FocusModel froze the base
        p.requires_grad_(g)
    return {"sequences": len(sequences), "length": L, "window": window, "short_len": short_len,
            **{k: _mean_se(v) for k, v in per.items()},
            "by_window": {"full_nats": [round(float(v), 5) for v in by_window_full],
                          "windows_alone_cost_nats": [round(float(v), 5) for v in by_window_cost]}}


def heldout_sequences(cfg, n: int, length: int, seed: int) -> list[np.ndarray]:
    """`n` random windows of `length` + 1 bases of ``cfg.heldout_range`` (a `PretrainConfig`'s held-out
    range) with at most ``cfg.max_n_fraction`` N (seeded)."""
    held = read_region(cfg.fasta, cfg.chrom, *cfg.heldout_range)
    sampler = ChromWindows(held, length + 1, cfg.max_n_fraction, np.random.default_rng(seed))
    return [sampler.sample().copy() for _ in range(n)]
