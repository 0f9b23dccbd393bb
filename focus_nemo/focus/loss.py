"""The FOCUS training objective (DESIGN D9).

Next-base cross-entropy on ordinary bases with Evo-2's conventions — inputs upper-cased, no loss on
targets that are not A/C/G/T, soft-masked (lower-case) targets weighted by `lowercase_weight` —
plus an optional self-distillation term KL(frozen base with full context || FOCUS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_UPPER_ACGT = torch.tensor([65, 67, 71, 84])
_LOWER_ACGT = _UPPER_ACGT + 32


def split_case(raw: torch.Tensor, lowercase_weight: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw byte ids (case preserved) -> (upper-cased inputs, per-position target weights).

    weight = 1 for A/C/G/T, `lowercase_weight` for a/c/g/t, 0 for anything else (N, IUPAC codes).
    """
    acgt = _UPPER_ACGT.to(raw.device)
    upper_hit = torch.isin(raw, acgt)
    lower_hit = torch.isin(raw, _LOWER_ACGT.to(raw.device))
    lower_letter = (raw >= 97) & (raw <= 122)
    tokens = torch.where(lower_letter, raw - 32, raw)
    weight = upper_hit.float() + lowercase_weight * lower_hit.float()
    return tokens, weight


def weighted_ce(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(w * CE) / sum(w) over positions; logits [B, L, V], targets/weight [B, L]."""
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    w = weight.reshape(-1).float()
    return (ce * w).sum() / w.sum().clamp(min=1e-8)


def focus_loss(model, raw: torch.Tensor, k: int | None = None, window: int | None = None,
               lowercase_weight: float | None = None, distill_weight: float | None = None,
               temperature: float | None = None) -> dict[str, torch.Tensor]:
    """Loss terms for one batch of raw byte ids [B, L] (case preserved).

    Returns a dict with ``loss`` (the objective), ``ce`` (weighted next-base cross-entropy, nats) and,
    when distillation is on, ``kl`` (mean over positions with a nonzero weight).
    """
    cfg = model.config
    lw = cfg.lowercase_weight if lowercase_weight is None else lowercase_weight
    dw = cfg.distill_weight if distill_weight is None else distill_weight
    tau = cfg.distill_temperature if temperature is None else temperature
    tokens, weight = split_case(raw, lw)
    logits = model(tokens[:, :-1], k=k, window=window)
    out = {"ce": weighted_ce(logits, tokens[:, 1:], weight[:, 1:])}
    loss = cfg.ce_weight * out["ce"]
    if dw > 0:
        with torch.no_grad():
            ref = model.base_logits(tokens[:, :-1]).float()
        lp = F.log_softmax(logits.float() / tau, -1)
        lq = F.log_softmax(ref / tau, -1)
        kl = (lq.exp() * (lq - lp)).sum(-1)
        m = (weight[:, 1:] > 0).float()
        out["kl"] = (kl * m).sum() / m.sum().clamp(min=1)
        loss = loss + dw * (tau * tau) * out["kl"]
    out["loss"] = loss
    return out
