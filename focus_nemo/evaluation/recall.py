"""The repeat-copy recall probe: does a model use an earlier copy of a segment to predict it again?

A real segment A (256 bases of held-out DNA) is placed, then d bases of real held-out background, then A
again. The first copy is A itself (``exact``), A with 5% point substitutions (``diverged``) or A's reverse
complement (``revcomp``); the final copy is always A, so every window scores the same bases. Two controls
put something else where the first copy was: the ``native`` control the 256 bases of real DNA that precede
the background in the genome, the ``foreign`` control an unrelated held-out segment. The copy advantage of
a trial is CE(control) - CE(repeat) over the final copy of A, in nats per base: about 1 for a model that
reads the earlier copy (its CE on A falls from ~1.35 towards 0), 0 for one that does not.

The probe is model-agnostic: ``logits_fn`` maps a [1, L] token tensor to [1, L, V] logits, so full context,
FOCUS (one pass or streaming), truncation and sliding windows are all scored the same way, on the same
seeded trials (paired across methods).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from focus_nemo.data.edits import reverse_complement, substitute

VARIANTS = ("exact", "diverged", "revcomp")
CONTROLS = ("native", "foreign")
SEGMENT = 256
DIVERGED_RATE = 0.05
_ACGT = np.zeros(256, dtype=bool)
_ACGT[list(b"ACGTacgt")] = True


@dataclass
class RecallTrial:
    """One trial at one distance: the segment A, the first copies of each variant, the background and the
    two control segments (all bytes, upper-cased)."""

    distance: int
    segment: np.ndarray
    first: dict[str, np.ndarray]
    background: np.ndarray
    controls: dict[str, np.ndarray]

    def window(self, first: np.ndarray) -> np.ndarray:
        """`first` + background + A: the L bases a model reads (A's bases are the scored targets)."""
        return np.concatenate([first, self.background, self.segment])


def _clean_start(seq: np.ndarray, length: int, rng: np.random.Generator, avoid: list[tuple[int, int]]) -> int:
    """A start of `length` bases of `seq` that are all A/C/G/T and overlap none of `avoid`."""
    acgt = _ACGT[seq]
    bad = np.concatenate([[0], np.cumsum(~acgt)])
    for _ in range(10_000):
        s = int(rng.integers(0, len(seq) - length + 1))
        if bad[s + length] - bad[s]:
            continue
        if any(s < e and a < s + length for a, e in avoid):
            continue
        return s
    raise ValueError(f"recall probe: no stretch of {length} A/C/G/T bases left in a sequence of {len(seq)} bases; "
                     "give a longer held-out region")


def make_trials(heldout: np.ndarray, distance: int, n: int, seed: int, segment: int = SEGMENT) -> list[RecallTrial]:
    """`n` seeded trials at `distance` from a held-out region (bytes). The trials of one seed do not depend on
    the distances asked for, so a distance added later leaves the others unchanged."""
    if distance < 0:
        raise ValueError(f"recall probe: distance must be >= 0, got {distance}")
    if len(heldout) < 2 * (2 * segment + distance):
        raise ValueError(f"recall probe: the held-out region ({len(heldout)} bases) is too short for distance "
                         f"{distance}")
    up = np.asarray(heldout, dtype=np.uint8) & 0xDF  # upper case; N stays N
    rng = np.random.default_rng([seed, distance])
    trials = []
    for _ in range(n):
        s_bg = _clean_start(up, segment + distance, rng, [])  # native control + background, contiguous
        s_a = _clean_start(up, segment, rng, [(s_bg, s_bg + segment + distance)])
        s_f = _clean_start(up, segment, rng, [(s_bg, s_bg + segment + distance), (s_a, s_a + segment)])
        a = up[s_a: s_a + segment].copy()
        trials.append(RecallTrial(
            distance=distance, segment=a,
            first={"exact": a, "diverged": substitute(a, DIVERGED_RATE, rng), "revcomp": reverse_complement(a)},
            background=up[s_bg + segment: s_bg + segment + distance].copy(),
            controls={"native": up[s_bg: s_bg + segment].copy(), "foreign": up[s_f: s_f + segment].copy()}))
    return trials


def segment_nats(logits_fn: Callable[[torch.Tensor], torch.Tensor], window: np.ndarray, segment: int) -> float:
    """Mean cross-entropy (nats/base) of the last `segment` bases of `window` under `logits_fn`."""
    tokens = torch.from_numpy(window.astype(np.int64))[None]
    with torch.no_grad():
        logits = logits_fn(tokens[:, :-1])
    lo = tokens.shape[1] - 1 - segment
    target = tokens[0, lo + 1:].to(logits.device)
    return float(torch.nn.functional.cross_entropy(logits[0, lo:].float(), target).double())


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    a = np.asarray(values, dtype=np.float64)
    if len(a) < 2:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(a), (resamples, len(a)))
    means = a[idx].mean(1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def recall_probe(logits_fn: Callable[[torch.Tensor], torch.Tensor], heldout: np.ndarray, distances: Sequence[int],
                 n_trials: int = 32, seed: int = 0, variants: Sequence[str] = VARIANTS,
                 segment: int = SEGMENT) -> tuple[list[dict], list[dict]]:
    """Copy advantage at each distance, variant and control.

    The scored target of a window is the final copy of A; the position of the first base of A' in the window
    is 2 * segment + distance, so its first base is predicted from exactly the earlier copy and the background.
    (The window holds 2 * segment + distance bases; the first of them is never a target.)

    Returns:
        (rows: one per trial x variant x control with the CEs and the advantage; summary: one per distance x
        variant x control with mean, 95% bootstrap CI and the mean CEs).
    """
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"recall probe: unknown variant {v!r} (known: {', '.join(VARIANTS)})")
    rows = []
    for d in distances:
        for t_i, trial in enumerate(make_trials(heldout, int(d), n_trials, seed, segment)):
            ctrl = {c: segment_nats(logits_fn, trial.window(trial.controls[c]), segment) for c in CONTROLS}
            for v in variants:
                rep = segment_nats(logits_fn, trial.window(trial.first[v]), segment)
                for c in CONTROLS:
                    rows.append({"distance": int(d), "trial": t_i, "variant": v, "control": c,
                                 "ce_repeat": rep, "ce_control": ctrl[c], "advantage": ctrl[c] - rep})
    return rows, summarize_recall(rows)


def summarize_recall(rows: Sequence[dict]) -> list[dict]:
    """Mean copy advantage with a 95% bootstrap CI per (method, k, distance, variant, control); ``method`` and
    ``k`` are keys of the output where the rows have them."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("method", ""), r.get("k"), r["distance"], r["variant"], r["control"]), []).append(r)
    out = []
    for (method, k, d, v, c), rs in groups.items():
        adv = [r["advantage"] for r in rs]
        lo, hi = bootstrap_ci(adv, seed=d)
        rec = {"distance": d, "variant": v, "control": c, "trials": len(rs), "advantage": float(np.mean(adv)),
               "ci_low": lo, "ci_high": hi, "ce_repeat": float(np.mean([r["ce_repeat"] for r in rs])),
               "ce_control": float(np.mean([r["ce_control"] for r in rs]))}
        if "k" in rs[0]:
            rec = {"k": k, **rec}
        out.append({"method": method, **rec} if method else rec)
    return out


def recall_markdown(summary: Sequence[dict], control: str = "native") -> str:
    """A table: one row per (method,) variant, one column per distance, 'mean [low, high]' nats/base."""
    rows = [r for r in summary if r["control"] == control]
    dists = sorted({r["distance"] for r in rows})
    keys = sorted({(r.get("method", ""), r["variant"]) for r in rows},
                  key=lambda k: (k[0], VARIANTS.index(k[1])))
    has_method = any(k[0] for k in keys)
    head = (["method"] if has_method else []) + ["copy"] + [f"d = {distance_label(d)}" for d in dists]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cell = {(r.get("method", ""), r["variant"], r["distance"]): r for r in rows}
    for m, v in keys:
        vals = []
        for d in dists:
            r = cell.get((m, v, d))
            vals.append("" if r is None else f"{r['advantage']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]")
        lines.append("| " + " | ".join(([m] if has_method else []) + [v] + vals) + " |")
    return "\n".join(lines) + "\n"


def distance_label(d: int) -> str:
    """A distance for tables and plots: 4 kb, 1 Mb, or the number of bases."""
    if d >= 1 << 20 and d % (1 << 20) == 0:
        return f"{d >> 20} Mb"
    if d >= 1024 and d % 1024 == 0:
        return f"{d >> 10} kb"
    return str(d)


# ------------------------------------------------------------------------------------------ several methods
@dataclass
class RecallMethod:
    """One method of a paired recall run: a name (``full``, ``focus``, ...), its ratio k (None where it has
    none), its logits function, the longest window (bases) it runs on (None: any; longer windows: the method is
    reported absent there) and its key/value entries per attention block at L input bases."""

    name: str
    k: int | None
    logits_fn: Callable[[torch.Tensor], torch.Tensor]
    max_len: int | None = None
    budget: Callable[[int], int] | None = None

    @property
    def label(self) -> str:
        return self.name if self.k is None else f"{self.name} k={self.k}"


RECALL_COLUMNS = ("method", "k", "distance", "window", "attention_budget", "trial", "variant", "control",
                  "ce_repeat", "ce_control", "advantage")


def recall_probe_methods(methods: Sequence[RecallMethod], heldout: np.ndarray, distances: Sequence[int],
                         n_trials: int = 32, seed: int = 0, variants: Sequence[str] = VARIANTS,
                         controls: Sequence[str] = CONTROLS, segment: int = SEGMENT,
                         on_trial: Callable[[int, int], None] | None = None) -> list[dict]:
    """`recall_probe` for several methods on the same trials (paired): every method reads the same windows.

    A method whose `RecallMethod.max_len` is below a distance's window (2 * segment + d bases) gives no rows
    at that distance; `recall_summary` reports it there as absent. `on_trial(distance, trial)` is called after
    each trial.

    Returns:
        One row per method x distance x trial x variant x control with the `RECALL_COLUMNS` fields (``k`` is
        "" for methods without a ratio).
    """
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"recall probe: unknown variant {v!r} (known: {', '.join(VARIANTS)})")
    for c in controls:
        if c not in CONTROLS:
            raise ValueError(f"recall probe: unknown control {c!r} (known: {', '.join(CONTROLS)})")
    rows = []
    for d in distances:
        d = int(d)
        size = 2 * segment + d
        live = [m for m in methods if m.max_len is None or size <= m.max_len]
        for t_i, trial in enumerate(make_trials(heldout, d, n_trials, seed, segment)):
            ctrl_windows = {c: trial.window(trial.controls[c]) for c in controls}
            rep_windows = {v: trial.window(trial.first[v]) for v in variants}
            for m in live:
                ctrl = {c: segment_nats(m.logits_fn, w, segment) for c, w in ctrl_windows.items()}
                budget = m.budget(size - 1) if m.budget is not None else ""
                for v, w in rep_windows.items():
                    rep = segment_nats(m.logits_fn, w, segment)
                    for c in controls:
                        rows.append({"method": m.name, "k": "" if m.k is None else m.k, "distance": d,
                                     "window": size, "attention_budget": budget, "trial": t_i, "variant": v,
                                     "control": c, "ce_repeat": rep, "ce_control": ctrl[c],
                                     "advantage": ctrl[c] - rep})
            if on_trial is not None:
                on_trial(d, t_i)
    return rows


def _ratio_ci(num: np.ndarray, den: np.ndarray, paired: bool, seed: int, resamples: int = 2000,
              confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(num) / mean(den), resampling trials (the same indices for both
    when `paired`)."""
    if len(num) < 2 or len(den) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(num), (resamples, len(num)))
    j = i if paired else rng.integers(0, len(den), (resamples, len(den)))
    top, bottom = num[i].mean(1), den[j].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = top / bottom
    r = r[np.isfinite(r)]
    if len(r) < 2:
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2
    return float(np.quantile(r, tail)), float(np.quantile(r, 1 - tail))


RECALL_SUMMARY_COLUMNS = ("method", "k", "distance", "window", "attention_budget", "variant", "control", "trials",
                          "advantage", "ci_low", "ci_high", "ce_repeat", "ce_control", "retained",
                          "retained_ci_low", "retained_ci_high", "reference_distance", "reference", "status")


def recall_summary(rows: Sequence[dict], methods: Sequence[tuple[str, int | None, int | None]],
                   distances: Sequence[int], variants: Sequence[str] = VARIANTS, controls: Sequence[str] = CONTROLS,
                   segment: int = SEGMENT, min_reference: float = 0.0) -> list[dict]:
    """Per (method, k, distance, variant, control): the copy advantage (mean, 95% bootstrap CI) and the
    fraction of full context's copy advantage it retains.

    `methods` lists (name, k, max_len) in report order; ``full`` must be among them. Retained =
    mean(advantage) / mean(full's advantage) over the same trials at the same distance (paired bootstrap CI),
    or, where full context does not run (its max_len is below the window), over full's trials at the largest
    distance it runs (unpaired bootstrap; ``reference`` says which). Where the reference's copy advantage is
    not positive, or below `min_reference` nats/base (a model that recalls gains ~1; a ratio of two numbers
    near 0 says nothing), the ratio is undefined (NaN, said in ``status``). A method absent at a distance has a row
    with 0 trials, NaN values and a ``status`` that says why.
    """
    if not any(name == "full" for name, _, _ in methods):
        raise ValueError("recall_summary: `methods` must include full (the reference)")
    full_max = next(mx for name, _, mx in methods if name == "full")
    by_trial: dict[tuple, np.ndarray] = {}
    first: dict[tuple, dict] = {}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        k = None if r["k"] in ("", None) else int(r["k"])
        groups.setdefault((r["method"], k, int(r["distance"]), r["variant"], r["control"]), []).append(r)
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: int(r["trial"]))
        by_trial[key] = np.array([float(r["advantage"]) for r in rs])
        first[key] = rs[0]
    summ = {(r["method"], None if r["k"] in ("", None) else int(r["k"]), r["distance"], r["variant"],
             r["control"]): r for r in summarize_recall([{**r, "distance": int(r["distance"])} for r in rows])}
    fits = sorted(int(d) for d in distances if ("full", None, int(d), variants[0], controls[0]) in by_trial)
    out = []
    for name, k, max_len in methods:
        for d in distances:
            d = int(d)
            size = 2 * segment + d
            refs = [f for f in fits if f <= d]
            ref_d = refs[-1] if refs else None
            for v in variants:
                for c in controls:
                    key = (name, k, d, v, c)
                    row = {"method": name, "k": "" if k is None else k, "distance": d, "window": size,
                           "variant": v, "control": c, "reference_distance": "" if ref_d is None else ref_d,
                           "reference": ("" if ref_d is None else "full, same distance" if ref_d == d
                                         else f"full at d = {ref_d} (largest distance where full context runs)")}
                    if key not in by_trial:
                        why = (f"absent: window of {size} bases > max length {max_len}"
                               if max_len is not None and size > max_len else "absent: not run")
                        row.update({"attention_budget": "", "trials": 0, "status": why,
                                    **dict.fromkeys(("advantage", "ci_low", "ci_high", "ce_repeat", "ce_control",
                                                     "retained", "retained_ci_low", "retained_ci_high"),
                                                    float("nan"))})
                        out.append(row)
                        continue
                    s = summ[key]
                    row.update({"attention_budget": first[key]["attention_budget"], "trials": s["trials"],
                                "advantage": s["advantage"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                                "ce_repeat": s["ce_repeat"], "ce_control": s["ce_control"], "status": "ok"})
                    ret = lo = hi = float("nan")
                    if ref_d is None:
                        row["status"] = (f"no reference: full context runs at no distance (max length {full_max})")
                    else:
                        den = by_trial[("full", None, ref_d, v, c)]
                        if den.mean() > 0 and den.mean() >= min_reference:
                            num = by_trial[key]
                            ret = float(num.mean() / den.mean())
                            lo, hi = _ratio_ci(num, den, paired=ref_d == d and len(num) == len(den), seed=d)
                        else:
                            row["status"] = (f"no reference: full context's copy advantage at d = {ref_d} is "
                                             f"{den.mean():+.4f}, "
                                             + ("not positive" if den.mean() <= 0 else f"below {min_reference}"))
                    row.update({"retained": ret, "retained_ci_low": lo, "retained_ci_high": hi})
                    out.append(row)
    return out


def write_recall_csv(path, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """A CSV of `rows` with floats written exactly (`repr`), so `read_recall_csv` gives them back unchanged."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([repr(r[c]) if isinstance(r[c], float) else r[c] for c in columns])


_INT_COLUMNS = {"k", "distance", "window", "attention_budget", "trial", "trials", "reference_distance"}
_FLOAT_COLUMNS = {"ce_repeat", "ce_control", "advantage", "ci_low", "ci_high", "retained", "retained_ci_low",
                  "retained_ci_high"}


def read_recall_csv(path) -> list[dict]:
    """Rows of a recall CSV (`recall.csv` or `recall_summary.csv`) with their types (empty integers stay "")."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for c, v in r.items():
            if c in _INT_COLUMNS and v != "":
                r[c] = int(v)
            elif c in _FLOAT_COLUMNS:
                r[c] = float(v)
    return rows


def _cell(value: float, lo: float, hi: float, digits: int) -> str:
    if np.isnan(value):
        return "n/a"
    if np.isnan(lo):
        return f"{value:+.{digits}f}"
    return f"{value:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def recall_summary_markdown(summary: Sequence[dict], control: str = "native") -> str:
    """Two tables for one control: copy advantage (nats/base, mean [95% bootstrap CI]) and the fraction of full
    context's copy advantage retained, one row per method and copy, one column per distance. Cells of a method
    absent at a distance say ``absent``; retained values measured against full context at a smaller distance
    carry a dagger."""
    rows = [r for r in summary if r["control"] == control]
    dists = sorted({int(r["distance"]) for r in rows})
    keys = list(dict.fromkeys((r["method"], r["k"], r["variant"]) for r in rows))
    cell = {(r["method"], r["k"], r["variant"], int(r["distance"])): r for r in rows}
    head = ["method", "k", "copy"] + [f"d = {distance_label(d)}" for d in dists]
    out = []
    for title, field, digits in (("copy advantage, nats/base", "advantage", 3),
                                 ("fraction of full context's copy advantage retained", "retained", 2)):
        out += [f"{title} ({control} control): mean [95% bootstrap CI]", "",
                "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        dagger = False
        for m, k, v in keys:
            vals = []
            for d in dists:
                r = cell.get((m, k, v, d))
                if r is None:
                    vals.append("")
                elif int(r["trials"]) == 0:
                    vals.append("absent")
                else:
                    txt = _cell(float(r[field]), float(r[f"{'retained_' if field == 'retained' else ''}ci_low"]),
                                float(r[f"{'retained_' if field == 'retained' else ''}ci_high"]), digits)
                    if field == "retained" and r["reference_distance"] not in ("", d) and txt != "n/a":
                        txt += " †"
                        dagger = True
                    vals.append(txt)
            out.append("| " + " | ".join([m, str(k) if k != "" else "-", v] + vals) + " |")
        out.append("")
        if field == "retained":
            if dagger:
                out += ["† relative to full context at the largest distance where it runs (see "
                        "recall_summary.csv, `reference`).", ""]
            if any(r["status"].startswith("no reference") for r in rows):
                out += ["n/a: full context's copy advantage is not positive or below the minimum for a ratio "
                        "(`status` in recall_summary.csv).", ""]
    absent = sorted({(r["method"], r["status"]) for r in rows if int(r["trials"]) == 0})
    if absent:
        out += ["absent: " + "; ".join(f"{m} ({s.removeprefix('absent: ')})" for m, s in absent[:6]), ""]
    return "\n".join(out)
