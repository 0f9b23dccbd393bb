"""Per-position fidelity metrics of a model under test (q) against the base model with full context (p).

Distances are over the four bases (the model's probabilities of A, C, G, T renormalised to sum to one):
|delta p(true base)| (the per-nucleotide probability shift), L1, L2, Hellinger, Jensen-Shannon (nats) and
KL(p || q) (nats). Bits per base use the model's full-vocabulary likelihood of the true base. Positions
whose target is not A/C/G/T (either case) are not scored, and neither is the first window, where FOCUS and
every baseline equal the base model by construction (DESIGN I1).

`fidelity` is the compact held-out check both trainers run (FOCUS and fixed-window truncation against
the base, means over scored positions); it takes any FOCUS model (`FocusModel`, `NemoFocusModel`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from focus_nemo.focus.loss import split_case

ACGT = torch.tensor([65, 67, 71, 84])
METRICS = ("abs_dp_true", "l1", "l2", "hellinger", "js", "kl")
# focus: local = 0; focus_local: local = 1; sliding: a sliding window with focus's key/value budget;
# sliding_local: one with focus_local's (the band's extra window included)
METHODS = ("full", "focus", "focus_local", "truncation", "sliding", "sliding_local")
# The published protocol beside ours: the last position of each W-base segment after the first (everything
# before the segment compressed), distances over the model's whole vocabulary, not renormalised to A/C/G/T.
SEGMENT_END_METRICS = ("seg_end_abs_dp", "seg_end_kl")
SUMMARY_METRICS = ("bits", "bits_delta") + METRICS + SEGMENT_END_METRICS
SEQUENCE_COLUMNS = ("sequence_id", "source", "chrom", "start", "end", "strand", "length", "k", "method",
                    "attention_budget", "positions") + SUMMARY_METRICS
LABELS = {"bits": "bits/base", "bits_delta": "delta bits vs full", "abs_dp_true": "|delta p(true)|",
          "l1": "L1", "l2": "L2", "hellinger": "Hellinger", "js": "JS (nats)", "kl": "KL(full || method) (nats)",
          "seg_end_abs_dp": "segment ends: |delta p(true)|, vocab",
          "seg_end_kl": "segment ends: KL, vocab (nats)"}


def acgt_probs(logits: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[..., V] logits -> [..., 4] probabilities of A, C, G, T renormalised (in `dtype`)."""
    return F.softmax(logits.to(dtype)[..., ACGT.to(logits.device)], dim=-1)


def distribution_metrics(p: torch.Tensor, q: torch.Tensor, true_idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-position distances between reference p and test q ([..., 4]); true_idx [...] in 0..3."""
    eps = 1e-12
    m = 0.5 * (p + q)
    kl_pq = (p * ((p + eps).log() - (q + eps).log())).sum(-1)
    js = 0.5 * (p * ((p + eps).log() - (m + eps).log())).sum(-1) \
        + 0.5 * (q * ((q + eps).log() - (m + eps).log())).sum(-1)
    return {
        "abs_dp_true": (p.gather(-1, true_idx[..., None]) - q.gather(-1, true_idx[..., None])).abs().squeeze(-1),
        "l1": (p - q).abs().sum(-1),
        "l2": (p - q).pow(2).sum(-1).sqrt(),
        "hellinger": ((p.sqrt() - q.sqrt()).pow(2).sum(-1) / 2).sqrt(),
        "js": js,
        "kl": kl_pq,
    }


def segment_end_metrics(full: torch.Tensor, test: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """|delta p(true token)| and KL(full || test) over the whole vocabulary at the given positions.

    Args:
        full, test: [n, V] logits of the base with full context and of the method at n positions.
        targets: [n] the true next token ids.
    """
    log_p, log_q = F.log_softmax(full.double(), dim=-1), F.log_softmax(test.double(), dim=-1)
    p, idx = log_p.exp(), targets[:, None]
    return {"seg_end_abs_dp": (p.gather(-1, idx) - log_q.gather(-1, idx).exp()).abs().squeeze(-1),
            "seg_end_kl": (p * (log_p - log_q)).sum(-1)}


def bits_per_base(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position -log2 p(target) under the full vocabulary."""
    return F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none") / math.log(2)


def true_base_index(targets: torch.Tensor) -> torch.Tensor:
    """Index 0..3 of A/C/G/T targets (other ids map to an arbitrary index; they are never scored)."""
    return torch.searchsorted(ACGT.to(targets.device), targets.clamp(65, 84)).clamp(max=3)


def scored_positions(raw: torch.Tensor, window: int) -> torch.Tensor:
    """[B, L] raw byte ids -> [B, L-1] mask of scored inputs: A/C/G/T target and past the first window."""
    _, w = split_case(raw, 1.0)
    scored = w[:, 1:] > 0
    scored[:, :window] = False
    return scored


@torch.no_grad()
def fidelity(fm, raw_batches: Iterable[torch.Tensor], k: int | None = None, window: int | None = None) -> dict:
    """Compare FOCUS and fixed-window truncation against the base with full context.

    Args:
        fm: a FocusModel.
        raw_batches: raw byte ids [B, L+1] (case preserved); position t predicts base t+1.

    Returns:
        means over scored positions: ``bits_full``, ``bits_focus``, ``bits_truncation`` and, for
        ``focus`` and ``truncation``, every metric of `distribution_metrics` (e.g. ``focus_kl``);
        ``positions`` = number of scored positions.
    """
    k = fm.config.k if k is None else k
    window = fm.config.window if window is None else window
    sums: dict[str, float] = {}
    count = 0
    for raw in raw_batches:
        tokens, _ = split_case(raw, 1.0)
        x, y = tokens[:, :-1], tokens[:, 1:]
        scored = scored_positions(raw, window)
        if not bool(scored.any()):
            continue
        full = fm.base_logits(x)
        runs = {"focus": fm(x, k=k, window=window), "truncation": fm(x, k=k, window=window, memory=False)}
        true_idx = true_base_index(y)
        p = acgt_probs(full, torch.float64)
        count += int(scored.sum())
        sums["bits_full"] = sums.get("bits_full", 0.0) + float(bits_per_base(full, y)[scored].double().sum())
        for name, lo in runs.items():
            sums[f"bits_{name}"] = sums.get(f"bits_{name}", 0.0) + float(bits_per_base(lo, y)[scored].double().sum())
            for m, v in distribution_metrics(p, acgt_probs(lo, torch.float64), true_idx).items():
                sums[f"{name}_{m}"] = sums.get(f"{name}_{m}", 0.0) + float(v[scored].sum())
    if count == 0:
        raise ValueError("fidelity: no scored positions (sequences must be longer than one window)")
    out = {key: v / count for key, v in sums.items()}
    out["positions"] = count
    return out
