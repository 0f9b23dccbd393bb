"""Measuring a run: resident memory (Linux VmRSS / VmHWM, with a peak reset), the `Timer` that records
wall time and memory growth, `isolated` (a run in its own process, so peaks do not carry over), and a
description of the machine."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import queue
import resource
import signal
import time
from collections.abc import Callable

import torch


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
    """Wall time, CPU time and peak memory growth of a ``with`` block.

    After the block: ``seconds``; ``cpu_seconds`` (CPU time of this process: on a shared machine it
    moves far less than wall time when other work competes for the cores); ``peak_extra_bytes`` (peak
    RSS minus RSS at entry); on a CUDA `device`, ``gpu_peak_bytes`` (`torch.cuda.max_memory_allocated`)
    and ``gpu_peak_extra_bytes`` (that minus the bytes allocated at entry), else None. CUDA is
    synchronised at both ends.
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
        self.c0 = time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda and exc[0] is None:
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0
        self.cpu_seconds = time.process_time() - self.c0
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
