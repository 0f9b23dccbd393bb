"""Time and memory against sequence length: FOCUS streaming, the full KV cache, fixed-window truncation.

Each method streams one sequence [1, L] chunk by chunk under `torch.no_grad`:

* ``focus``: `FocusModel.stream`. Hyena state carried exactly; each attention block keeps the Focus
  keys/values of completed windows plus the current window's bases.
* ``full``: the base model's `forward_chunk` with its full attention KV cache (exact; attention work
  grows as L^2, the cache as L).
* ``truncation``: the base model with its attention KV cache emptied at every multiple of W (Hyena
  state still carried): FOCUS without its memory.

A run (`measure`) records wall time (CUDA synchronised), peak resident-memory growth (Linux VmHWM
after a reset; per run when each run has its own process, see `isolated`), on CUDA the growth of
`torch.cuda.max_memory_allocated`, and the exact tensor bytes of the attention and Hyena state when
the sequence ends. `profile` sweeps methods x lengths under a time budget, `fit_power_law` fits
exponents on log-log, and `write_outputs` writes CSV, JSON, a markdown table and a log-log plot.
"""

from __future__ import annotations

import csv
import gc
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import resource
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from focus_nemo.focus.config import check_k_window

METHODS = ("focus", "full", "truncation")

PRIOR_EXPONENT = {"focus": 1.5, "full": 2.0, "truncation": 1.0}
"""Growth of time with length that the budget rule assumes for each method; once two lengths are
measured it uses the larger of this and their measured slope."""

CSV_COLUMNS = ("method", "length", "status", "seconds", "bases_per_s", "predicted_seconds",
               "peak_rss_growth_bytes", "peak_gpu_bytes", "peak_gpu_growth_bytes", "attention_state_bytes",
               "hyena_state_bytes", "focus_memory_entries_per_attention_block", "device", "dtype", "checkpoint",
               "k", "window", "chunk_size", "note")

HELDOUT = "chr20_heldout"
HELDOUT_REGION = "GRCh37 chr20:50,000,001-51,000,000"

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


# ---------------------------------------------------------------------- arguments
def parse_length(text: str) -> int:
    """``"4096"``, ``"4k"`` (4,096), ``"1M"`` (1,048,576), ``"1.5M"``: binary suffixes k, M, G."""
    s = text.strip().lower().replace("_", "")
    unit = s[-1] if s and s[-1] in "kmg" else ""
    try:
        value = float(s[: len(s) - len(unit)]) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"length {text!r}: expected an integer with an optional k, M or G suffix") from None
    if value != int(value) or value < 1:
        raise ValueError(f"length {text!r}: must be a whole number of bases >= 1")
    return int(value)


def parse_lengths(text: str) -> list[int]:
    """Comma-separated lengths (see `parse_length`), sorted ascending without repeats."""
    return sorted({parse_length(t) for t in text.split(",") if t.strip()})


def parse_methods(text: str | Iterable[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    methods = [m.strip() for m in items if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"methods: {bad or 'none given'}; choose from {', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


@dataclass(frozen=True)
class ProfileConfig:
    """What every run of a sweep shares.

    Attributes:
        checkpoint: ``embedded``, ``random:<preset>`` or a path (see `focus_nemo.inference.load_base_model`).
        adapter: adapter directory, ``embedded``, or None for the untrained Focus projections (time and
            memory do not depend on the adapter's values).
        k, window: Focus token every k bases; window W (also the truncation window).
        chunk_size: bases per `forward_chunk` call; None means one window.
        dtype, device: as `torch` names them (``float32``, ``bf16``; ``cpu``, ``cuda``, ``cuda:1``).
        random_sequence: random A/C/G/T (seeded) instead of the bundled chr20 held-out DNA.
        threads: `torch.set_num_threads` in each run (0 leaves torch's default).
    """

    checkpoint: str = "embedded"
    adapter: str | None = None
    k: int = 100
    window: int = 1024
    chunk_size: int | None = None
    dtype: str = "float32"
    device: str = "cpu"
    random_sequence: bool = False
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        from focus_nemo.inference import parse_dtype

        check_k_window(self.k, self.window)
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size: must be >= 1, got {self.chunk_size}")
        parse_dtype(self.dtype)
        torch.device(self.device)
        if self.threads < 0:
            raise ValueError(f"threads: must be >= 0, got {self.threads}")

    @property
    def chunk(self) -> int:
        return self.chunk_size or self.window

    @property
    def is_cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"


# ---------------------------------------------------------------------- memory and time
def rss_bytes() -> int:
    """This process's resident set size (Linux; 0 elsewhere)."""
    kib = _status_kib("VmRSS")
    return 0 if kib is None else kib * 1024


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (Linux); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak RSS since the last `reset_peak_rss` (VmHWM), else since the process started."""
    hwm = _status_kib("VmHWM")
    return hwm * 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Timer:
    """Wall time and peak memory growth of a ``with`` block.

    After the block: ``seconds``; ``peak_extra_bytes`` (peak RSS minus RSS at entry); on a CUDA
    `device`, ``gpu_peak_bytes`` (`torch.cuda.max_memory_allocated`) and ``gpu_peak_extra_bytes``
    (that minus the bytes allocated at entry), else None. CUDA is synchronised at both ends.
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = torch.device("cpu" if device is None else device)
        self.cuda = self.device.type == "cuda"

    def __enter__(self) -> Timer:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.gpu0 = torch.cuda.memory_allocated(self.device)
        self.rss_reset = reset_peak_rss()  # the peak then belongs to this block, not to imports or loading
        self.rss0 = rss_bytes()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda and exc[0] is None:
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0
        self.peak_extra_bytes = max(0, peak_rss_bytes() - self.rss0)
        self.gpu_peak_bytes = self.gpu_peak_extra_bytes = None
        if self.cuda:
            self.gpu_peak_bytes = torch.cuda.max_memory_allocated(self.device)
            self.gpu_peak_extra_bytes = self.gpu_peak_bytes - self.gpu0


def _child(target, args, kwargs, answer) -> None:
    try:
        answer.put(target(*args, **kwargs))
    except Exception as e:  # reported to the parent, which must never wait forever
        answer.put({"error": f"{type(e).__name__}: {e}"})


def isolated(target: Callable, *args, **kwargs):
    """`target(*args, **kwargs)` in a fresh (spawned) process, so its peak RSS is its own.

    Returns the target's (picklable) result, or ``{"error": ...}`` when it raised or when the process
    ended without answering (for example killed for running out of memory).
    """
    ctx = mp.get_context("spawn")
    answer = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, args, kwargs, answer))
    proc.start()
    try:
        while True:
            try:
                return answer.get(timeout=1.0)
            except queue.Empty:
                if proc.is_alive():
                    continue
            try:  # an answer sent just before exiting is already in the pipe
                return answer.get(timeout=0.5)
            except queue.Empty:
                code = proc.exitcode
                how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
                       else f"exit code {code}")
                hint = " (out of memory?)" if code == -signal.SIGKILL else ""
                return {"error": f"run process ended without a result: {how}{hint}"}
    except BaseException:
        proc.terminate()
        raise
    finally:
        proc.join()


def machine(device: str | torch.device | None = None) -> dict:
    """CPU model, cores, current load, torch threads and versions; the GPU's name when `device` is CUDA."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}
    if hasattr(os, "getloadavg"):
        info["load_average_1min"] = round(os.getloadavg()[0], 2)  # other work competing for the CPU
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def mib(b: float | None) -> str:
    """Bytes as MiB for tables ("-" for None)."""
    if b is None or b == "":
        return "-"
    return f"{b / 2**20:,.1f}" if b >= 2**20 else f"{b / 2**20:.4f}"


# ---------------------------------------------------------------------- models and sequences
_loaded: dict = {}


def load_model(cfg: ProfileConfig):
    """The FocusModel of `cfg` (its ``.base`` serves ``full`` and ``truncation``); the last one is cached."""
    from focus_nemo.focus import FocusConfig
    from focus_nemo.inference import load_focus_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    key = (cfg.checkpoint, cfg.adapter, cfg.k, cfg.window, cfg.dtype, cfg.device)
    if key not in _loaded:
        _loaded.clear()
        gc.collect()
        torch.manual_seed(cfg.seed)
        _loaded[key] = load_focus_model(cfg.checkpoint, cfg.adapter, dtype=cfg.dtype, device=cfg.device,
                                        focus=FocusConfig(k=cfg.k, window=cfg.window))
    return _loaded[key]


@lru_cache(maxsize=1)
def _heldout_bases():
    from focus_nemo.data import bundled_dna, open_genome

    genome = open_genome(bundled_dna(HELDOUT))
    return genome.read(genome.names[0])


def sequence_tokens(length: int, random_sequence: bool = False, seed: int = 0) -> torch.Tensor:
    """[1, length] byte ids: the bundled chr20 held-out slice, upper-cased and repeated end to end
    to reach `length`, or seeded random A/C/G/T."""
    if random_sequence:
        g = torch.Generator().manual_seed(seed)
        return torch.tensor([65, 67, 71, 84])[torch.randint(0, 4, (1, length), generator=g)]
    import numpy as np

    from focus_nemo.focus.loss import split_case

    bases = np.resize(_heldout_bases(), length)  # cyclic repetition of the slice
    return split_case(torch.from_numpy(bases.astype(np.int64))[None])[0]


def describe_sequence(random_sequence: bool = False, seed: int = 0) -> str:
    if random_sequence:
        return f"random A/C/G/T (seed {seed})"
    n = len(_heldout_bases())
    return (f"real DNA: the bundled {HELDOUT} slice ({HELDOUT_REGION}, {n:,} bp), upper-cased; "
            f"lengths above {n:,} repeat it end to end")


# ---------------------------------------------------------------------- the three methods
def _pieces(length: int, chunk: int, window: int | None = None) -> Iterator[tuple[int, int]]:
    """[start, end) of consecutive chunks, each also cut at multiples of `window` when given."""
    for start in range(0, length, chunk):
        end = min(start + chunk, length)
        cuts = range((start // window + 1) * window, end, window) if window else ()
        bounds = [start, *cuts, end]
        yield from zip(bounds[:-1], bounds[1:], strict=True)


@torch.no_grad()
def stream_method(fm, method: str, tokens: torch.Tensor, chunk: int, k: int, window: int) -> dict:
    """Stream `tokens` [B, L] through one method; returns the state's exact tensor bytes at the end.

    Keys: ``attention_state_bytes`` (FOCUS: Focus memory + current window; full/truncation: live KV
    cache entries), ``hyena_state_bytes``, ``focus_memory_entries_per_attention_block`` (FOCUS only).
    """
    if method == "focus":
        state = fm.init_state(tokens.shape[0], k, window)
        for _ in fm.stream(tokens, chunk, state=state):
            pass
        nb = state.nbytes()
        return {"attention_state_bytes": nb["focus_memory"] + nb["window"], "hyena_state_bytes": nb["hyena"],
                "focus_memory_entries_per_attention_block": max(state.memory_entries().values(), default=0)}
    if method not in METHODS:
        raise ValueError(f"method {method!r}: choose from {', '.join(METHODS)}")
    from focus_nemo.evo2 import KVCache

    truncate = method == "truncation"
    state = fm.base.init_state(tokens.shape[0])
    for s, e in _pieces(tokens.shape[1], chunk, window if truncate else None):
        if truncate and s % window == 0:
            state.blocks = [KVCache() if isinstance(b, KVCache) else b for b in state.blocks]
        _, state = fm.base.forward_chunk(tokens[:, s:e], state)
    return {"attention_state_bytes": state.kv_nbytes(), "hyena_state_bytes": state.hyena_nbytes(),
            "focus_memory_entries_per_attention_block": None}


def measure(cfg: ProfileConfig, method: str, length: int) -> dict:
    """One run: load (or reuse) the model, warm up on two windows, then time `stream_method`.

    Returns a row (keys of `CSV_COLUMNS`); failures become ``status: error`` with the message in ``note``.
    """
    row = {"method": method, "length": length}
    try:
        fm = load_model(cfg)
        device = torch.device(cfg.device)
        tokens = sequence_tokens(length, cfg.random_sequence, cfg.seed).to(device)
        stream_method(fm, method, tokens[:, : min(length, 2 * cfg.window)], cfg.chunk, cfg.k, cfg.window)
        gc.collect()
        with Timer(device) as t:
            sizes = stream_method(fm, method, tokens, cfg.chunk, cfg.k, cfg.window)
    except Exception as e:
        return {**row, "status": "error", "note": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    finally:
        if cfg.is_cuda and torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {**row, "status": "ok", "seconds": t.seconds, "bases_per_s": length / t.seconds,
            "peak_rss_growth_bytes": t.peak_extra_bytes, "peak_gpu_bytes": t.gpu_peak_bytes,
            "peak_gpu_growth_bytes": t.gpu_peak_extra_bytes, **sizes,
            "note": "" if t.rss_reset else "peak RSS not resettable here: peak since process start"}


# ---------------------------------------------------------------------- sweep
def predict_seconds(lengths: Sequence[int], seconds: Sequence[float], target: int,
                    exponent: float = 2.0) -> float | None:
    """Extrapolate the last measured time to `target` with the larger of `exponent` and the slope
    between the last two measured lengths (None when nothing was measured)."""
    done = [(x, s) for x, s in zip(lengths, seconds, strict=True) if s and s > 0]
    if not done:
        return None
    x, s = done[-1]
    if len(done) >= 2 and done[-2][0] != x:
        x0, s0 = done[-2]
        exponent = max(exponent, math.log(s / s0) / math.log(x / x0))
    return s * (target / x) ** exponent


def profile(cfg: ProfileConfig, methods: Iterable[str] = METHODS, lengths: Iterable[int] = (),
            budget: float | None = None, isolate: bool = True,
            log: Callable[[str], None] | None = None) -> list[dict]:
    """Measure every method at every length (ascending); returns the rows in that order.

    A length whose predicted time (`predict_seconds` with the method's `PRIOR_EXPONENT`) exceeds
    `budget` seconds is not run: its row has ``status: skipped`` and ``predicted_seconds``. After a
    failed run the method's longer lengths are skipped. With `isolate`, each run has its own process.
    """
    methods = parse_methods(list(methods))
    lengths = sorted(set(lengths))
    if not lengths:
        raise ValueError("profile: no lengths given")
    if cfg.is_cuda and not torch.cuda.is_available():
        raise RuntimeError(f"device {cfg.device!r} requested but torch.cuda.is_available() is False")
    rows = []
    for method in methods:
        done_l, done_s, failed = [], [], None
        for length in lengths:
            base = {"method": method, "length": length}
            est = predict_seconds(done_l, done_s, length, PRIOR_EXPONENT[method])
            if failed is not None:
                row = {**base, "status": "skipped", "note": f"not run: length {failed:,} failed"}
            elif budget is not None and est is not None and est > budget:
                row = {**base, "status": "skipped", "predicted_seconds": est,
                       "note": f"predicted {_seconds(est)} s > budget {_seconds(budget)} s"}
            else:
                row = isolated(measure, cfg, method, length) if isolate else measure(cfg, method, length)
                if "status" not in row:
                    row = {**base, "status": "error", "note": row.get("error", "no result")}
            if row["status"] == "ok":
                done_l.append(length)
                done_s.append(row["seconds"])
            elif row["status"] == "error":
                failed = length
            row.update(device=cfg.device, dtype=cfg.dtype, checkpoint=cfg.checkpoint, k=cfg.k,
                       window=cfg.window, chunk_size=cfg.chunk)
            rows.append(row)
            if log is not None:
                log(format_row(row))
    return rows


def _seconds(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


def format_row(row: dict) -> str:
    head = f"{row['method']:<10} {row['length']:>11,}"
    if row["status"] != "ok":
        return f"{head}  {row['status']}: {row.get('note', '')}"
    gpu = f"  GPU +{mib(row['peak_gpu_growth_bytes'])} MiB" if row.get("peak_gpu_growth_bytes") is not None else ""
    return (f"{head}  {row['seconds']:9.2f} s  {row['bases_per_s']:>10,.0f} bases/s  "
            f"RSS +{mib(row['peak_rss_growth_bytes'])} MiB{gpu}  "
            f"attention state {mib(row['attention_state_bytes'])} MiB  Hyena {mib(row['hyena_state_bytes'])} MiB")


# ---------------------------------------------------------------------- fitting
@dataclass(frozen=True)
class PowerLaw:
    """y = coefficient * x ** exponent, fitted on `lengths`."""

    exponent: float
    coefficient: float
    lengths: tuple[int, ...]

    def __call__(self, x: float) -> float:
        return self.coefficient * x ** self.exponent


def fit_power_law(xs: Sequence[float], ys: Sequence[float | None], min_x: float = 0) -> PowerLaw | None:
    """Least squares of log y on log x over points with x >= `min_x` and y > 0 (None: < 2 distinct x)."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if x >= min_x and y is not None and y > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    lx, ly = [math.log(x) for x, _ in pts], [math.log(y) for _, y in pts]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    slope = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)
    return PowerLaw(slope, math.exp(my - slope * mx), tuple(x for x, _ in pts))


def loglog_slope(xs: Sequence[float], ys: Sequence[float | None]) -> float | None:
    """The exponent of `fit_power_law` over all points."""
    fit = fit_power_law(xs, ys)
    return None if fit is None else fit.exponent


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


# ---------------------------------------------------------------------- outputs
def markdown_table(result: ProfileResult) -> str:
    cfg, info = result.config, result.machine
    gpu = cfg.is_cuda
    adapter = cfg.adapter or "untrained Focus projections"
    lines = [f"# Time and memory vs length: FOCUS streaming, full KV cache, truncation ({cfg.checkpoint})", "",
             f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores"
             + (f", {info['gpu']}" if info.get("gpu") else "") + f", torch {info.get('torch', '?')}"
             + (f", load average {info['load_average_1min']} at the start" if "load_average_1min" in info else "")
             + f"; device {cfg.device}, {cfg.dtype}, batch 1.",
             f"Model: `{cfg.checkpoint}`, adapter: {adapter}; k={cfg.k}, W={cfg.window}, chunk {cfg.chunk}; "
             f"torch threads per run: {cfg.threads or 'torch default'}.",
             f"Sequence: {result.sequence}."]
    if result.command:
        lines.append(f"Command: `{result.command}`")
    peak = "peak GPU growth MiB" if gpu else "peak RSS growth MiB"
    lines += ["", f"| method | length | time s | bases/s | {peak} | attention state MiB | Hyena state MiB |"
              " time / full | attention state / full |", "|---|---|---|---|---|---|---|---|---|"]
    ok = {(r["method"], r["length"]): r for r in result.rows if r["status"] == "ok"}
    col = memory_column(cfg.device)
    for r in result.rows:
        if r["status"] != "ok":
            lines.append(f"| {r['method']} | {r['length']:,} | {r['status']}: {r.get('note', '')} | | | | | | |")
            continue
        ref = ok.get(("full", r["length"]))
        tr = f"{r['seconds'] / ref['seconds']:.3f}" if ref else "-"
        sr = f"{r['attention_state_bytes'] / ref['attention_state_bytes']:.4f}" if ref else "-"
        lines.append(f"| {r['method']} | {r['length']:,} | {r['seconds']:.2f} | {r['bases_per_s']:,.0f} | "
                     f"{mib(r.get(col))} | {mib(r['attention_state_bytes'])} | {mib(r['hyena_state_bytes'])} | "
                     f"{tr} | {sr} |")
    lines += ["", f"Fitted exponents (least squares on log-log over the measured lengths >= "
              f"{result.fit_min_length:,}; n = lengths used):", "",
              "| method | time | peak memory | attention state |", "|---|---|---|---|"]
    for m, fs in result.fits().items():
        cells = [f"{f.exponent:.2f} (n={len(f.lengths)})" if f else "n/a" for f in fs.values()]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


COLORS = {"focus": "tab:blue", "full": "tab:red", "truncation": "tab:green"}


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
            label = f"{m} (slope {f.exponent:.2f})" if f else f"{m} (slope n/a)"
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", color=COLORS.get(m), label=label)
            if name == "time":
                pred = [(r["length"], r["predicted_seconds"]) for r in result.rows
                        if r["method"] == m and r["status"] == "skipped" and r.get("predicted_seconds")]
                if pred:
                    ax.plot(*zip(*pred, strict=True), linestyle="none", marker="o", markerfacecolor="none",
                            color=COLORS.get(m), label=f"{m}: predicted, not run")
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
