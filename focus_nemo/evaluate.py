"""Fidelity of FOCUS to the base model with full context.

At every scored position both models give a next-base distribution. Distances are taken over the
four bases (the model's probabilities of A, C, G, T renormalised to sum to one): mean |delta p(true
base)| (the per-nucleotide probability shift), L1, L2, Hellinger, Jensen-Shannon and KL(full ||
other). Cross-entropy (bits per base) uses the model's full-vocabulary likelihood of the true base.
Positions whose target is not A/C/G/T are not scored, and neither is the first window, where FOCUS
and every baseline equal the base model by construction (DESIGN I1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from focus_nemo.focus.loss import split_case

ACGT = torch.tensor([65, 67, 71, 84])
METRICS = ("abs_dp_true", "l1", "l2", "hellinger", "js", "kl")


def acgt_probs(logits: torch.Tensor) -> torch.Tensor:
    """[..., V] logits -> [..., 4] probabilities of A, C, G, T renormalised (fp32)."""
    return F.softmax(logits.float()[..., ACGT.to(logits.device)], dim=-1)


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


def bits_per_base(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position -log2 p(target) under the full vocabulary."""
    return F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none") / math.log(2)


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
        tokens, w = split_case(raw, 1.0)
        x, y = tokens[:, :-1], tokens[:, 1:]
        scored = w[:, 1:] > 0
        scored[:, :window] = False
        if not bool(scored.any()):
            continue
        full = fm.base(x)
        runs = {"focus": fm(x, k=k, window=window), "truncation": fm(x, k=k, window=window, memory=False)}
        true_idx = torch.searchsorted(ACGT.to(y.device), y.clamp(65, 84)).clamp(max=3)
        p = acgt_probs(full)
        n = int(scored.sum())
        count += n
        sums["bits_full"] = sums.get("bits_full", 0.0) + float(bits_per_base(full, y)[scored].sum())
        for name, lo in runs.items():
            sums[f"bits_{name}"] = sums.get(f"bits_{name}", 0.0) + float(bits_per_base(lo, y)[scored].sum())
            for m, v in distribution_metrics(p, acgt_probs(lo), true_idx).items():
                sums[f"{name}_{m}"] = sums.get(f"{name}_{m}", 0.0) + float(v[scored].sum())
    if count == 0:
        raise ValueError("fidelity: no scored positions (sequences must be longer than one window)")
    out = {key: v / count for key, v in sums.items()}
    out["positions"] = count
    return out
