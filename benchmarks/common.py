"""Shared helpers for the benchmark scripts: isolated runs with peak-memory measurement."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _status_kib(field: str) -> int | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
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


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def _child(target, kwargs, queue):
    try:
        queue.put(target(**kwargs))
    except Exception as e:  # report, never hang the parent
        queue.put({"error": f"{type(e).__name__}: {e}"})


def isolated(target, **kwargs) -> dict:
    """Run `target(**kwargs)` in a fresh process (so peak RSS belongs to that run alone)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(target, kwargs, q))
    p.start()
    out = q.get()
    p.join()
    return out


class Timer:
    def __enter__(self):
        reset_peak_rss()  # so the peak belongs to this run, not to imports or model building
        self.rss0 = rss_bytes()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.peak_extra_bytes = max(0, peak_rss_bytes() - self.rss0)


def loglog_slope(xs, ys) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    num = sum((x - mx) * (y - my) for x, y in pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return num / den


def predict_seconds(lengths, seconds, target, exponent=2.0) -> float | None:
    """Extrapolate the last measured time to `target` with the given exponent (conservative)."""
    done = [(x, s) for x, s in zip(lengths, seconds, strict=True) if s]
    if not done:
        return None
    x, s = done[-1]
    return s * (target / x) ** exponent


def write_results(name: str, payload: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown)


def mib(b) -> str:
    if b is None:
        return "-"
    return f"{b / 2**20:,.1f}" if b >= 2**20 else f"{b / 2**20:.4f}"
