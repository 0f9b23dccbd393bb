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
        self.fm, self.empty, self.seconds, self.cpu_seconds, self.calls = fm, empty, 0.0, 0.0, 0
        self.original = type(fm)._compress_window

    def __enter__(self) -> CompressTimer:
        def timed(state, batch):
            t0, c0 = time.perf_counter(), time.process_time()
            self.original(self.fm, state, batch)
            if self.empty:
                for cache in state.memory.values():
                    cache.drop_oldest(cache.length)
            self.seconds += time.perf_counter() - t0
            self.cpu_seconds += time.process_time() - c0
            self.calls += 1

        self.fm._compress_window = timed
        return self

    def __exit__(self, *exc) -> None:
        del self.fm._compress_window


def run_once(fm, method: str, tokens, window: int, k: int) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    if method == "truncation":
        stream_method(fm, "truncation", tokens, window, k, window)
        return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                "compress_seconds": 0.0, "compress_cpu_seconds": 0.0, "compress_calls": 0}
    with CompressTimer(fm, empty=method == "focus_empty") as ct:
        stream_method(fm, "focus", tokens, window, k, window)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"seconds": seconds, "cpu_seconds": cpu, "compress_seconds": ct.seconds,
            "compress_cpu_seconds": ct.cpu_seconds, "compress_calls": ct.calls}


def op_counts(fm, method: str, tokens, window: int, k: int) -> dict:
    """Operator calls per window and host-synchronising operators over a short stream (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        stream_method(fm, method, tokens, window, k, window)
    events = prof.key_averages()
    windows = tokens.shape[1] // window
    extra = {}
    if method == "focus":  # one Focus-token pass on its own (the stream ended at a window boundary)
        state = fm.init_state(1, k, window)
        for _ in fm.stream(tokens, window, state=state):
            pass
        with profile(activities=[ProfilerActivity.CPU]) as one:
            fm._compress_window(state, 1)
        extra["op_calls_per_focus_token_pass"] = sum(e.count for e in one.key_averages())
    calls = sum(e.count for e in events)
    syncs = {e.key: e.count for e in events if e.key in SYNC_OPS}
    top = sorted(((e.key, e.count) for e in events), key=lambda kv: -kv[1])[:8]
    return {"windows": windows, "op_calls": calls, "op_calls_per_window": calls / windows,
            "host_sync_ops": syncs, "host_sync_ops_per_window": sum(syncs.values()) / windows,
            "most_called": dict(top), **extra}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="embedded")
    p.add_argument("--length", type=int, default=65536)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--render", action="store_true", help="only rewrite the .md from the existing .json")
    a = p.parse_args()
    if a.render:
        import json

        from common import RESULTS

        payload = json.loads((RESULTS / "focus_overhead.json").read_text())
        (RESULTS / "focus_overhead.md").write_text(markdown(payload))
        return
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
                x = runs[m][-1]
                print(f"repeat {r}: {m:<12} {x['seconds']:.2f} s, CPU {x['cpu_seconds']:.2f} s "
                      f"(Focus-token passes: CPU {x['compress_cpu_seconds']:.2f} s)", flush=True)
    # CPU time: on a shared machine wall time mostly measures the other work
    best = {m: min(rs, key=lambda x: x["cpu_seconds"]) for m, rs in runs.items()}
    tr, fo, fe = best["truncation"], best["focus"], best["focus_empty"]
    extra = fo["cpu_seconds"] - tr["cpu_seconds"]
    memory_attention = ((fo["cpu_seconds"] - fo["compress_cpu_seconds"])
                        - (fe["cpu_seconds"] - fe["compress_cpu_seconds"]))
    compress = fo["compress_cpu_seconds"]
    compress_memory = fo["compress_cpu_seconds"] - fe["compress_cpu_seconds"]
    rest = (fe["cpu_seconds"] - fe["compress_cpu_seconds"]) - tr["cpu_seconds"]
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
        "compression_without_memory_seconds": fe["compress_cpu_seconds"],
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
    tr = best["truncation"]["cpu_seconds"]
    fo = best["focus"]["cpu_seconds"]
    extra = b["focus_minus_truncation_seconds"]
    n, W, k = p["length"], p["window"], p["k"]
    spread = {m: statistics.pstdev([r["cpu_seconds"] for r in rs]) for m, rs in p["runs"].items()}
    lines = [
        f"# FOCUS streaming overhead vs truncation ({p['checkpoint']}, {n:,} bases, k={k}, W={W})", "",
        f"Machine: {info.get('cpu')}, {info.get('cores')} cores, torch {info.get('torch')}, load average "
        f"{info.get('load_average_1min')} at the start (a shared machine: wall times are under contention, so "
        f"the comparison uses the process's CPU time); CPU, fp32, {p['threads']} thread, batch 1, chunk = W. "
        f"Sequence: {p['sequence']}, first {n:,} bases. Fastest (CPU time) of {p['repeats']} interleaved repeats "
        "(s.d. of CPU time across repeats: " + ", ".join(f"{m} {s:.2f} s" for m, s in spread.items()) + ").", "",
        "| stream | CPU s | wall s | bases per CPU second | Focus-token passes, CPU s |", "|---|---|---|---|---|",
    ]
    for m, r in best.items():
        lines.append(f"| {m} | {r['cpu_seconds']:.2f} | {r['seconds']:.2f} | {n / r['cpu_seconds']:,.0f} | "
                     f"{r['compress_cpu_seconds']:.2f} |")
    lines += [
        "", f"FOCUS / truncation (CPU time): {fo / tr:.3f} ({extra:+.2f} s). Where the extra time goes:", "",
        "| part | CPU s | share of the extra time |", "|---|---|---|",
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
    windows = n // W
    per_window_ms = {name: 1e3 * b[key] / windows for name, key in (
        ("memory", "memory_attention_seconds"), ("passes", "compression_seconds"),
        ("rest", "loop_and_bookkeeping_seconds"))}
    pass_ops = c["focus"].get("op_calls_per_focus_token_pass")
    ops_extra = c["focus"]["op_calls_per_window"] - c["truncation"]["op_calls_per_window"]
    lines += [
        "", "What the numbers say:", "",
        f"- The attention of the bases over the memory keys is {_pct(b['memory_attention_seconds'], extra)} of "
        f"FOCUS's extra time ({per_window_ms['memory']:.1f} ms per window): the keys FOCUS exists to add "
        f"({p['mean_memory_entries_per_window']:.0f} on average against the window's {W}); it grows with the "
        "memory (bounded with a horizon).",
        f"- What remains beyond them is {_pct(extra - b['memory_attention_seconds'], extra)} of the extra time, "
        f"{100 * (extra - b['memory_attention_seconds']) / tr:.1f}% of truncation's time, about the same at every "
        "length: "
        f"the Focus-token passes, {per_window_ms['passes']:.1f} ms per window ({-(-W // k)} tokens through every "
        "block's norms and MLP and the attention blocks' projections and attention, one batched call per block"
        + (f"; {pass_ops:,} operator calls per pass" if pass_ops else "") + ", so the pass costs its operator "
        f"dispatch more than its arithmetic), and the loop's own work, {per_window_ms['rest']:.1f} ms per window "
        "(merging the attention parts by log-sum-exp, the chunk's logits, the Focus token descriptors). In all, "
        f"FOCUS runs {ops_extra:,.0f} more operator calls per window than truncation.",
        "- No host synchronisation per window on either path (there were two `aten::item` per window on both: "
        "the vocabulary check read the tokens' min and max back from the model's device, a synchronisation on a "
        "GPU): the streamed tokens stay on the host until the "
        "model moves them, so their vocabulary check reads host memory; the memory appends into spare capacity "
        "of one buffer per block and the attention reads views of it (no concatenation of the memory).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
