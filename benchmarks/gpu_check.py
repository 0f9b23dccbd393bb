"""GPU check in one command: the GPU tests, then the Evo-2 7B shape with random weights in bf16.

Usage (on a machine with one H100/H200; ``benchmarks/gpu_check.sh`` adds the set-up from carried
wheels and is what to run there)::

    python benchmarks/gpu_check.py                      # cuda, 7b, bf16, hard budget 420 s
    python benchmarks/gpu_check.py --out results/gpu    # where gpu_check.json / gpu_check.md go
    python benchmarks/gpu_check.py --device cpu --preset tiny --budget-s 30 --skip-tests   # smoke run

Sections, each with its own share of the hard budget (``--budget-s``; a section never runs past
the script's deadline, and the results are written after every section, so a run cut short keeps
what it measured):

1. ``tests``: ``pytest tests/gpu`` in a subprocess (return code and summary line).
2. ``streaming``: `FocusModel` streaming window by window (chunk = W) over one random A/C/G/T
   sequence from ``--start-length`` (64 kb) upward, doubling: at each length the elapsed time,
   bases/s (overall and over the last doubling) and the peak GPU memory so far; then the truncation
   baseline (the base model with its attention cache emptied at every window, Hyena state carried,
   as in `focus_nemo.profiling`) over the lengths FOCUS reached, and the time ratio FOCUS/truncation.
3. ``full_kv``: the base model with its full attention KV cache (`Evo2Model.forward_chunk`), doubling
   the length until CUDA runs out of memory (`torch.cuda.OutOfMemoryError`: the length is recorded)
   or the section's budget ends. Once the budget for computing the whole prefix is spent, the cache
   is grown with filler entries of the right shape and each doubling runs one real chunk over it,
   so the out-of-memory length is reached within the budget (``"filled": true`` rows).
4. ``train_step``: one training step (forward + backward of the next-base loss, Focus parameters
   only) over ``--train-windows`` windows in one pass (`focus_loss`) vs window by window
   (`forward_chunk` with gradients through the carried state).

Writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out`` (default ``$OUT`` when set, else
``benchmarks/results/gpu_check``).

Verdict: the first line of ``gpu_check.md`` (and the last line printed) is ``PASSED: ...`` or
``FAILED: <why>``, and the exit status is 1 when anything failed: a test failed or errored, pytest
timed out, a test was skipped for a reason not allowed by ``--allow-skip`` (by default only "needs N
GPUs" and Transformer Engine, which the check never installs, are allowed: a missing NeMo stack
fails the check), a section raised, ran out of memory where it must not, reached no length, or got no
budget. A crash of the script itself also prints ``FAILED: ...`` and exits 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32,
          "float16": torch.float16, "fp16": torch.float16}
# Share of the hard budget each section may use (the rest: model set-up and writing).
SHARES = {"tests": 0.45, "streaming": 0.22, "full_kv": 0.15, "train_step": 0.10}
# Skip reasons that do not fail the check: hardware the machine does not have, and Transformer Engine, which
# the project never installs (the NeMo tests run NeMo's TE layer spec only where the image carries TE).
ALLOWED_SKIPS = (r"needs \d+ GPUs", r"Transformer Engine")


class Deadline:
    """The script's hard budget and each section's share of it."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget = budget_s

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def section(self, share: float) -> float:
        """Seconds a section may run: its share of the budget, and never past the deadline."""
        return max(0.0, min(share * self.budget, self.left()))


# --------------------------------------------------------------------------- device helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    """Peak memory allocated on the GPU since the last `reset_peak` (None on a CPU)."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def machine(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_bytes=int(props.total_memory), cuda=torch.version.cuda,
                    capability=f"{props.major}.{props.minor}")
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def doubling(start: int, stop: int) -> list[int]:
    """start, 2 start, 4 start, ... up to `stop` inclusive."""
    out, n = [], start
    while n <= stop:
        out.append(n)
        n *= 2
    return out


# --------------------------------------------------------------------------- model
@torch.no_grad()
def random_focus_model(preset: str, device: torch.device, dtype: torch.dtype, k: int, window: int, seed: int = 0):
    """FocusModel over an Evo2Model of `preset` with random weights, built on `device` (the weights
    are drawn there, so a 7B model does not pass through the CPU) and cast to `dtype`.

    The scales are those of `Evo2Model.reset_parameters`; the (small) Hyena filters are drawn by
    their own `reset_parameters` on the CPU.
    """
    from focus_nemo.evo2 import Evo2Config, Evo2Model
    from focus_nemo.focus import FocusConfig, FocusModel

    cfg = Evo2Config.preset(preset)
    with torch.device(device):
        base = Evo2Model(cfg, init=False)
    g = torch.Generator(device=device).manual_seed(seed)
    std, out_std = cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.num_layers)
    for name, p in base.named_parameters():
        if ".filter." in name:
            continue
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        elif name.endswith(".bias"):
            p.zero_()
        elif name.endswith(("out_proj.weight", "mlp.l3.weight")):
            p.normal_(0.0, out_std, generator=g)
        elif name.endswith("featurizer"):
            b = 1 / math.sqrt(cfg.short_filter_length)
            p.uniform_(-b, b, generator=g)
        elif p.dim() == 2:
            p.normal_(0.0, std, generator=g)
    cpu_g = torch.Generator().manual_seed(seed)
    for block in base.blocks:
        if not block.is_attention:
            block.mixer.filter.to("cpu").reset_parameters(cpu_g)
            block.mixer.filter.to(device)
    base = base.to(dtype).eval()
    return FocusModel(base, FocusConfig(k=k, window=window)).eval()


def random_tokens(length: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    acgt = torch.tensor([65, 67, 71, 84])
    return acgt[torch.randint(0, 4, (1, length), generator=g)].to(device)


# --------------------------------------------------------------------------- sections
def _junit_counts(path: Path) -> dict:
    """Counts and skip / failure messages from pytest's JUnit XML report."""
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "skips": [], "failed": []}
    root = ET.parse(path).getroot()
    for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
        for key in ("tests", "failures", "errors", "skipped"):
            counts[key] += int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            for child in case:
                if child.tag == "skipped":
                    counts["skips"].append({"test": name, "reason": child.get("message", "")})
                elif child.tag in ("failure", "error"):
                    counts["failed"].append({"test": name, "kind": child.tag,
                                             "message": (child.get("message") or "")[:300]})
    return counts


def run_tests(budget_s: float, args) -> dict:
    """``pytest tests/gpu`` in a subprocess, killed at the section's budget. Status "ok" only when pytest
    exits 0 and every skip has an allowed reason (`ALLOWED_SKIPS`, ``--allow-skip``)."""
    report = Path(args.out) / "gpu_tests_junit.xml"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", *args.tests, "-q", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={report}", *args.pytest_args]
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=max(budget_s, 1))
    except subprocess.TimeoutExpired as e:
        tail = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return {"status": "timeout", "seconds": time.perf_counter() - t0, "budget_s": budget_s,
                "command": " ".join(cmd), "output_tail": tail[-3000:],
                "why": f"pytest did not finish within the section's {budget_s:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    summary = next((ln for ln in reversed(lines) if " in " in ln and ("passed" in ln or "failed" in ln
                                                                     or "skipped" in ln or "error" in ln)), "")
    section = {"returncode": proc.returncode, "seconds": time.perf_counter() - t0, "budget_s": budget_s,
               "summary": summary.strip("= "), "command": " ".join(cmd),
               "output_tail": (proc.stdout + proc.stderr)[-3000:]}
    counts = _junit_counts(report) if report.is_file() else None
    section["counts"] = counts
    allowed = [re.compile(p) for p in (*ALLOWED_SKIPS, *args.allow_skip)]
    bad_skips = [s for s in (counts or {}).get("skips", []) if not any(p.search(s["reason"]) for p in allowed)]
    section["disallowed_skips"] = bad_skips
    why = []
    if proc.returncode != 0:
        if counts and (counts["failures"] or counts["errors"]):
            first = counts["failed"][0] if counts["failed"] else {}
            why.append(f"{counts['failures']} failed, {counts['errors']} errors of {counts['tests']} tests "
                       f"(first: {first.get('test')}: {first.get('message', '')[:160]})")
        else:
            why.append(f"pytest exited with status {proc.returncode} ({summary.strip('= ') or 'no summary'})")
    if counts is not None and counts["tests"] == 0:
        why.append("pytest collected no tests")
    if bad_skips:
        reasons = sorted({s["reason"] for s in bad_skips})
        why.append(f"{len(bad_skips)} tests skipped for reasons not allowed: {'; '.join(reasons)[:300]}")
    section["status"] = "failed" if why else "ok"
    if why:
        section["why"] = "; ".join(why)
    return section


@torch.no_grad()
def _stream_pass(step, lengths: list[int], window: int, budget_s: float, device: torch.device) -> tuple[list, str]:
    """Call ``step(start, end)`` window by window up to max(lengths), recording at each length in
    `lengths` the elapsed seconds and the peak GPU memory; stops early when the budget ends.
    Returns (rows, why it stopped: "done" / "budget" / "out_of_memory")."""
    reset_peak(device)
    rows, t0, last_t, last_n = [], time.perf_counter(), 0.0, 0
    marks = iter(lengths)
    mark = next(marks)
    for start in range(0, lengths[-1], window):
        try:
            step(start, start + window)
        except Exception as err:
            if is_oom(err):
                return rows, "out_of_memory"
            raise
        if start + window == mark:
            sync(device)
            elapsed = time.perf_counter() - t0
            rows.append({"length": mark, "seconds": elapsed, "bases_per_s": mark / elapsed,
                         "segment_bases_per_s": (mark - last_n) / max(elapsed - last_t, 1e-9),
                         "peak_gpu_bytes": peak_bytes(device)})
            last_t, last_n = elapsed, mark
            mark = next(marks, None)
            if mark is None:
                return rows, "done"
        if time.perf_counter() - t0 > budget_s:
            return rows, "budget"
    return rows, "done"


def run_streaming(fm, budget_s: float, args, device: torch.device) -> dict:
    """FOCUS streaming from args.start_length upward, then truncation over the lengths FOCUS reached."""
    from focus_nemo.evo2 import KVCache

    W, k = args.window, args.k
    lengths = doubling(args.start_length, args.max_length)
    tokens = random_tokens(lengths[-1], device, seed=1)
    t0 = time.perf_counter()
    # warm-up: two windows of each method (kernels, allocator)
    state = fm.init_state(1, k, W)
    for s in (0, W):
        _, state = fm.forward_chunk(tokens[:, s: s + W], state)
    base_state = fm.base.init_state(1)
    for s in (0, W):
        _, base_state = fm.base.forward_chunk(tokens[:, s: s + W], base_state)
    del state, base_state

    focus_state = [fm.init_state(1, k, W)]

    def focus_step(s, e):
        _, focus_state[0] = fm.forward_chunk(tokens[:, s:e], focus_state[0])

    focus_budget = max(0.0, 0.65 * budget_s - (time.perf_counter() - t0))
    focus_rows, focus_stop = _stream_pass(focus_step, lengths, W, focus_budget, device)
    memory_entries = max(focus_state[0].memory_entries().values(), default=0)
    del focus_state[0]

    trunc_rows, trunc_stop = [], "not run"
    reached = [r["length"] for r in focus_rows]
    if reached:
        trunc_state = [fm.base.init_state(1)]

        def trunc_step(s, e):
            st = trunc_state[0]
            st.blocks = [KVCache() if isinstance(b, KVCache) else b for b in st.blocks]  # s is a multiple of W
            _, trunc_state[0] = fm.base.forward_chunk(tokens[:, s:e], st)

        trunc_budget = max(0.0, budget_s - (time.perf_counter() - t0))
        trunc_rows, trunc_stop = _stream_pass(trunc_step, reached, W, trunc_budget, device)
        del trunc_state[0]
    trunc = {r["length"]: r for r in trunc_rows}
    rows = []
    for r in focus_rows:
        t = trunc.get(r["length"])
        rows.append({"length": r["length"], "focus_seconds": r["seconds"], "focus_bases_per_s": r["bases_per_s"],
                     "focus_segment_bases_per_s": r["segment_bases_per_s"],
                     "focus_peak_gpu_bytes": r["peak_gpu_bytes"],
                     "truncation_seconds": t and t["seconds"], "truncation_bases_per_s": t and t["bases_per_s"],
                     "truncation_peak_gpu_bytes": t and t["peak_gpu_bytes"],
                     "time_ratio_to_truncation": t and r["seconds"] / t["seconds"]})
    return {"status": "ok" if rows else "no_length_reached", "budget_s": budget_s,
            "seconds": time.perf_counter() - t0, "k": k, "window": W, "chunk": W, "focus_stopped": focus_stop,
            "truncation_stopped": trunc_stop, "focus_memory_entries_per_attention_block": memory_entries,
            "rows": rows}


def _fill_cache(state, length: int) -> None:
    """Grow every attention cache of `state` to `length` entries with filler keys/values (no compute)."""
    from focus_nemo.evo2 import KVCache

    for cache in state.blocks:
        if isinstance(cache, KVCache) and cache.length < length:
            k, v = cache.view()
            n = length - cache.length
            cache.append(k[:, :, -1:].expand(-1, -1, n, -1), v[:, :, -1:].expand(-1, -1, n, -1))
    state.offset = length


@torch.no_grad()
def run_full_kv(fm, budget_s: float, args, device: torch.device) -> dict:
    """The base model with its full KV cache, doubling the length until out of memory or the budget."""
    base, chunk = fm.base, args.kv_chunk
    lengths = doubling(args.start_length, args.kv_max_length)
    t0 = time.perf_counter()
    reset_peak(device)
    state = base.init_state(1)
    g = torch.Generator().manual_seed(2)
    acgt = torch.tensor([65, 67, 71, 84])
    rows, oom_at, stopped, filled = [], None, "max_length", False
    compute_budget = args.kv_compute_share * budget_s
    for length in lengths:
        # Predicted time to compute up to `length` (attention grows ~L^2): past the compute budget,
        # fill the cache instead and time one real chunk at the new length.
        if rows and not filled:
            prev = rows[-1]
            predicted = prev["seconds"] * (length / prev["length"]) ** 2
            filled = time.perf_counter() - t0 + (predicted - prev["seconds"]) > compute_budget
        if time.perf_counter() - t0 > budget_s:
            stopped = "budget"
            break
        try:
            if filled:
                _fill_cache(state, length - chunk)
                sync(device)
                t1 = time.perf_counter()
                _, state = base.forward_chunk(acgt[torch.randint(0, 4, (1, chunk), generator=g)].to(device), state)
                sync(device)
                rows.append({"length": length, "filled": True, "seconds": None,
                             "last_chunk_seconds": time.perf_counter() - t1, "bases_per_s": None,
                             "peak_gpu_bytes": peak_bytes(device), "kv_bytes": state.kv_nbytes()})
                continue
            sync(device)
            t1 = time.perf_counter()
            while state.offset < length:
                n = min(chunk, length - state.offset)
                tokens = acgt[torch.randint(0, 4, (1, n), generator=g)].to(device)
                _, state = base.forward_chunk(tokens, state)
                if time.perf_counter() - t0 > budget_s:
                    break
            sync(device)
            if state.offset < length:
                stopped = "budget"
                break
            t_last = time.perf_counter() - t1
            seconds = t_last + (rows[-1]["seconds"] if rows else 0.0)
            rows.append({"length": length, "filled": False, "seconds": seconds, "last_chunk_seconds": None,
                         "bases_per_s": length / seconds, "peak_gpu_bytes": peak_bytes(device),
                         "kv_bytes": state.kv_nbytes()})
        except Exception as err:
            if not is_oom(err):
                raise
            oom_at, stopped = length, "out_of_memory"
            break
    del state
    reset_peak(device)
    return {"status": "ok" if rows else "no_length_reached", "budget_s": budget_s,
            "seconds": time.perf_counter() - t0, "chunk": chunk, "stopped": stopped, "out_of_memory_at": oom_at,
            "max_length_reached": rows[-1]["length"] if rows else None, "rows": rows}


def _train_step(fm, how: str, raw: torch.Tensor, window: int) -> float:
    from focus_nemo.focus import focus_loss, split_case, weighted_ce

    fm.zero_grad(set_to_none=True)
    if how == "one_pass":
        loss = focus_loss(fm, raw)["loss"]
    else:
        tokens, w = split_case(raw, fm.config.lowercase_weight)
        state = fm.init_state(1)
        num = den = 0.0
        for s in range(0, tokens.shape[1] - 1, window):
            e = min(s + window, tokens.shape[1] - 1)
            logits, state = fm.forward_chunk(tokens[:, s:e], state)
            ww = w[:, s + 1: e + 1]
            num = num + weighted_ce(logits, tokens[:, s + 1: e + 1], ww) * ww.sum()
            den = den + ww.sum()
        loss = num / den
    loss.backward()
    return float(loss.detach())


def run_train_step(fm, budget_s: float, args, device: torch.device) -> dict:
    """One-pass vs window-by-window training step (Focus parameters only) over args.train_windows windows."""
    W = args.window
    raw = random_tokens(args.train_windows * W + 1, device, seed=3)
    t0 = time.perf_counter()
    rows = []
    for how in ("one_pass", "window_by_window"):
        row = {"how": how, "bases": args.train_windows * W}
        try:
            times = []
            reset_peak(device)
            for _ in range(1 + args.train_repeats):  # the first is a warm-up
                if time.perf_counter() - t0 > budget_s and times:
                    break
                sync(device)
                t1 = time.perf_counter()
                row["loss"] = _train_step(fm, how, raw, W)
                sync(device)
                times.append(time.perf_counter() - t1)
            row.update(status="ok", seconds=min(times[1:] or times), timed_repeats=len(times) - 1,
                       peak_gpu_bytes=peak_bytes(device))
        except Exception as err:
            if not is_oom(err):
                raise
            row.update(status="out_of_memory", note=str(err).splitlines()[0][:200])
        fm.zero_grad(set_to_none=True)
        rows.append(row)
    ok = {r["how"]: r for r in rows if r.get("status") == "ok"}
    ratio = ok["window_by_window"]["seconds"] / ok["one_pass"]["seconds"] if len(ok) == 2 else None
    return {"status": "ok" if len(ok) == 2 else "partial", "budget_s": budget_s,
            "seconds": time.perf_counter() - t0, "windows": args.train_windows, "rows": rows,
            "window_by_window_over_one_pass": ratio}


# --------------------------------------------------------------------------- output
def _gib(b) -> str:
    return "" if b is None else f"{b / 2**30:.2f}"


def _num(x, fmt: str = "{:,.0f}") -> str:
    return "" if x is None else fmt.format(x)


def markdown(result: dict) -> str:
    m, c, s = result["machine"], result["config"], result["sections"]
    lines = [verdict(result), "", f"# GPU check: {c['preset']} shape, random weights, {c['dtype']}", "",
             f"Machine: {m.get('gpu', m['device'])}, torch {m['torch']}, CUDA {m.get('cuda')}, "
             f"{m['cpu_count']} CPU cores; commit {m.get('commit')}. Hard budget {c['budget_s']:.0f} s, "
             f"total {result['total_seconds']:.0f} s.", ""]
    t = s.get("tests", {})
    lines += ["## GPU tests", "", f"{t.get('status')}: {t.get('summary', '')} ({_num(t.get('seconds'), '{:.0f}')} s)",
              ""]
    for skip in t.get("counts", None) and t["counts"]["skips"] or []:
        lines.append(f"- skipped {skip['test']}: {skip['reason']}")
    for fail in t.get("counts", None) and t["counts"]["failed"] or []:
        lines.append(f"- {fail['kind']} {fail['test']}: {fail['message']}")
    lines.append("")
    st = s.get("streaming")
    if st:
        lines += [f"## FOCUS streaming (k={st.get('k')}, W={st.get('window')}, chunk = W) vs truncation", "",
                  "| length | FOCUS s | FOCUS bases/s | last doubling bases/s | peak GPU GiB | truncation s | "
                  "truncation bases/s | truncation peak GiB | FOCUS / truncation time |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in st.get("rows", []):
            lines.append(f"| {r['length']:,} | {r['focus_seconds']:.2f} | {_num(r['focus_bases_per_s'])} | "
                         f"{_num(r['focus_segment_bases_per_s'])} | {_gib(r['focus_peak_gpu_bytes'])} | "
                         f"{_num(r['truncation_seconds'], '{:.2f}')} | {_num(r['truncation_bases_per_s'])} | "
                         f"{_gib(r['truncation_peak_gpu_bytes'])} | "
                         f"{_num(r['time_ratio_to_truncation'], '{:.2f}')} |")
        lines += ["", f"FOCUS stopped: {st.get('focus_stopped')}; truncation stopped: "
                      f"{st.get('truncation_stopped')}.", ""]
    kv = s.get("full_kv")
    if kv:
        lines += [f"## Base model, full KV cache (chunk {kv.get('chunk')})", "",
                  "| length | computed | s (whole prefix) | bases/s | last chunk s | peak GPU GiB | KV cache GiB |",
                  "|---|---|---|---|---|---|---|"]
        for r in kv.get("rows", []):
            lines.append(f"| {r['length']:,} | {'no (filled)' if r['filled'] else 'yes'} | "
                         f"{_num(r['seconds'], '{:.2f}')} | {_num(r['bases_per_s'])} | "
                         f"{_num(r['last_chunk_seconds'], '{:.3f}')} | {_gib(r['peak_gpu_bytes'])} | "
                         f"{_gib(r['kv_bytes'])} |")
        lines += ["", f"Stopped: {kv.get('stopped')}; out of memory at length {kv.get('out_of_memory_at')}.", ""]
    tr = s.get("train_step")
    if tr:
        lines += [f"## Training step over {tr.get('windows')} windows", "",
                  "| how | bases | s | peak GPU GiB | loss |", "|---|---|---|---|---|"]
        for r in tr.get("rows", []):
            lines.append(f"| {r['how']} | {r['bases']:,} | {_num(r.get('seconds'), '{:.3f}')} | "
                         f"{_gib(r.get('peak_gpu_bytes'))} | {_num(r.get('loss'), '{:.6f}')} |")
        lines += ["", f"Window by window / one pass time: {_num(tr.get('window_by_window_over_one_pass'), '{:.2f}')}.",
                  ""]
    return "\n".join(lines)


# Section statuses that count as done; anything else fails the check.
OK_STATUS = {"ok"}


def failures(result: dict) -> list[str]:
    """Why the check failed, one entry per failed section (empty: passed)."""
    why = []
    for name, section in result["sections"].items():
        status = section.get("status")
        if status in OK_STATUS or (name == "tests" and status == "skipped" and section.get("by_request")):
            continue
        detail = section.get("why") or section.get("note") or ""
        why.append(f"{name} {status}" + (f" ({detail})" if detail else ""))
    if result.get("crash"):
        why.append(f"crashed: {result['crash']}")
    return why


def verdict(result: dict) -> str:
    """The report's first line: PASSED, or FAILED and why."""
    why = failures(result)
    if why:
        return "FAILED: " + "; ".join(why)
    parts = [f"{name} " + ("skipped (--skip-tests)" if section.get("by_request") else section.get("status"))
             for name, section in result["sections"].items()]
    tests = result["sections"].get("tests", {})
    if tests.get("status") == "ok" and tests.get("summary"):
        parts[0] += f" ({tests['summary']})"
    return "PASSED: " + ", ".join(parts)


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_check.md").write_text(markdown(result))


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="7b")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on a CPU")
    ap.add_argument("--budget-s", type=float, default=420.0, help="hard budget of the whole script")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "benchmarks" / "results" / "gpu_check"))
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--start-length", type=int, default=65536)
    ap.add_argument("--max-length", type=int, default=1 << 24, help="longest FOCUS stream")
    ap.add_argument("--kv-max-length", type=int, default=1 << 24, help="longest full-KV length tried")
    ap.add_argument("--kv-chunk", type=int, default=4096)
    ap.add_argument("--kv-compute-share", type=float, default=0.6,
                    help="share of the full-KV budget for computing whole prefixes; then the cache is filled")
    ap.add_argument("--train-windows", type=int, default=8)
    ap.add_argument("--train-repeats", type=int, default=2)
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--tests", nargs="+", default=["tests/gpu"], help="what pytest runs (default tests/gpu)")
    ap.add_argument("--allow-skip", action="append", default=[], metavar="REGEX",
                    help="a skip reason that does not fail the check (besides: " + ", ".join(ALLOWED_SKIPS) + ")")
    ap.add_argument("--pytest-args", nargs=argparse.REMAINDER, default=[], help="passed to pytest tests/gpu")
    args = ap.parse_args(argv)
    if args.start_length % args.window or args.start_length < 2 * args.window:
        ap.error("--start-length must be a multiple of --window and at least two windows")
    if args.kv_chunk > args.start_length:
        ap.error("--kv-chunk must not exceed --start-length")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    deadline = Deadline(args.budget_s)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("FAILED: gpu_check: --device cuda but torch.cuda.is_available() is False")
    dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = DTYPES[dtype_name]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    out = Path(args.out)
    result = {"machine": machine(device),
              "config": {"preset": args.preset, "device": str(device), "dtype": dtype_name, "budget_s": args.budget_s,
                         "k": args.k, "window": args.window, "start_length": args.start_length,
                         "weights": "random", "sequence": "random A/C/G/T"},
              "sections": {}, "total_seconds": 0.0}

    def done(name: str, section: dict) -> None:
        result["sections"][name] = section
        result["total_seconds"] = time.perf_counter() - deadline.start
        write(result, out)
        print(f"[gpu_check] {name}: {section.get('status')} ({section.get('seconds', 0):.1f} s)", flush=True)

    if args.skip_tests:
        done("tests", {"status": "skipped", "by_request": True, "seconds": 0.0})
    else:
        done("tests", run_tests(deadline.section(SHARES["tests"]), args))
    try:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        fm = random_focus_model(args.preset, device, dtype, args.k, args.window)
        sync(device)
        result["config"]["model_build_seconds"] = time.perf_counter() - t0
        result["config"]["parameters"] = fm.base.num_parameters()
        for name, fn in (("streaming", run_streaming), ("full_kv", run_full_kv), ("train_step", run_train_step)):
            budget = deadline.section(SHARES[name])
            if budget <= 0:
                done(name, {"status": "skipped", "seconds": 0.0, "note": "hard budget spent"})
                continue
            t1 = time.perf_counter()
            try:
                section = fn(fm, budget, args, device)
            except Exception as err:  # recorded (and fails the check); the next section still runs
                section = {"status": "error", "seconds": time.perf_counter() - t1, "note": _describe(err)}
            reset_peak(device)
            done(name, section)
    except Exception as err:  # the model did not build, or a section's clean-up failed: recorded as the verdict
        traceback.print_exc()
        result["crash"] = _describe(err)
        result["total_seconds"] = time.perf_counter() - deadline.start
        write(result, out)
    print((out / "gpu_check.md").read_text(), flush=True)
    print(f"[gpu_check] {verdict(result)}", flush=True)
    return result


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"


def cli(argv=None) -> int:
    """`main`, then the exit status: 0 passed, 1 failed (a crash prints FAILED and why, and exits 1)."""
    try:
        result = main(argv)
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001 (reported as the verdict, then the status says it)
        traceback.print_exc()
        print(f"FAILED: gpu_check crashed: {_describe(err)}", flush=True)
        return 1
    return 1 if failures(result) else 0


if __name__ == "__main__":
    sys.exit(cli())
