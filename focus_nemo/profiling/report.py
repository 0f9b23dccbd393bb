"""The results of a sweep (`ProfileResult`) and their outputs: CSV, JSON, a markdown table and a log-log
plot (`write_outputs`)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from focus_nemo.profiling.config import CSV_COLUMNS, ProfileConfig
from focus_nemo.profiling.fits import PowerLaw, fit_power_law
from focus_nemo.profiling.resources import mib


def memory_column(device: str) -> str:
    """The measured peak-memory column: GPU allocator growth on CUDA, RSS growth otherwise."""
    return "peak_gpu_growth_bytes" if torch.device(device).type == "cuda" else "peak_rss_growth_bytes"


@dataclass
class ProfileResult:
    """A sweep's rows with what is needed to read them."""

    config: ProfileConfig
    rows: list[dict]
    budget: float | None = None
    fit_min_length: int = 0
    machine: dict = field(default_factory=dict)
    sequence: str = ""
    command: str = ""

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in self.rows))

    def fits(self) -> dict[str, dict[str, PowerLaw | None]]:
        """Per method: power laws of time, measured peak memory and attention-state bytes vs length."""
        cols = {"time": "seconds", "peak_memory": memory_column(self.config.device),
                "attention_state": "attention_state_bytes"}
        out = {}
        for m in self.methods:
            ok = [r for r in self.rows if r["method"] == m and r["status"] == "ok"]
            out[m] = {name: fit_power_law([r["length"] for r in ok], [r.get(c) for r in ok], self.fit_min_length)
                      for name, c in cols.items()}
        return out

    def time_exponents(self) -> dict[str, float | None]:
        return {m: (f["time"].exponent if f["time"] else None) for m, f in self.fits().items()}

    def to_dict(self) -> dict:
        fits = {m: {name: (asdict(f) if f else None) for name, f in fs.items()} for m, fs in self.fits().items()}
        return {"config": asdict(self.config), "budget_seconds": self.budget, "fit_min_length": self.fit_min_length,
                "sequence": self.sequence, "machine": self.machine, "command": self.command, "fits": fits,
                "rows": self.rows}


def markdown_table(result: ProfileResult) -> str:
    cfg, info = result.config, result.machine
    gpu = cfg.is_cuda
    adapter = cfg.adapter or "untrained Focus projections"
    lines = [f"# Time and memory vs length: {', '.join(TITLES.get(m, m) for m in result.methods)} ({cfg.checkpoint})",
             "",
             f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores"
             + (f", {info['gpu']}" if info.get("gpu") else "") + f", torch {info.get('torch', '?')}"
             + (f", load average {info['load_average_1min']} at the start" if "load_average_1min" in info else "")
             + f"; device {cfg.device}, {cfg.dtype}, batch 1.",
             f"Model: `{cfg.checkpoint}`, adapter: {adapter}; k={cfg.k}, W={cfg.window}, chunk {cfg.chunk}; "
             f"torch threads per run: {cfg.threads or 'torch default'}.",
             f"Sequence: {result.sequence}."]
    horizons = sorted({r["horizon"] for r in result.rows if r["method"] == "focus_h" and r.get("horizon")})
    if horizons:
        m = -(-cfg.window // cfg.k)
        lines.append("focus_h: FOCUS with a horizon of " + ", ".join(
            f"{h:,} bases ({h // cfg.window} windows: at most {h // cfg.window * m:,} Focus entries per attention "
            f"block besides the current window)" for h in horizons) + "; focus keeps every Focus entry.")
    if result.command:
        lines.append(f"Command: `{result.command}`")
    peak = "peak GPU growth MiB" if gpu else "peak RSS growth MiB"
    lines += ["", f"| method | length | time s | CPU s | bases/s | {peak} | attention state MiB | Hyena state MiB |"
              " time / full | attention state / full |", "|---|---|---|---|---|---|---|---|---|---|"]
    ok = {(r["method"], r["length"]): r for r in result.rows if r["status"] == "ok"}
    col = memory_column(cfg.device)
    for r in result.rows:
        if r["status"] != "ok":
            lines.append(f"| {r['method']} | {r['length']:,} | {r['status']}: {r.get('note', '')} | | | | | | | |")
            continue
        ref = ok.get(("full", r["length"]))
        tr = f"{r['seconds'] / ref['seconds']:.3f}" if ref else "-"
        sr = f"{r['attention_state_bytes'] / ref['attention_state_bytes']:.4f}" if ref else "-"
        cpu = f"{r['cpu_seconds']:.2f}" if r.get("cpu_seconds") is not None else "-"
        lines.append(f"| {r['method']} | {r['length']:,} | {r['seconds']:.2f} | {cpu} | {r['bases_per_s']:,.0f} | "
                     f"{mib(r.get(col))} | {mib(r['attention_state_bytes'])} | {mib(r['hyena_state_bytes'])} | "
                     f"{tr} | {sr} |")
    lines += ["", f"Fitted exponents (least squares on log-log over the measured lengths >= "
              f"{result.fit_min_length:,}; n = lengths used):", "",
              "| method | time | peak memory | attention state |", "|---|---|---|---|"]
    for m, fs in result.fits().items():
        cells = [f"{f.exponent:.2f} (n={len(f.lengths)})" if f else "n/a" for f in fs.values()]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


COLORS = {"focus": "tab:blue", "focus_h": "tab:purple", "full": "tab:red", "truncation": "tab:green"}

TITLES = {"focus": "FOCUS streaming", "focus_h": "FOCUS with a horizon", "full": "full KV cache",
          "truncation": "truncation"}


def method_label(result: ProfileResult, method: str) -> str:
    """The method's name, with its horizon for ``focus_h`` (``focus_h (horizon 262,144)``)."""
    hs = sorted({r["horizon"] for r in result.rows if r["method"] == method and r.get("horizon")})
    return f"{method} (horizon {', '.join(f'{h:,}' for h in hs)})" if hs else method


def plot(result: ProfileResult, path: str | Path) -> Path:
    """Log-log time, measured peak memory and attention state vs length, one line per method, the
    fitted exponents in the legends; skipped lengths with a predicted time are open markers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    mem = "peak GPU memory growth (bytes)" if result.config.is_cuda else "peak RSS growth (bytes)"
    panels = [("time", "seconds", "time (s)"), ("peak_memory", memory_column(result.config.device), mem),
              ("attention_state", "attention_state_bytes", "attention state at the end (bytes)")]
    fits = result.fits()
    for ax, (name, col, ylabel) in zip(axes, panels, strict=True):
        for m in result.methods:
            pts = [(r["length"], r[col]) for r in result.rows
                   if r["method"] == m and r["status"] == "ok" and r.get(col)]
            f = fits[m][name]
            shown = method_label(result, m)
            label = f"{shown} (slope {f.exponent:.2f})" if f else f"{shown} (slope n/a)"
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", color=COLORS.get(m), label=label)
            if name == "time":
                pred = [(r["length"], r["predicted_seconds"]) for r in result.rows
                        if r["method"] == m and r["status"] == "skipped" and r.get("predicted_seconds")]
                if pred:
                    ax.plot(*zip(*pred, strict=True), linestyle="none", marker="o", markerfacecolor="none",
                            color=COLORS.get(m), label=f"{shown}: predicted, not run")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (bases)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    cfg = result.config
    fig.suptitle(f"{cfg.checkpoint}, k={cfg.k}, W={cfg.window}, {cfg.dtype}, {cfg.device}; "
                 f"slopes over lengths >= {result.fit_min_length:,}", fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def write_outputs(result: ProfileResult, out_dir: str | Path, name: str) -> dict[str, Path]:
    """Write ``<name>.csv``, ``.json``, ``.md`` (a table to paste) and ``.png`` under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {ext: out / f"{name}.{ext}" for ext in ("csv", "json", "md", "png")}
    with open(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in result.rows:
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in CSV_COLUMNS})
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    paths["md"].write_text(markdown_table(result))
    plot(result, paths["png"])
    return paths


def fit_lines(result: ProfileResult) -> list[str]:
    """The fitted time exponent of each method, as printed lines."""
    lines = [f"fitted time exponent (lengths >= {result.fit_min_length:,}):"]
    for method, fit in result.fits().items():
        t = fit["time"]
        lines.append(f"  {method:<10} " + (f"{t.exponent:.2f} over {len(t.lengths)} lengths" if t
                                            else "n/a (< 2 lengths)"))
    return lines
