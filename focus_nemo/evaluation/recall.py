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
    return float(torch.nn.functional.cross_entropy(logits[0, lo:].float(), tokens[0, lo + 1:]).double())


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
    """Mean copy advantage with a 95% bootstrap CI per (method, distance, variant, control)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("method", ""), r["distance"], r["variant"], r["control"]), []).append(r)
    out = []
    for (method, d, v, c), rs in groups.items():
        adv = [r["advantage"] for r in rs]
        lo, hi = bootstrap_ci(adv, seed=d)
        rec = {"distance": d, "variant": v, "control": c, "trials": len(rs), "advantage": float(np.mean(adv)),
               "ci_low": lo, "ci_high": hi, "ce_repeat": float(np.mean([r["ce_repeat"] for r in rs])),
               "ce_control": float(np.mean([r["ce_control"] for r in rs]))}
        out.append({"method": method, **rec} if method else rec)
    return out


def recall_markdown(summary: Sequence[dict], control: str = "native") -> str:
    """A table: one row per (method,) variant, one column per distance, 'mean [low, high]' nats/base."""
    rows = [r for r in summary if r["control"] == control]
    dists = sorted({r["distance"] for r in rows})
    keys = sorted({(r.get("method", ""), r["variant"]) for r in rows},
                  key=lambda k: (k[0], VARIANTS.index(k[1])))
    has_method = any(k[0] for k in keys)
    head = (["method"] if has_method else []) + ["copy"] + [f"d = {_dist(d)}" for d in dists]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    cell = {(r.get("method", ""), r["variant"], r["distance"]): r for r in rows}
    for m, v in keys:
        vals = []
        for d in dists:
            r = cell.get((m, v, d))
            vals.append("" if r is None else f"{r['advantage']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]")
        lines.append("| " + " | ".join(([m] if has_method else []) + [v] + vals) + " |")
    return "\n".join(lines) + "\n"


def _dist(d: int) -> str:
    if d >= 1 << 20 and d % (1 << 20) == 0:
        return f"{d >> 20} Mb"
    if d >= 1024 and d % 1024 == 0:
        return f"{d >> 10} kb"
    return str(d)
