"""The runs: the model and the held-out sequence, `stream_method` (one method streamed chunk by chunk),
`measure` (one method at one length), and `profile`, the sweep of methods x lengths under a time budget."""

from __future__ import annotations

import dataclasses
import gc
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache

import torch

from focus_nemo.profiling.config import (
    HELDOUT,
    HELDOUT_REGION,
    METHODS,
    PRIOR_EXPONENT,
    ProfileConfig,
    parse_methods,
)
from focus_nemo.profiling.resources import Timer, isolated, mib

_loaded: dict = {}


def load_model(cfg: ProfileConfig):
    """The FocusModel of `cfg` (its ``.base`` serves ``full`` and ``truncation``); the last one is cached."""
    from focus_nemo.focus import FocusConfig
    from focus_nemo.loading import load_focus_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    key = (cfg.checkpoint, cfg.adapter, cfg.k, cfg.window, cfg.dtype, cfg.device, cfg.local)
    if key not in _loaded:
        _loaded.clear()
        gc.collect()
        torch.manual_seed(cfg.seed)
        fm = load_focus_model(cfg.checkpoint, cfg.adapter, dtype=cfg.dtype, device=cfg.device,
                              focus=FocusConfig(k=cfg.k, window=cfg.window))
        if cfg.local is not None:  # over the adapter's (or the untrained default 0), checked
            fm.config = dataclasses.replace(fm.config, local=cfg.local)
        _loaded[key] = fm
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


def _pieces(length: int, chunk: int, window: int | None = None) -> Iterator[tuple[int, int]]:
    """[start, end) of consecutive chunks, each also cut at multiples of `window` when given."""
    for start in range(0, length, chunk):
        end = min(start + chunk, length)
        cuts = range((start // window + 1) * window, end, window) if window else ()
        bounds = [start, *cuts, end]
        yield from zip(bounds[:-1], bounds[1:], strict=True)


def resolve_horizon(fm, cfg: ProfileConfig) -> int:
    """The ``focus_h`` horizon of `cfg` in bases, ``"auto"`` resolved against the loaded base model."""
    from focus_nemo.focus.config import horizon_for

    return horizon_for(cfg.horizon, fm.base.config, cfg.window)


def focus_state(fm, batch: int, k: int, window: int, horizon: int | None):
    """`FocusModel.init_state` with the given horizon (None: every Focus entry kept), whatever the
    model's own config says; the model's config is left as it was."""
    own = fm.config
    fm.config = dataclasses.replace(own, horizon=horizon)
    try:
        return fm.init_state(batch, k, window)
    finally:
        fm.config = own


@torch.no_grad()
def stream_method(fm, method: str, tokens: torch.Tensor, chunk: int, k: int, window: int,
                  horizon: int | None = None) -> dict:
    """Stream `tokens` [B, L] through one method; returns the state's exact tensor bytes at the end.

    `tokens` may stay on the host: FOCUS moves each chunk to the model's device itself (its token
    check then runs on the host, no device synchronisation per chunk); the base-model methods get
    each chunk moved here. `horizon` (bases) is the ``focus_h`` method's and required by it.

    Keys: ``attention_state_bytes`` (FOCUS: Focus memory, second-level entries, the exact local band
    and the current window; full/truncation: live KV cache entries), ``hyena_state_bytes``,
    ``focus_memory_entries_per_attention_block`` (FOCUS only).
    """
    if method in ("focus", "focus_h"):
        if method == "focus_h" and horizon is None:
            raise ValueError("stream_method: focus_h needs a horizon (bases)")
        state = focus_state(fm, tokens.shape[0], k, window, horizon if method == "focus_h" else None)
        for _ in fm.stream(tokens, chunk, state=state):
            pass
        nb = state.nbytes()
        attention = nb["focus_memory"] + nb["coarse_memory"] + nb["band"] + nb["window"]
        return {"attention_state_bytes": attention, "hyena_state_bytes": nb["hyena"],
                "focus_memory_entries_per_attention_block": max(state.memory_entries().values(), default=0)}
    if method not in METHODS:
        raise ValueError(f"method {method!r}: choose from {', '.join(METHODS)}")
    from focus_nemo.evo2 import KVCache

    truncate = method == "truncation"
    device = fm.base.embedding.weight.device
    state = fm.base.init_state(tokens.shape[0])
    for s, e in _pieces(tokens.shape[1], chunk, window if truncate else None):
        if truncate and s % window == 0:
            state.blocks = [KVCache() if isinstance(b, KVCache) else b for b in state.blocks]
        _, state = fm.base.forward_chunk(tokens[:, s:e].to(device), state)
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
        horizon = resolve_horizon(fm, cfg) if method == "focus_h" else None
        if horizon is not None:
            row["horizon"] = horizon
        if method in ("focus", "focus_h"):
            row["local"] = fm.config.local
        tokens = sequence_tokens(length, cfg.random_sequence, cfg.seed)  # on the host: see stream_method
        stream_method(fm, method, tokens[:, : min(length, 2 * cfg.window)], cfg.chunk, cfg.k, cfg.window, horizon)
        gc.collect()
        with Timer(device) as t:
            sizes = stream_method(fm, method, tokens, cfg.chunk, cfg.k, cfg.window, horizon)
    except Exception as e:
        return {**row, "status": "error", "note": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    finally:
        if cfg.is_cuda and torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {**row, "status": "ok", "seconds": t.seconds, "cpu_seconds": t.cpu_seconds,
            "bases_per_s": length / t.seconds,
            "peak_rss_growth_bytes": t.peak_extra_bytes, "peak_gpu_bytes": t.gpu_peak_bytes,
            "peak_gpu_growth_bytes": t.gpu_peak_extra_bytes, **sizes,
            "note": "" if t.rss_reset else "peak RSS not resettable here: peak since process start"}


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
            log: Callable[[str], None] | None = None, max_lengths: dict[str, int] | None = None) -> list[dict]:
    """Measure every method at every length (ascending); returns the rows in that order.

    A length whose predicted time (`predict_seconds` with the method's `PRIOR_EXPONENT`) exceeds
    `budget` seconds is not run: its row has ``status: skipped`` and ``predicted_seconds``. After a
    failed run the method's longer lengths are skipped. With `isolate`, each run has its own process.
    `max_lengths` (method -> length) leaves out a method's lengths above its limit (no row).
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
        limit = (max_lengths or {}).get(method)
        for length in lengths:
            if limit is not None and length > limit:
                continue
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
    cpu = f" (CPU {row['cpu_seconds']:.2f} s)" if row.get("cpu_seconds") is not None else ""
    return (f"{head}  {row['seconds']:9.2f} s{cpu}  {row['bases_per_s']:>10,.0f} bases/s  "
            f"RSS +{mib(row['peak_rss_growth_bytes'])} MiB{gpu}  "
            f"attention state {mib(row['attention_state_bytes'])} MiB  Hyena {mib(row['hyena_state_bytes'])} MiB")
