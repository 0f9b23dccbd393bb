"""Reports of an evaluation: per-group summaries (`summarize`), paired FOCUS-minus-baseline differences
(`paired_differences`), the position profile table (`profile_rows`), CSV files and markdown tables."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from focus_nemo.evaluation.metrics import LABELS, METHODS, SUMMARY_METRICS
from focus_nemo.evaluation.sequences import PROFILE_METRICS
from focus_nemo.evaluation.statistics import summary_stats


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
    ``truncation`` (the same row for every k) and ``sliding`` / ``sliding_local`` (the key/value budgets
    of FOCUS without and with the band) at the same k; FOCUS with the exact local band (``focus_local``)
    is compared with those and with plain FOCUS.
    """
    index = {(r["sequence_id"], r["method"], r["k"]): r for r in rows}
    out = []
    keys = sorted({(r["source"], r["length"], r["k"], r["method"]) for r in rows
                   if r["method"] in ("focus", "focus_local")}, key=lambda t: (t[0], t[1], t[2], METHODS.index(t[3])))
    for source, length, k, method in keys:
        ids = sorted({r["sequence_id"] for r in rows if r["source"] == source and r["length"] == length})
        baselines = (("truncation", ""), ("sliding", k), ("sliding_local", k)) \
            + ((("focus", k),) if method == "focus_local" else ())
        for baseline, bk in baselines:
            if not all((i, baseline, bk) in index for i in ids):
                continue
            s = {"source": source, "length": length, "k": k, "comparison": f"{method} - {baseline}",
                 "sequences": len(ids)}
            for metric in PAIRED_METRICS:
                st = summary_stats([index[(i, method, k)][metric] - index[(i, baseline, bk)][metric] for i in ids])
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


HEADLINE_NAMES = {"full": "full context", "focus": "FOCUS (local = 0)",
                  "focus_local": "FOCUS + local band (local = 1)",
                  "truncation": "truncation to the window", "sliding": "sliding window, FOCUS's budget",
                  "sliding_local": "sliding window, the band's budget"}


def headline_markdown(summary: Sequence[dict], k: int | None = None) -> str:
    """The short table the README and the demo print: for each source and length (all records), every
    method at one k (default: 100 if evaluated, else the first k) with its key/value budget, KL(full ||
    method) mean +- 95% CI half-width, mean |delta p(true)|, extra bits per base, and the published
    protocol's |delta p(true)| at segment ends over the whole vocabulary."""
    rows = [s for s in summary if s["chrom_group"] == "all"]
    ks = sorted({int(s["k"]) for s in rows if s["k"] not in ("", None)})
    if k is None:
        k = 100 if 100 in ks else (ks[0] if ks else None)
    head = ["method", "attention KV per block", "KL(full \\|\\| method), nats", "mean \\|delta p(true)\\|",
            "extra bits/base", "segment ends: \\|delta p(true)\\|, vocab"]
    out = []
    for source, length in sorted({(s["source"], s["length"]) for s in rows}, key=lambda t: (t[0], int(t[1]))):
        sel = [s for s in rows if s["source"] == source and s["length"] == length
               and (s["k"] in ("", None) or int(s["k"]) == k)]
        n = max(s["sequences"] for s in sel)
        out += [f"{source}, {n} sequences of {int(length):,} bases, k = {k}, mean over sequences "
                "(+- 95% CI half-width):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for s in sorted(sel, key=lambda s: METHODS.index(s["method"])):
            if s["method"] == "full":
                cells = [f"{HEADLINE_NAMES['full']} ({s['bits_mean']:.4f} bits/base)", f"{s['attention_budget']:,}",
                         "0", "0", "0", "0"]
            else:
                half = s["kl_mean"] - s["kl_ci_low"]
                kl = _num(s["kl_mean"], "kl") + ("" if math.isnan(half) else f" +- {_num(half, 'kl')}")
                cells = [HEADLINE_NAMES[s["method"]], f"{s['attention_budget']:,}", kl,
                         _num(s["abs_dp_true_mean"], "abs_dp_true"), _num(s["bits_delta_mean"], "bits_delta"),
                         _num(s["seg_end_abs_dp_mean"], "seg_end_abs_dp")]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def profile_rows(profiles: dict, window: int) -> list[dict]:
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
