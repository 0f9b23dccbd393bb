"""FOCUS adapter configuration (only the fields the adapter adds to a frozen Evo-2)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

SCOPES = ("window", "kmer")


@dataclass
class FocusConfig:
    """Where Focus tokens go, what they see, and how the adapter trains.

    Attributes:
        k: bases per Focus token (the compression ratio of the attention memory).
        window: bases per window W; only Focus keys/values survive from one window to the next.
        scope: what a Focus token's query sees of its own window's bases: ``window`` (every base of
            the window up to the end of its block, "full coverage") or ``kmer`` (its own block only).
        init_token: byte whose embedding initialises the Focus embedding vector.
        train_ratios: the set k is drawn from at each training step (randomised compression); empty
            means always `k`.
        lowercase_weight: loss weight of soft-masked (lower-case) target bases.
        ce_weight: weight of the next-base cross-entropy term.
        distill_weight: weight of the self-distillation term KL(base with full context || FOCUS).
            Cross-entropy alone lets the Focus tokens act as extra capacity that fits the training
            data beyond the base model; distillation pins FOCUS to the base (fidelity).
        distill_temperature: softmax temperature of the distillation term.
    """

    k: int = 100
    window: int = 1024
    scope: str = "window"
    init_token: int = ord("N")
    train_ratios: list[int] = field(default_factory=list)
    lowercase_weight: float = 0.1
    ce_weight: float = 1.0
    distill_weight: float = 0.0
    distill_temperature: float = 1.0

    def __post_init__(self) -> None:
        check_k_window(self.k, self.window)
        if self.scope not in SCOPES:
            raise ValueError(f"FocusConfig.scope: {self.scope!r} is not one of {SCOPES}")
        if not 0 <= self.init_token < 512:
            raise ValueError(f"FocusConfig.init_token: {self.init_token} outside the vocabulary [0, 512)")
        for r in self.train_ratios:
            try:
                check_k_window(r, self.window)
            except ValueError as e:
                raise ValueError(f"FocusConfig.train_ratios: {e}") from None
        if self.lowercase_weight < 0:
            raise ValueError(f"FocusConfig.lowercase_weight: must be >= 0, got {self.lowercase_weight}")
        if self.ce_weight < 0:
            raise ValueError(f"FocusConfig.ce_weight: must be >= 0, got {self.ce_weight}")
        if self.ce_weight == 0 and self.distill_weight == 0:
            raise ValueError("FocusConfig.ce_weight: ce_weight and distill_weight are both 0 (nothing to train)")
        if self.distill_weight < 0:
            raise ValueError(f"FocusConfig.distill_weight: must be >= 0, got {self.distill_weight}")
        if self.distill_temperature <= 0:
            raise ValueError(f"FocusConfig.distill_temperature: must be > 0, got {self.distill_temperature}")

    @property
    def focus_per_window(self) -> int:
        return -(-self.window // self.k)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FocusConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"FocusConfig: unknown field(s) {unknown}")
        return cls(**d)


def check_k_window(k, window) -> None:
    """1 <= k <= window, both integers; errors name the field."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"FocusConfig.k: must be an integer >= 1, got {k!r}")
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"FocusConfig.window: must be an integer >= 1, got {window!r}")
    if k > window:
        raise ValueError(f"FocusConfig.k: {k} is larger than the window {window} (need 1 <= k <= window)")
