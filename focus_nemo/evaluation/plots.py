"""Figures of an evaluation (matplotlib, drawn off-screen): metric against position in the window and
against context read so far (`profile_figure`), and against k (`k_figure`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from focus_nemo.evaluation.metrics import LABELS
from focus_nemo.evaluation.recall import distance_label
from focus_nemo.evaluation.sequences import PROFILE_METRICS


def _style(method: str, k, ks: Sequence[int]):
    import matplotlib

    if method == "truncation":
        return {"color": "black", "linestyle": ":", "label": "truncation (W)"}
    cmap = matplotlib.colormaps["viridis"]
    c = cmap(0.85 * ks.index(k) / max(1, len(ks) - 1)) if k in ks else "gray"
    if method == "focus":
        return {"color": c, "linestyle": "-", "label": f"FOCUS k={k}"}
    if method == "focus_local":
        return {"color": c, "linestyle": "-.", "label": f"FOCUS + local band k={k}"}
    if method == "sliding_local":
        return {"color": c, "linestyle": (0, (1, 1)), "label": f"sliding, span of k={k} + W"}
    return {"color": c, "linestyle": "--", "label": f"sliding, span of k={k}"}


def profile_figure(profiles: dict, axis: str, ks: Sequence[int], window: int, path: Path) -> None:
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


NAMES = {"focus": "FOCUS", "focus_local": "FOCUS + local band", "sliding": "sliding window",
         "sliding_local": "sliding window, band's budget"}


def k_figure(summary: Sequence[dict], ks: Sequence[int], path: Path) -> None:
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
                for method, ls, color in (("focus", "-", "tab:blue"), ("focus_local", "-.", "tab:green"),
                                          ("sliding", "--", "tab:orange"),
                                          ("sliding_local", ":", "tab:red")):
                    pts = sorted((s["k"], s) for s in sel if s["method"] == method)
                    if not pts:
                        continue
                    xs = [k for k, _ in pts]
                    ys = np.array([s[f"{metric}_mean"] for _, s in pts])
                    lo = np.array([s[f"{metric}_ci_low"] for _, s in pts])
                    hi = np.array([s[f"{metric}_ci_high"] for _, s in pts])
                    ax.errorbar(xs, ys, yerr=[ys - lo, hi - ys], linestyle=ls, color=color, marker=markers[li % 7],
                                capsize=3, label=NAMES[method] + suffix)
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


def recall_figure(summary: Sequence[dict], path: Path, control: str = "native") -> None:
    """Copy advantage (top, 95% bootstrap CI) and the fraction of full context's retained (bottom) against the
    distance between the copies, one line per method and k, one column per copy variant. Retained points
    measured against full context at a smaller distance (where full context does not run) are hollow."""
    from matplotlib.figure import Figure

    rows = [r for r in summary if r["control"] == control]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    lines = list(dict.fromkeys((r["method"], r["k"]) for r in rows))
    ks = sorted({int(k) for _, k in lines if k != ""})
    fig = Figure(figsize=(5 * len(variants), 7), layout="constrained")
    axes = fig.subplots(2, len(variants), squeeze=False, sharex=True)
    dists = sorted({int(r["distance"]) for r in rows})
    full_runs = sorted({int(r["distance"]) for r in rows if r["method"] == "full" and int(r["trials"]) > 0})
    zero = dists[0] == 0
    for c, variant in enumerate(variants):
        for method, k in lines:
            pts = sorted((int(r["distance"]), r) for r in rows if r["variant"] == variant and r["method"] == method
                         and r["k"] == k and int(r["trials"]) > 0)
            if not pts:
                continue
            style = ({"color": "black", "linestyle": "-", "label": "full context"} if method == "full"
                     else _style(method, k if k == "" else int(k), ks))
            xs = np.array([d for d, _ in pts], dtype=float)
            for row, (field, lo_f, hi_f) in enumerate((("advantage", "ci_low", "ci_high"),
                                                        ("retained", "retained_ci_low", "retained_ci_high"))):
                ys = np.array([float(r[field]) for _, r in pts])
                lo = np.array([float(r[lo_f]) for _, r in pts])
                hi = np.array([float(r[hi_f]) for _, r in pts])
                ax = axes[row][c]
                ax.errorbar(xs, ys, yerr=[np.nan_to_num(ys - lo), np.nan_to_num(hi - ys)], marker="o", capsize=3,
                            markersize=4, **style)
                if row == 1:
                    far = np.array([r["reference_distance"] not in ("", d) for d, r in pts])
                    if far.any():
                        ax.plot(xs[far], ys[far], "o", markersize=8, markerfacecolor="white",
                                markeredgecolor=style["color"])
        for row, label in enumerate(("copy advantage (nats/base)", "fraction of full context's copy advantage")):
            ax = axes[row][c]
            if zero:
                ax.set_xscale("symlog", base=2, linthresh=64)
            else:
                ax.set_xscale("log", base=2)
            ax.axhline(1.0 if row else 0.0, color="gray", linewidth=0.8)
            if full_runs and full_runs[-1] < dists[-1]:
                ax.axvline(full_runs[-1], color="black", linestyle=":", linewidth=0.8,
                           label=(f"full context runs up to d = {distance_label(full_runs[-1])}"
                                  if row == 0 and c == len(variants) - 1 else None))
            if row and not any(np.isfinite(float(r["retained"])) for r in rows if r["variant"] == variant):
                ax.text(0.5, 0.5, "undefined: full context shows too small a copy advantage",
                        transform=ax.transAxes, ha="center", va="center", fontsize=9, color="gray")
            ax.set_xticks(dists, [distance_label(d) for d in dists])
            if row:
                ax.set_xlabel("distance between the copies (bases)")
            ax.set_ylabel(label)
            ax.set_title(f"{variant} copy, {control} control", fontsize=10)
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.savefig(path, dpi=110)
