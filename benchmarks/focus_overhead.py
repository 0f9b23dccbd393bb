"""Where FOCUS streaming spends its time beyond truncation streaming (CPU, 1 thread, batch 1).

Usage:
    python benchmarks/focus_overhead.py                  # embedded model, 64 kb of chr20 held-out DNA
    python benchmarks/focus_overhead.py --length 16384 --repeats 1

Four streams of the same sequence, window by window (chunk = W), each repeated and the fastest
repeat kept (the machine may be shared):

  truncation    the base model with its attention KV cache emptied at every window (the profiling
                module's ``truncation`` method): FOCUS without its memory and without Focus tokens
  focus         `FocusModel.stream` (unbounded Focus memory)
  focus_empty   the same loop with the Focus memory emptied after every window: Focus tokens are
                still computed and appended, then dropped, so no query ever sees a memory key
  compress      inside ``focus`` and ``focus_empty``, the time spent in the Focus-token passes
                (`FocusCore._compress_window`), timed around each call

FOCUS's extra time over truncation then splits exactly into
  attention over the memory keys   (focus - its compress) - (focus_empty - its compress)
  Focus-token compression passes   compress time of ``focus`` (its memory attention included)
  the rest (loop, bookkeeping)     (focus_empty - its compress) - truncation
plus a torch.profiler count of operator calls per window for ``focus`` and ``truncation``, and the
host-synchronising operators (``aten::item``, ``aten::_local_scalar_dense``, ``aten::nonzero``)
seen on each path. Writes benchmarks/results/focus_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import machine, write_results

from focus_nemo.profiling import describe_sequence, sequence_tokens, stream_method

SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::_to_cpu")


class CompressTimer:
    """Wraps `fm._compress_window` to add up its time; with `empty`, also drops every memory entry after it."""

    def __init__(self, fm, empty: bool = False) -> None:
        self.fm, self.empty, self.seconds, self.calls = fm, empty, 0.0, 0
        self.original = type(fm)._compress_window

    def __enter__(self) -> CompressTimer:
        def timed(state, batch):
            t0 = time.perf_counter()
            self.original(self.fm, state, batch)
            if self.empty:
                for cache in state.memory.values():
                    cache.drop_oldest(cache.length)
            self.seconds += time.perf_counter() - t0
            self.calls += 1

        self.fm._compress_window = timed
        return self

    def __exit__(self, *exc) -> None:
        del self.fm._compress_window


def run_once(fm, method: str, tokens, window: int, k: int) -> dict:
    if method == "truncation":
        t0 = time.perf_counter()
        stream_method(fm, "truncation", tokens, window, k, window)
        return {"seconds": time.perf_counter() - t0, "compress_seconds": 0.0, "compress_calls": 0}
    with CompressTimer(fm, empty=method == "focus_empty") as ct:
        t0 = time.perf_counter()
        stream_method(fm, "focus", tokens, window, k, window)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "compress_seconds": ct.seconds, "compress_calls": ct.calls}


def op_counts(fm, method: str, tokens, window: int, k: int) -> dict:
    """Operator calls per window and host-synchronising operators over a short stream (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        stream_method(fm, method, tokens, window, k, window)
    events = prof.key_averages()
    windows = tokens.shape[1] // window
    calls = sum(e.count for e in events)
    syncs = {e.key: e.count for e in events if e.key in SYNC_OPS}
    top = sorted(((e.key, e.count) for e in events), key=lambda kv: -kv[1])[:8]
    return {"windows": windows, "op_calls": calls, "op_calls_per_window": calls / windows,
            "host_sync_ops": syncs, "host_sync_ops_per_window": sum(syncs.values()) / windows,
            "most_called": dict(top)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="embedded")
    p.add_argument("--length", type=int, default=65536)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from focus_nemo.focus import FocusConfig
    from focus_nemo.loading import load_focus_model

    fm = load_focus_model(a.checkpoint, None, focus=FocusConfig(k=a.k, window=a.window))
    info = machine("cpu")
    tokens = sequence_tokens(a.length)
    methods = ("truncation", "focus", "focus_empty")
    for m in methods:  # warm-up on two windows
        run_once(fm, m, tokens[:, : 2 * a.window], a.window, a.k)
    runs = {m: [] for m in methods}
    with torch.no_grad():
        for r in range(a.repeats):  # interleaved, so slow phases of a shared machine hit every method
            for m in methods:
                runs[m].append(run_once(fm, m, tokens, a.window, a.k))
                print(f"repeat {r}: {m:<12} {runs[m][-1]['seconds']:.2f} s "
                      f"(compress {runs[m][-1]['compress_seconds']:.2f} s)", flush=True)
    best = {m: min(rs, key=lambda x: x["seconds"]) for m, rs in runs.items()}
    tr, fo, fe = best["truncation"], best["focus"], best["focus_empty"]
    extra = fo["seconds"] - tr["seconds"]
    memory_attention = (fo["seconds"] - fo["compress_seconds"]) - (fe["seconds"] - fe["compress_seconds"])
    compress = fo["compress_seconds"]
    compress_memory = fo["compress_seconds"] - fe["compress_seconds"]
    rest = (fe["seconds"] - fe["compress_seconds"]) - tr["seconds"]
    W, m = a.window, -(-a.window // a.k)
    windows = a.length // W
    mean_memory = m * (windows - 1) / 2  # Focus entries a window's queries see, on average
    counts_len = min(a.length, 8 * W)
    counts = {meth: op_counts(fm, meth, tokens[:, :counts_len], W, a.k) for meth in ("focus", "truncation")}
    breakdown = {
        "focus_minus_truncation_seconds": extra,
        "memory_attention_seconds": memory_attention,
        "compression_seconds": compress,
        "compression_memory_attention_seconds": compress_memory,
        "compression_without_memory_seconds": fe["compress_seconds"],
        "loop_and_bookkeeping_seconds": rest,
    }
    payload = {"machine": info, "checkpoint": a.checkpoint, "length": a.length, "k": a.k, "window": W,
               "threads": a.threads, "batch": 1, "repeats": a.repeats, "sequence": describe_sequence(),
               "runs": runs, "best": best, "breakdown": breakdown, "op_counts": counts,
               "mean_memory_entries_per_window": mean_memory}
    write_results("focus_overhead", payload, markdown(payload))
    print(markdown(payload))


def _pct(x: float, total: float) -> str:
    return f"{100 * x / total:.0f}%" if total else "-"


def markdown(p: dict) -> str:
    info, best, b, c = p["machine"], p["best"], p["breakdown"], p["op_counts"]
    tr = best["truncation"]["seconds"]
    fo = best["focus"]["seconds"]
    extra = b["focus_minus_truncation_seconds"]
    n, W, k = p["length"], p["window"], p["k"]
    spread = {m: statistics.pstdev([r["seconds"] for r in rs]) for m, rs in p["runs"].items()}
    lines = [
        f"# FOCUS streaming overhead vs truncation ({p['checkpoint']}, {n:,} bases, k={k}, W={W})", "",
        f"Machine: {info.get('cpu')}, {info.get('cores')} cores, torch {info.get('torch')}, load average "
        f"{info.get('load_average_1min')} at the start (shared machine: timings are under contention); "
        f"CPU, fp32, {p['threads']} thread, batch 1, chunk = W. Sequence: {p['sequence']}, first {n:,} bases. "
        f"Best of {p['repeats']} interleaved repeats (population s.d. across repeats: "
        + ", ".join(f"{m} {s:.2f} s" for m, s in spread.items()) + ").", "",
        "| stream | time s | bases/s | Focus-token passes s |", "|---|---|---|---|",
    ]
    for m, r in best.items():
        lines.append(f"| {m} | {r['seconds']:.2f} | {n / r['seconds']:,.0f} | {r['compress_seconds']:.2f} |")
    lines += [
        "", f"FOCUS / truncation: {fo / tr:.3f} ({extra:+.2f} s). Where the extra time goes:", "",
        "| part | s | share of the extra time |", "|---|---|---|",
        f"| attention of the bases over the memory keys | {b['memory_attention_seconds']:.2f} | "
        f"{_pct(b['memory_attention_seconds'], extra)} |",
        f"| Focus-token passes (one per window, every block) | {b['compression_seconds']:.2f} | "
        f"{_pct(b['compression_seconds'], extra)} |",
        f"| &nbsp;&nbsp;of which their attention over the memory | {b['compression_memory_attention_seconds']:.2f} | "
        f"{_pct(b['compression_memory_attention_seconds'], extra)} |",
        f"| loop and bookkeeping (FOCUS's piece path vs the base's, without memory keys) | "
        f"{b['loop_and_bookkeeping_seconds']:.2f} | {_pct(b['loop_and_bookkeeping_seconds'], extra)} |",
        "", f"A window's bases see on average {p['mean_memory_entries_per_window']:.0f} memory keys besides their "
        f"window's {W} (ceil(W/k) = {-(-W // k)} per completed window).", "",
        "Operator calls (torch.profiler, first " + f"{c['focus']['windows']} windows):", "",
        "| stream | operator calls per window | host-synchronising operators per window |", "|---|---|---|",
    ]
    for m, r in c.items():
        syncs = ", ".join(f"{kk} x{v}" for kk, v in r["host_sync_ops"].items()) or "none"
        lines.append(f"| {m} | {r['op_calls_per_window']:.0f} | {r['host_sync_ops_per_window']:.1f} ({syncs}) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
