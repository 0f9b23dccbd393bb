"""FOCUS adapter configuration (only the fields the adapter adds to a frozen Evo-2)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

SCOPES = ("window", "kmer")
LEVEL2_POOLS = ("mean", "trained")
AUTO = "auto"  # FocusConfig.horizon: the base model's default (`default_horizon`)


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
        horizon: bases of Focus memory a window sees (DESIGN D12), a positive multiple of `window`:
            window j's queries (its bases and its Focus tokens) see the Focus entries of windows
            j - horizon/window .. j - 1 only, i.e. of the horizon/window most recent completed windows;
            older entries leave the attention memory, so streaming time per base and memory are
            constant in the sequence length (at most horizon/window x ceil(window/k) entries per
            attention block). ``None`` (the default) keeps every Focus entry (the paper's unbounded
            memory). ``"auto"`` stands for `default_horizon` of the base model and is resolved with
            `resolve_horizon` when a model is built. Not a trained parameter: an adapter trained
            with one horizon runs with any other (or none).
        local: windows before a query's own whose ordinary bases it sees exactly (DESIGN D11): with
            ``local`` = 1 a base of window j (and a Focus token of window j) also sees every base of
            window j - 1, and the Focus memory covers the windows before that (j - 1 - local .. back
            to the horizon), so every base sees at least W exact preceding bases and a stream holds
            at most (local + 1) W ordinary entries per attention block besides the Focus memory.
            0 (the default) is the paper's scheme. Like the horizon, a run-time choice: an adapter
            records the value it was trained with and may be run with another.
        level2: Focus entries per second-level entry k2 (DESIGN D12, `focus_nemo.focus.level2`): with
            a horizon, the entries that leave it are pooled in groups of k2 consecutive entries into one
            coarse entry each instead of being dropped. ``None`` (the default) drops them. Needs a horizon.
        level2_pool: how a group is pooled: ``"mean"`` (uniform weights, training-free) or ``"trained"``
            (attention weights of a trained query per block and head, the adapter's ``level2_query``;
            zero-initialised, i.e. the mean until trained).
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
    horizon: int | str | None = None
    local: int = 0
    level2: int | None = None
    level2_pool: str = "trained"

    def __post_init__(self) -> None:
        check_k_window(self.k, self.window)
        check_local(self.local)
        check_horizon(self.horizon, self.window, allow_auto=True)
        check_level2(self.level2, self.horizon, self.level2_pool, self.local, self.window)
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

    def horizon_windows(self, window: int | None = None) -> int | None:
        """Completed windows of Focus memory a window sees (`horizon` / W at window W), None = all."""
        window = self.window if window is None else window
        check_horizon(self.horizon, window)
        return None if self.horizon is None else self.horizon // window

    def level2_size(self) -> int | None:
        """k2 (Focus entries per second-level entry) or None, checked against the current horizon."""
        check_level2(self.level2, self.horizon, self.level2_pool, self.local, self.window)
        return self.level2

    def resolve_horizon(self, evo2_config) -> FocusConfig:
        """This config with ``horizon="auto"`` replaced by `default_horizon` of the base (a copy)."""
        if self.horizon != AUTO:
            return dataclasses.replace(self)
        return dataclasses.replace(self, horizon=default_horizon(evo2_config, self.window))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FocusConfig:
        """A config from `to_dict` output; fields added later (``horizon``, ``level2``, ``level2_pool``)
        take their defaults (off), so adapter files written before they existed still load."""
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


def check_local(local) -> None:
    """`FocusConfig.local`: a non-negative integer number of windows."""
    if not isinstance(local, int) or isinstance(local, bool) or local < 0:
        raise ValueError(f"FocusConfig.local: must be an integer >= 0 (windows of exact local context), got {local!r}")


def check_level2(level2, horizon, pool: str = "trained", local: int = 0, window: int = 1) -> None:
    """None, or a positive integer k2 with a horizon set that reaches past the exact local band of `local`
    windows of `window` bases; the pool one of `LEVEL2_POOLS`."""
    if pool not in LEVEL2_POOLS:
        raise ValueError(f"FocusConfig.level2_pool: {pool!r} is not one of {LEVEL2_POOLS}")
    if level2 is None:
        return
    if not isinstance(level2, int) or isinstance(level2, bool) or level2 < 1:
        raise ValueError(f"FocusConfig.level2: must be None or a positive integer (Focus entries per "
                         f"second-level entry), got {level2!r}")
    if horizon is None:
        raise ValueError(f"FocusConfig.level2: {level2} needs a horizon (FocusConfig.horizon is None: no Focus "
                         f"entry ever leaves the memory)")
    if isinstance(horizon, int) and horizon <= local * window:
        raise ValueError(f"FocusConfig.level2: the horizon ({horizon} bases) must reach past the local band ({local} "
                         f"window(s) of {window} bases) for entries to leave it into the second level")


def check_horizon(horizon, window: int, allow_auto: bool = False) -> None:
    """None, or a positive integer multiple of the window (and ``"auto"`` where `allow_auto`)."""
    if horizon is None or (allow_auto and horizon == AUTO):
        return
    if horizon == AUTO:
        raise ValueError("FocusConfig.horizon: 'auto' is not resolved; call FocusConfig.resolve_horizon(evo2_config) "
                         "with the base model's Evo2Config first")
    if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
        raise ValueError(f"FocusConfig.horizon: must be None, 'auto' or a positive integer multiple of the window "
                         f"({window}), got {horizon!r}")
    if horizon % window:
        raise ValueError(f"FocusConfig.horizon: {horizon} is not a multiple of the window {window}")


def parse_horizon(text: str) -> int | str | None:
    """The command-line form of `FocusConfig.horizon`: ``none`` (unbounded memory), ``auto`` (the base
    model's trained context, `default_horizon`) or a number of bases (a multiple of the window)."""
    low = str(text).strip().lower()
    if low in ("none", "unbounded"):
        return None
    if low == AUTO:
        return AUTO
    try:
        value = int(low)
    except ValueError:
        raise ValueError(f"horizon: expected none, auto or a number of bases, got {text!r}") from None
    if value < 1:
        raise ValueError(f"horizon: must be a positive number of bases, got {text!r}")
    return value


def horizon_for(horizon, evo2_config, window: int) -> int | None:
    """`horizon` (None, ``"auto"`` or bases) checked against `window`, with ``"auto"`` resolved to
    `default_horizon` of `evo2_config` at that window."""
    if horizon == AUTO:
        return default_horizon(evo2_config, window)
    check_horizon(horizon, window)
    return horizon


def default_horizon(evo2_config, window: int) -> int:
    """The horizon that keeps FOCUS inside the base model's trained context (``Evo2Config.max_seqlen``).

    A base of window j attends to the Focus memory of horizon/W windows and to its own window, so its
    farthest key is up to horizon + W - 1 positions back; the result is the largest multiple of W with
    horizon + W <= max_seqlen (every attention distance within the distances the base was trained on),
    and at least one window. For the 1 Mb Evo-2 models at W = 1024: 1,047,552 bases (1023 windows).
    """
    check_k_window(1, window)
    trained = int(evo2_config.max_seqlen)
    return max(1, trained // window - 1) * window
