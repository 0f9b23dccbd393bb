"""The evaluation schema: `EvalConfig` and its `SourceSection`s (validated when built; errors name the
field) and `config_from_hydra` (see conf/evaluate_focus.yaml)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from focus_nemo.evaluation.metrics import METHODS
from focus_nemo.training.config import ModelSection


@dataclass
class SourceSection:
    """One evaluation source: a FASTA file (``bundled:NAME`` or a path) and optionally some regions."""

    fasta: str = "???"
    name: str = ""  # default: the bundled name or the file name without FASTA/compression suffixes
    regions: list[str] = field(default_factory=list)  # empty = every record
    num_sequences: int | None = None  # default: EvalConfig.num_sequences


@dataclass
class RecallSection:
    """The repeat-copy recall probe (`focus_nemo.evaluation.recall`) run beside the fidelity evaluation."""

    enabled: bool = False
    only: bool = False  # true: the recall probe alone (implies enabled), no fidelity evaluation
    distances: list[int] = field(default_factory=lambda: [64, 1024, 4096, 16384])  # bases between the copies
    n_trials: int = 32  # trials per distance, the same for every method (paired)
    variants: list[str] = field(default_factory=lambda: ["exact", "diverged", "revcomp"])
    controls: list[str] = field(default_factory=lambda: ["native", "foreign"])
    # null: the evaluation's methods (`EvalConfig.methods_for`); full context is always the reference
    methods: list[str] | None = None
    ks: list[int] | None = None  # null: EvalConfig.ks
    # Full context runs on windows (2 x segment + distance bases) up to this length, and is reported absent
    # beyond it; null: no limit. Other methods run at every distance.
    full_max_len: int | None = 32768
    # Retained is reported where full context's copy advantage (the reference) is at least this (nats/base);
    # a base that recalls gains ~1, and a ratio of two numbers near 0 says nothing
    min_reference: float = 0.05
    source: str | None = None  # name of the source the trials are drawn from; null: the first of `sources`
    seed: int | None = None  # null: EvalConfig.seed
    segment: int = 256  # bases of the copied segment

    def __post_init__(self) -> None:
        from focus_nemo.evaluation.recall import CONTROLS, VARIANTS

        if self.only:
            self.enabled = True
        if not self.distances:
            raise ValueError("EvalConfig.recall.distances: empty (name at least one distance)")
        for d in self.distances:
            if isinstance(d, bool) or not isinstance(d, int) or d < 0:
                raise ValueError(f"EvalConfig.recall.distances: {d!r} is not a distance (an integer >= 0 bases)")
        if self.n_trials < 2:
            raise ValueError(f"EvalConfig.recall.n_trials: {self.n_trials} < 2 (a confidence interval needs at "
                             "least 2 trials)")
        for key, values, known in (("variants", self.variants, VARIANTS), ("controls", self.controls, CONTROLS)):
            if not values:
                raise ValueError(f"EvalConfig.recall.{key}: empty (name at least one of {list(known)})")
            bad = [v for v in values if v not in known]
            if bad:
                raise ValueError(f"EvalConfig.recall.{key}: {bad} not among {list(known)}")
        if self.methods is not None:
            if not self.methods:
                raise ValueError("EvalConfig.recall.methods: empty (name at least one method, or null for the "
                                 "evaluation's)")
            bad = [m for m in self.methods if m not in METHODS]
            if bad:
                raise ValueError(f"EvalConfig.recall.methods: {bad} not among {list(METHODS)}")
        if self.ks is not None:
            if not self.ks:
                raise ValueError("EvalConfig.recall.ks: empty (name at least one ratio k, or null for `ks`)")
            bad = [k for k in self.ks if isinstance(k, bool) or not isinstance(k, int) or k < 1]
            if bad:
                raise ValueError(f"EvalConfig.recall.ks: {bad} are not ratios (integers >= 1)")
        if self.segment < 1:
            raise ValueError(f"EvalConfig.recall.segment: {self.segment} < 1")
        if not self.min_reference >= 0:
            raise ValueError(f"EvalConfig.recall.min_reference: {self.min_reference} < 0")
        if self.full_max_len is not None and self.full_max_len < 2:
            raise ValueError(f"EvalConfig.recall.full_max_len: {self.full_max_len} < 2 (or null for no limit)")

    def methods_used(self, evaluation_methods: list[str]) -> list[str]:
        """``full`` then `methods` (or the evaluation's), in `METHODS` order, without repeats."""
        wanted = set(self.methods if self.methods is not None else evaluation_methods) | {"full"}
        return [m for m in METHODS if m in wanted]


@dataclass
class EvalConfig:
    """Everything that decides an evaluation run (see conf/evaluate_focus.yaml)."""

    model: ModelSection = field(default_factory=ModelSection)
    adapter: str | None = "embedded"  # adapter directory, "embedded", or None/"none" (untrained Focus tokens)
    sources: list[SourceSection] = field(default_factory=lambda: [SourceSection(fasta="bundled:chr20_heldout")])
    lengths: list[int] = field(default_factory=lambda: [10_000])  # input bases per sequence
    num_sequences: int = 24  # per source and length
    ks: list[int] = field(default_factory=lambda: [25, 50, 100, 200])
    window: int | None = None  # None: the adapter's W
    # Focus memory a window sees (FocusConfig.horizon): None keeps the adapter's; "none" (every Focus entry),
    # "auto" (the base model's trained context) or a number of bases (a multiple of the window)
    horizon: str | None = None
    # None: FOCUS as the adapter runs it and its equal-budget sliding window, with truncation (`methods_for`)
    methods: list[str] | None = None
    seed: int = 0
    rc_prob: float = 0.5
    max_n_fraction: float = 0.1
    position_bins: int = 32
    device: str = "cpu"
    threads: int = 0
    plots: bool = True
    recall: RecallSection = field(default_factory=RecallSection)
    run_dir: str = "runs/evaluate"

    def __post_init__(self) -> None:
        if isinstance(self.adapter, str) and self.adapter.lower() in ("none", "null", ""):
            self.adapter = None
        if not self.sources:
            raise ValueError("EvalConfig.sources: empty (name at least one FASTA file)")
        if not self.lengths or any(n < 2 for n in self.lengths):
            raise ValueError(f"EvalConfig.lengths: need at least one length >= 2, got {self.lengths}")
        if not self.ks:
            raise ValueError("EvalConfig.ks: empty (name at least one ratio k)")
        if self.num_sequences < 1:
            raise ValueError(f"EvalConfig.num_sequences: must be >= 1, got {self.num_sequences}")
        if self.methods is not None and not self.methods:
            raise ValueError("EvalConfig.methods: empty (name at least one method, or null for the default)")
        bad = sorted(set(self.methods or ()) - set(METHODS[1:]))
        if bad:
            raise ValueError(f"EvalConfig.methods: {bad} not among {list(METHODS[1:])}")
        if self.horizon is not None:
            from focus_nemo.focus.config import parse_horizon

            try:
                parse_horizon(str(self.horizon))
            except ValueError as e:
                raise ValueError(f"EvalConfig.horizon: {e}") from None
        if not 0.0 <= self.rc_prob <= 1.0:
            raise ValueError(f"EvalConfig.rc_prob: must be in [0, 1], got {self.rc_prob}")
        if self.position_bins < 1:
            raise ValueError(f"EvalConfig.position_bins: must be >= 1, got {self.position_bins}")
        if self.threads < 0:
            raise ValueError(f"threads: must be >= 1 (or 0 for torch's default), got {self.threads}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            raise ValueError(f"device: {self.device!r} is not a device (cpu, cuda, cuda:N or mps)")
        names = [source_name(s) for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"EvalConfig.sources: duplicate source name(s) {dup}; set `name` to tell them apart")
        if self.recall.source is not None and self.recall.source not in names:
            raise ValueError(f"EvalConfig.recall.source: {self.recall.source!r} is not among the sources {names}")
        for s in self.sources:
            if s.fasta in ("", "???"):
                raise ValueError("EvalConfig.sources: an entry has no `fasta`")
            if s.num_sequences is not None and s.num_sequences < 1:
                raise ValueError(f"EvalConfig.sources[{source_name(s)}].num_sequences: must be >= 1")

    def methods_for(self, local: int) -> list[str]:
        """`methods`, or by default FOCUS as the adapter runs it (``focus`` for ``local = 0``, ``focus_local``
        with the band), truncation, and the sliding window of that FOCUS's key/value budget."""
        if self.methods is not None:
            return list(self.methods)
        return ["focus_local", "truncation", "sliding_local"] if local else ["focus", "truncation", "sliding"]

    def check_window(self, window: int) -> None:
        """Errors naming the field when a length or k does not fit the window in use."""
        from focus_nemo.focus.config import check_k_window

        for k in self.ks:
            try:
                check_k_window(k, window)
            except ValueError as e:
                raise ValueError(f"EvalConfig.ks: {e}") from None
        short = [n for n in self.lengths if n <= window]
        if short and not self.recall.only:
            raise ValueError(f"EvalConfig.lengths: {short} not longer than the window W={window}; positions in the "
                             f"first window are identical for every method, so nothing would be scored")
        if self.position_bins > window:
            raise ValueError(f"EvalConfig.position_bins: {self.position_bins} > window {window}")
        for k in self.recall.ks or ():
            try:
                check_k_window(k, window)
            except ValueError as e:
                raise ValueError(f"EvalConfig.recall.ks: {e}") from None

    def focus_horizon(self, evo2_config, window: int, current: int | None) -> int | None:
        """The horizon (bases or None) evaluation runs FOCUS with: `current` (the adapter's) when
        `horizon` is None, else `horizon` resolved for the base model at `window` (errors name the field)."""
        from focus_nemo.focus.config import horizon_for, parse_horizon

        try:
            value = current if self.horizon is None else parse_horizon(str(self.horizon))
            return horizon_for(value, evo2_config, window)
        except ValueError as e:
            raise ValueError(f"EvalConfig.horizon: {e}") from None


def config_from_hydra(cfg) -> EvalConfig:
    """Validate a composed Hydra config against `EvalConfig` (errors name the key).

    A source may be given as a plain string (the FASTA spec), e.g. ``sources=[bundled:phage_lambda]``.
    """
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    if isinstance(raw.get("sources"), list):
        raw["sources"] = [{"fasta": s} if isinstance(s, str) else s for s in raw["sources"]]
    merged = OmegaConf.merge(OmegaConf.structured(EvalConfig), raw)
    return OmegaConf.to_object(merged)


def source_name(src: SourceSection) -> str:
    """`src.name`, else the bundled name, else the file name without FASTA and gzip suffixes."""
    if src.name:
        return src.name
    if src.fasta.startswith("bundled:"):
        return src.fasta.split(":", 1)[1]
    name = Path(src.fasta).name
    for suffix in (".gz", ".bgz"):
        name = name.removesuffix(suffix)
    for suffix in (".fasta", ".fa", ".fna", ".fas"):
        name = name.removesuffix(suffix)
    return name
