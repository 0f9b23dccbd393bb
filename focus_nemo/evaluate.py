"""Fidelity of FOCUS to the base model with full context.

At every scored position each model gives a next-base distribution. Distances are taken over the
four bases (the model's probabilities of A, C, G, T renormalised to sum to one), from the base model
with full context (p) to the model under test (q): |delta p(true base)| (the per-nucleotide
probability shift), L1, L2, Hellinger, Jensen-Shannon (nats) and KL(p || q) (nats). Bits per base
use the model's full-vocabulary likelihood of the true base. Positions whose target is not A/C/G/T
(either case) are not scored, and neither is the first window, where FOCUS and every baseline equal
the base model by construction (DESIGN I1).

Methods compared against ``full`` (the frozen base model reading the whole sequence):

* ``focus``: the FOCUS model at ratio k and window W (one-pass forward, equal to streaming).
* ``truncation``: attention sees only the current window of W bases (no Focus memory); the same
  for every k.
* ``sliding``: the base model with sliding-window attention whose span equals the FOCUS attention
  budget for the sequence: ``S = W + ceil(W/k) * J`` with ``J = (L - 1) // W`` the number of windows
  completed before the window of the last base (L = input bases). S is the most key/value entries
  per attention block FOCUS holds while reading the last window (the Focus memory of J windows plus
  one window of bases). Query t attends to keys t - S + 1 .. t.

In every method the Hyena blocks read the whole sequence; only attention is restricted. Summaries
are over sequences: mean, median, sample standard deviation and the 95% confidence interval of the
mean, ``mean +- t(0.975, n - 1) * std / sqrt(n)`` (Student t).

`evaluate(cfg)` is what ``recipes/evaluate_focus.py`` calls; `fidelity` is the compact held-out check
used during training.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import platform
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from focus_nemo.focus.loss import split_case
from focus_nemo.train import ModelSection, resolve_fasta

log = logging.getLogger(__name__)

ACGT = torch.tensor([65, 67, 71, 84])
METRICS = ("abs_dp_true", "l1", "l2", "hellinger", "js", "kl")
METHODS = ("full", "focus", "truncation", "sliding")
SUMMARY_METRICS = ("bits", "bits_delta") + METRICS
SEQUENCE_COLUMNS = ("sequence_id", "source", "chrom", "start", "end", "strand", "length", "k", "method",
                    "attention_budget", "positions") + SUMMARY_METRICS
LABELS = {"bits": "bits/base", "bits_delta": "delta bits vs full", "abs_dp_true": "|delta p(true)|",
          "l1": "L1", "l2": "L2", "hellinger": "Hellinger", "js": "JS (nats)", "kl": "KL(full || method) (nats)"}


# ---------------------------------------------------------------------------------------------- metrics
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
        full = fm.base(x)
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


# ---------------------------------------------------------------------------------------------- statistics
@functools.lru_cache(maxsize=256)
def t_quantile(prob: float, df: int) -> float:
    """Quantile of Student's t distribution with `df` degrees of freedom (0.5 < prob < 1).

    df = 1 is the Cauchy closed form; otherwise the CDF is integrated numerically (composite Simpson
    on the density, 4000 intervals) and inverted by bisection, accurate to about 1e-9.
    """
    if not 0.5 < prob < 1.0:
        raise ValueError(f"t_quantile: prob must be in (0.5, 1), got {prob}")
    if df < 1:
        raise ValueError(f"t_quantile: df must be >= 1, got {df}")
    if df == 1:
        return math.tan(math.pi * (prob - 0.5))
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    simpson = np.ones(4001)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0

    def central(x: float) -> float:  # P(0 < T < x)
        t = np.linspace(0.0, x, 4001)
        density = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df))
        return float(simpson @ density) * x / 4000 / 3

    lo, hi = 0.0, 1.0
    while central(hi) < prob - 0.5:
        hi *= 2
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if central(mid) < prob - 0.5 else (lo, mid)
    return 0.5 * (lo + hi)


def summary_stats(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """n, mean, median, sample std (ddof 1) and the t confidence interval of the mean.

    With one value the std and the interval are NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("summary_stats: no values")
    n = int(v.size)
    mean = float(v.mean())
    out = {"n": n, "mean": mean, "median": float(np.median(v)), "std": math.nan,
           "ci_low": math.nan, "ci_high": math.nan}
    if n > 1:
        std = float(v.std(ddof=1))
        half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
        out.update(std=std, ci_low=mean - half, ci_high=mean + half)
    return out


# ---------------------------------------------------------------------------------------------- configuration
@dataclass
class SourceSection:
    """One evaluation source: a FASTA file (``bundled:NAME`` or a path) and optionally some regions."""

    fasta: str = "???"
    name: str = ""  # default: the bundled name or the file name without FASTA/compression suffixes
    regions: list[str] = field(default_factory=list)  # empty = every record
    num_sequences: int | None = None  # default: EvalConfig.num_sequences


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
    methods: list[str] = field(default_factory=lambda: ["focus", "truncation", "sliding"])
    seed: int = 0
    rc_prob: float = 0.5
    max_n_fraction: float = 0.1
    position_bins: int = 32
    device: str = "cpu"
    threads: int = 0
    plots: bool = True
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
        bad = sorted(set(self.methods) - set(METHODS[1:]))
        if bad:
            raise ValueError(f"EvalConfig.methods: {bad} not among {list(METHODS[1:])}")
        if not 0.0 <= self.rc_prob <= 1.0:
            raise ValueError(f"EvalConfig.rc_prob: must be in [0, 1], got {self.rc_prob}")
        if self.position_bins < 1:
            raise ValueError(f"EvalConfig.position_bins: must be >= 1, got {self.position_bins}")
        names = [source_name(s) for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"EvalConfig.sources: duplicate source name(s) {dup}; set `name` to tell them apart")
        for s in self.sources:
            if s.fasta in ("", "???"):
                raise ValueError("EvalConfig.sources: an entry has no `fasta`")
            if s.num_sequences is not None and s.num_sequences < 1:
                raise ValueError(f"EvalConfig.sources[{source_name(s)}].num_sequences: must be >= 1")

    def check_window(self, window: int) -> None:
        """Errors naming the field when a length or k does not fit the window in use."""
        from focus_nemo.focus.config import check_k_window

        for k in self.ks:
            try:
                check_k_window(k, window)
            except ValueError as e:
                raise ValueError(f"EvalConfig.ks: {e}") from None
        short = [n for n in self.lengths if n <= window]
        if short:
            raise ValueError(f"EvalConfig.lengths: {short} not longer than the window W={window}; positions in the "
                             f"first window are identical for every method, so nothing would be scored")
        if self.position_bins > window:
            raise ValueError(f"EvalConfig.position_bins: {self.position_bins} > window {window}")


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


def sliding_span(length: int, k: int, window: int) -> int:
    """Attention span of the sliding-window baseline for `length` input bases: W + ceil(W/k) * J,
    J = (length - 1) // W completed windows before the last base's window (the FOCUS budget)."""
    return window + -(-window // k) * ((length - 1) // window)


def attention_budget(method: str, length: int, k: int, window: int) -> int:
    """Most key/value entries per attention block a method holds while reading `length` bases."""
    if method == "full":
        return length
    if method == "truncation":
        return min(window, length)
    return sliding_span(length, k, window)  # focus and sliding


# ---------------------------------------------------------------------------------------------- sequences
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


# ---------------------------------------------------------------------------------------------- one sequence
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


@torch.no_grad()
def evaluate_sequence(fm, seq: EvalSequence, ks: Sequence[int], window: int, methods: Sequence[str],
                      bins: int) -> tuple[list[dict], dict[tuple[int | None, str], Profile]]:
    """Per-sequence metric means for every (method, k) and their position profiles.

    Returns:
        (rows with the `SEQUENCE_COLUMNS` fields, {(k or None, method): Profile}); ``full`` and
        ``truncation`` do not depend on k and have k None.
    """
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
    full = fm.base(x)
    p = acgt_probs(full[0][scored], torch.float64)
    bits_full = bits_per_base(full, y)[0][scored].double()

    def measure(method: str, k: int | None, logits: torch.Tensor | None) -> tuple[dict, Profile]:
        if logits is None:  # the reference itself
            per = {m: torch.zeros_like(bits_full) for m in METRICS}
            bits = bits_full
        else:
            per = distribution_metrics(p, acgt_probs(logits[0][scored], torch.float64), true_idx)
            bits = bits_per_base(logits, y)[0][scored].double()
        per["bits_delta"] = bits - bits_full
        row = {"sequence_id": seq.sequence_id, "source": seq.source, "chrom": seq.chrom, "start": seq.start,
               "end": seq.end, "strand": seq.strand, "length": L, "k": "" if k is None else k, "method": method,
               "attention_budget": attention_budget(method, L, k or ks[0], window), "positions": int(scored.sum()),
               "bits": float(bits.mean())}
        row.update({m: float(per[m].mean()) for m in ("bits_delta",) + METRICS})
        vals = np.stack([np.ones(len(pos))] + [per[m].cpu().numpy() for m in PROFILE_METRICS], 1)
        prof = Profile(np.zeros((bins, vals.shape[1])), np.zeros((n_windows, vals.shape[1])))
        for c in range(vals.shape[1]):
            prof.in_window[:, c] = np.bincount(bin_in, vals[:, c], minlength=bins)
            prof.by_window[:, c] = np.bincount(win_idx, vals[:, c], minlength=n_windows)
        return row, prof

    results = [measure("full", None, None)]
    if "truncation" in methods:
        results.append(measure("truncation", None, fm(x, k=ks[0], window=window, memory=False)))
    for k in ks:
        if "focus" in methods:
            results.append(measure("focus", k, fm(x, k=k, window=window)))
        if "sliding" in methods:
            results.append(measure("sliding", k, fm.base(x, attention_span=sliding_span(L, k, window))))
    rows = [r for r, _ in results]
    profiles = {(None if r["k"] == "" else r["k"], r["method"]): pr for r, pr in results}
    return rows, profiles


# ---------------------------------------------------------------------------------------------- summaries
def _sort_key(row: dict) -> tuple:
    k = row["k"]
    return (row["source"], row.get("chrom_group", ""), int(row["length"]), METHODS.index(row["method"]),
            -1 if k in ("", None) else int(k))


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Summary statistics over sequences per (source, chrom group, length, k, method).

    ``chrom_group`` is ``all`` (every record of the source); sources whose sequences come from
    several records get one more group per record.
    """
    groups: dict[tuple, list[dict]] = {}
    chroms: dict[str, set] = {}
    for r in rows:
        chroms.setdefault(r["source"], set()).add(r["chrom"])
    for r in rows:
        keys = [("all",)] + ([(r["chrom"],)] if len(chroms[r["source"]]) > 1 else [])
        for (cg,) in keys:
            groups.setdefault((r["source"], cg, r["length"], r["k"], r["method"]), []).append(r)
    out = []
    for (source, cg, length, k, method), members in groups.items():
        s = {"source": source, "chrom_group": cg, "length": length, "k": k, "method": method,
             "attention_budget": members[0]["attention_budget"], "sequences": len(members),
             "positions": sum(m["positions"] for m in members)}
        for metric in SUMMARY_METRICS:
            st = summary_stats([m[metric] for m in members])
            for stat in ("mean", "median", "std", "ci_low", "ci_high"):
                s[f"{metric}_{stat}"] = st[stat]
        out.append(s)
    return sorted(out, key=_sort_key)


PAIRED_METRICS = ("bits", "abs_dp_true", "js", "kl")


def paired_differences(rows: Sequence[dict]) -> list[dict]:
    """FOCUS minus each baseline, per sequence, summarised per (source, length, k).

    Pairing removes the sequence-to-sequence variation that dominates bits per base, so the
    interval of a difference is much narrower than the difference of two intervals. Baselines:
    ``truncation`` (the same row for every k) and ``sliding`` at the same k.
    """
    index = {(r["sequence_id"], r["method"], r["k"]): r for r in rows}
    out = []
    keys = sorted({(r["source"], r["length"], r["k"]) for r in rows if r["method"] == "focus"})
    for source, length, k in keys:
        ids = sorted({r["sequence_id"] for r in rows if r["source"] == source and r["length"] == length})
        for baseline, bk in (("truncation", ""), ("sliding", k)):
            if not all((i, baseline, bk) in index for i in ids):
                continue
            s = {"source": source, "length": length, "k": k, "comparison": f"focus - {baseline}",
                 "sequences": len(ids)}
            for metric in PAIRED_METRICS:
                st = summary_stats([index[(i, "focus", k)][metric] - index[(i, baseline, bk)][metric] for i in ids])
                for stat in ("mean", "median", "std", "ci_low", "ci_high"):
                    s[f"{metric}_{stat}"] = st[stat]
            out.append(s)
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.10g}"
    return str(v)


def write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_fmt(r[c]) for c in columns])


def _num(v: float, metric: str) -> str:
    if math.isnan(v):
        return "nan"
    if metric == "bits":
        return f"{v:.4f}"
    return "0" if v == 0 else f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}"


def summary_markdown(summary: Sequence[dict]) -> str:
    """Two markdown tables: mean +- 95% CI half-width, and median (std), per group."""
    metrics = SUMMARY_METRICS
    head = ["source", "records", "length", "method", "k", "attention KV", "n"]
    head += [LABELS[m].replace("|", "\\|") for m in metrics]
    lines = ["Mean over sequences +- half-width of the 95% confidence interval of the mean (Student t).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    detail = ["Median over sequences (sample standard deviation).", "", "| " + " | ".join(head) + " |",
              "|" + "---|" * len(head)]
    for s in summary:
        key = [s["source"], s["chrom_group"], str(s["length"]), s["method"], str(s["k"]) or "-",
               f"{s['attention_budget']:,}", str(s["sequences"])]
        ci = []
        med = []
        for m in metrics:
            mean, lo = s[f"{m}_mean"], s[f"{m}_ci_low"]
            half = mean - lo
            ci.append(_num(mean, m) if math.isnan(half) or half == 0 else f"{_num(mean, m)} +- {_num(half, m)}")
            med.append(f"{_num(s[f'{m}_median'], m)} ({_num(s[f'{m}_std'], m)})")
        key[4] = key[4] if key[4] else "-"
        lines.append("| " + " | ".join(key + ci) + " |")
        detail.append("| " + " | ".join(key + med) + " |")
    return "\n".join(lines + [""] + detail) + "\n"


def paired_markdown(paired: Sequence[dict]) -> str:
    """FOCUS minus baseline per sequence: mean +- 95% CI half-width (negative = FOCUS closer to full)."""
    head = ["source", "length", "k", "comparison", "n"] + [LABELS[m].replace("|", "\\|") for m in PAIRED_METRICS]
    head[5] = "bits/base"
    lines = ["FOCUS minus baseline, paired over sequences: mean +- half-width of the 95% CI (negative: FOCUS "
             "closer to the base model with full context).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in paired:
        cells = [s["source"], str(s["length"]), str(s["k"]), s["comparison"], str(s["sequences"])]
        for m in PAIRED_METRICS:
            mean, half = s[f"{m}_mean"], s[f"{m}_mean"] - s[f"{m}_ci_low"]
            fmt = "delta" if m == "bits" else m
            cells.append(_num(mean, fmt) if math.isnan(half) else f"{_num(mean, fmt)} +- {_num(half, fmt)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- plots
def _style(method: str, k, ks: Sequence[int]):
    import matplotlib

    if method == "truncation":
        return {"color": "black", "linestyle": ":", "label": "truncation (W)"}
    cmap = matplotlib.colormaps["viridis"]
    c = cmap(0.85 * ks.index(k) / max(1, len(ks) - 1)) if k in ks else "gray"
    if method == "focus":
        return {"color": c, "linestyle": "-", "label": f"FOCUS k={k}"}
    return {"color": c, "linestyle": "--", "label": f"sliding, span of k={k}"}


def _profile_figure(profiles: dict, axis: str, ks: Sequence[int], window: int, path: Path) -> None:
    from matplotlib.figure import Figure

    sources = sorted({s for s, _, _ in profiles})
    shown = ("abs_dp_true", "kl")
    fig = Figure(figsize=(11, 3.6 * len(sources)), layout="constrained")
    axes = fig.subplots(len(sources), len(shown), squeeze=False)
    for r, source in enumerate(sources):
        for c, metric in enumerate(shown):
            ax = axes[r][c]
            col = 1 + PROFILE_METRICS.index(metric)
            for (src, k, method), prof in sorted(profiles.items(), key=lambda kv: (kv[0][2], kv[0][1] or 0)):
                if src != source or method == "full":
                    continue
                table = prof.in_window if axis == "in_window" else prof.by_window
                keep = table[:, 0] > 0
                idx = np.nonzero(keep)[0]
                if axis == "in_window":
                    width = window / table.shape[0]
                    xs = (idx + 0.5) * width
                else:
                    xs = (idx + 0.5) * window
                ys = table[keep, col] / table[keep, 0]
                ax.plot(xs, np.where(ys > 0, ys, np.nan), **_style(method, k, ks))
            ax.set_yscale("log")
            ax.set_ylabel(LABELS[metric])
            ax.set_xlabel("position in window (bases)" if axis == "in_window"
                          else "position in sequence = context read so far (bases)")
            ax.set_title(source, fontsize=10)
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.savefig(path, dpi=110)


def _k_figure(summary: Sequence[dict], ks: Sequence[int], path: Path) -> None:
    from matplotlib.figure import Figure

    rows = [s for s in summary if s["chrom_group"] == "all"]
    sources = sorted({s["source"] for s in rows})
    lengths = sorted({s["length"] for s in rows})
    shown = ("bits_delta", "abs_dp_true", "kl")
    fig = Figure(figsize=(14, 3.6 * len(sources)), layout="constrained")
    axes = fig.subplots(len(sources), len(shown), squeeze=False)
    markers = "osD^v<>"
    for r, source in enumerate(sources):
        for c, metric in enumerate(shown):
            ax = axes[r][c]
            for li, length in enumerate(lengths):
                sel = [s for s in rows if s["source"] == source and s["length"] == length]
                suffix = f", L={length:,}" if len(lengths) > 1 else ""
                for method, ls, color in (("focus", "-", "tab:blue"), ("sliding", "--", "tab:orange")):
                    pts = sorted((s["k"], s) for s in sel if s["method"] == method)
                    if not pts:
                        continue
                    xs = [k for k, _ in pts]
                    ys = np.array([s[f"{metric}_mean"] for _, s in pts])
                    lo = np.array([s[f"{metric}_ci_low"] for _, s in pts])
                    hi = np.array([s[f"{metric}_ci_high"] for _, s in pts])
                    ax.errorbar(xs, ys, yerr=[ys - lo, hi - ys], linestyle=ls, color=color, marker=markers[li % 7],
                                capsize=3, label=("FOCUS" if method == "focus" else "sliding window") + suffix)
                for s in sel:
                    if s["method"] == "truncation":
                        ax.axhline(s[f"{metric}_mean"], color="black", linestyle=":",
                                   label="truncation (W)" + suffix)
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(ks), [str(k) for k in ks])
            ax.set_xlabel("k (bases per Focus token)")
            ax.set_ylabel(LABELS[metric])
            ax.set_title(f"{source} (mean over sequences, 95% CI)", fontsize=10)
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------------------------- the run
def _profile_rows(profiles: dict, window: int) -> list[dict]:
    rows = []
    for (source, k, method), prof in sorted(profiles.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][2]),
                                                                                kv[0][1] or 0)):
        for axis, table, width in (("position_in_window", prof.in_window, window / prof.in_window.shape[0]),
                                   ("window_index", prof.by_window, window)):
            for b in range(table.shape[0]):
                n = table[b, 0]
                if n == 0:
                    continue
                row = {"source": source, "k": "" if k is None else k, "method": method, "axis": axis, "bin": b,
                       "start": int(round(b * width)), "end": int(round((b + 1) * width)), "positions": int(n)}
                row.update({m: table[b, 1 + i] / n for i, m in enumerate(PROFILE_METRICS)})
                rows.append(row)
    return rows


def evaluate(cfg: EvalConfig) -> dict:
    """Run the evaluation and write its outputs into ``cfg.run_dir``.

    Files: ``config.json``; ``sequences.csv`` (one row per sequence, k and method, `SEQUENCE_COLUMNS`);
    ``summary.csv`` and ``summary.md`` (per source, record group, length, k and method: mean, median,
    std and 95% CI over sequences); ``paired.csv`` (FOCUS minus each baseline per sequence, the same
    statistics; also in ``summary.md``); ``profile.csv`` (metric means per position-in-window bin and per
    window index, pooled over sequences); ``run_info.json`` (machine, versions, seconds); with
    ``plots``: ``shift_vs_position_in_window.png``, ``shift_vs_length.png`` and ``shift_vs_k.png``.

    Returns:
        {"summary": summary rows, "run_dir": path, "seconds": wall time}.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from focus_nemo.inference import load_focus_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    checkpoint = f"random:{cfg.model.preset}" if cfg.model.checkpoint == "random" else cfg.model.checkpoint
    fm = load_focus_model(checkpoint, cfg.adapter, dtype=cfg.model.dtype, device=cfg.device, config=cfg.model.config)
    window = cfg.window or fm.config.window
    cfg.check_window(window)
    (run / "config.json").write_text(json.dumps({**asdict(cfg), "window_used": window}, indent=2))
    sequences = sample_sequences(cfg)
    log.info("evaluating %d sequences from %s at k=%s, W=%d", len(sequences),
             ", ".join(source_name(s) for s in cfg.sources), cfg.ks, window)
    rows: list[dict] = []
    profiles: dict[tuple, Profile] = {}
    with Progress(TextColumn("[bold]evaluate[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn()) as progress:
        task = progress.add_task("evaluate", total=len(sequences), info="")
        for seq in sequences:
            seq_rows, seq_prof = evaluate_sequence(fm, seq, cfg.ks, window, cfg.methods, cfg.position_bins)
            rows += seq_rows
            for (k, method), prof in seq_prof.items():
                key = (seq.source, k, method)
                if key in profiles:
                    profiles[key].add(prof)
                else:
                    profiles[key] = prof
            progress.update(task, advance=1, info=seq.sequence_id)
    summary = summarize(rows)
    write_csv(run / "sequences.csv", rows, SEQUENCE_COLUMNS)
    summary_cols = ["source", "chrom_group", "length", "k", "method", "attention_budget", "sequences", "positions"]
    summary_cols += [f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "median", "std", "ci_low", "ci_high")]
    write_csv(run / "summary.csv", summary, summary_cols)
    paired = paired_differences(rows)
    write_csv(run / "paired.csv", paired, ["source", "length", "k", "comparison", "sequences"]
              + [f"{m}_{s}" for m in PAIRED_METRICS for s in ("mean", "median", "std", "ci_low", "ci_high")])
    (run / "summary.md").write_text(summary_markdown(summary) + "\n" + paired_markdown(paired))
    prof_rows = _profile_rows(profiles, window)
    write_csv(run / "profile.csv", prof_rows, ["source", "k", "method", "axis", "bin", "start", "end", "positions",
                                                *PROFILE_METRICS])
    if cfg.plots:
        _profile_figure(profiles, "in_window", cfg.ks, window, run / "shift_vs_position_in_window.png")
        _profile_figure(profiles, "by_window", cfg.ks, window, run / "shift_vs_length.png")
        _k_figure(summary, cfg.ks, run / "shift_vs_k.png")
    seconds = round(time.time() - t0, 1)
    info = {"seconds": seconds, "sequences": len(sequences), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine(), "processor": _cpu_name(),
            "python": platform.python_version(), "device": str(fm.focus_embedding.device)}
    (run / "run_info.json").write_text(json.dumps(info, indent=2))
    return {"summary": summary, "run_dir": str(run), "seconds": seconds}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
