"""What a profiling run measures: `ProfileConfig`, the methods, the CSV columns, and the parsers of
lengths (``4k``, ``1M``) and method lists."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from focus_nemo.focus.config import AUTO, check_horizon, check_k_window

METHODS = ("focus", "focus_h", "full", "truncation")
"""``focus``: FOCUS with every Focus entry kept; ``focus_h``: FOCUS with the horizon of `ProfileConfig`
(Focus entries older than it leave the memory); ``full``: the base model's full KV cache;
``truncation``: the base model with its KV cache emptied at every window."""


PRIOR_EXPONENT = {"focus": 1.5, "focus_h": 1.0, "full": 2.0, "truncation": 1.0}
"""Growth of time with length that the budget rule assumes for each method; once two lengths are
measured it uses the larger of this and their measured slope."""


CSV_COLUMNS = ("method", "length", "status", "seconds", "cpu_seconds", "bases_per_s", "predicted_seconds",
               "peak_rss_growth_bytes", "peak_gpu_bytes", "peak_gpu_growth_bytes", "attention_state_bytes",
               "hyena_state_bytes", "focus_memory_entries_per_attention_block", "device", "dtype", "checkpoint",
               "k", "window", "chunk_size", "horizon", "local", "note")


HELDOUT = "chr20_heldout"


HELDOUT_REGION = "GRCh37 chr20:50,000,001-51,000,000"


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


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


def parse_max_lengths(text: str) -> dict[str, int]:
    """``method=length,...`` (lengths as `parse_length`): the longest length each named method runs at."""
    out = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        method, sep, length = item.partition("=")
        if not sep:
            raise ValueError(f"max-length {item!r}: expected method=length")
        out[parse_methods(method)[0]] = parse_length(length)
    return out


@dataclass(frozen=True)
class ProfileConfig:
    """What every run of a sweep shares.

    Attributes:
        checkpoint: ``embedded``, ``random:<preset>`` or a path (see `focus_nemo.loading.load_base_model`).
        adapter: adapter directory, ``embedded``, or None for the untrained Focus projections (time and
            memory do not depend on the adapter's values).
        k, window: Focus token every k bases; window W (also the truncation window).
        chunk_size: bases per `forward_chunk` call; None means one window.
        dtype, device: as `torch` names them (``float32``, ``bf16``; ``cpu``, ``cuda``, ``cuda:1``).
        random_sequence: random A/C/G/T (seeded) instead of the bundled chr20 held-out DNA.
        threads: `torch.set_num_threads` in each run (0 leaves torch's default).
        horizon: the Focus horizon of ``focus_h`` in bases (a multiple of `window`), or ``"auto"``: the
            base model's trained context (`focus_nemo.focus.config.default_horizon`). ``focus`` always
            keeps every Focus entry.
        local: the exact local band of ``focus`` and ``focus_h`` in windows (DESIGN D11); None keeps the
            adapter's (0 for the untrained projections).
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
    horizon: int | str = AUTO
    local: int | None = None

    def __post_init__(self) -> None:
        from focus_nemo.loading import parse_dtype

        check_k_window(self.k, self.window)
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size: must be >= 1, got {self.chunk_size}")
        parse_dtype(self.dtype)
        torch.device(self.device)
        if self.horizon is None:
            raise ValueError("horizon: focus_h needs a horizon (bases or 'auto'); 'focus' is the unbounded method")
        check_horizon(self.horizon, self.window, allow_auto=True)
        if self.local is not None and (isinstance(self.local, bool) or self.local < 0):
            raise ValueError(f"local: must be an integer >= 0, got {self.local!r}")
        if self.threads < 0:
            raise ValueError(f"threads: must be >= 0, got {self.threads}")

    @property
    def chunk(self) -> int:
        return self.chunk_size or self.window

    @property
    def is_cuda(self) -> bool:
        return torch.device(self.device).type == "cuda"


def add_arguments(parser) -> None:
    """The command-line options of ``recipes/profile_memory.py`` (argparse)."""
    from focus_nemo.cli import checked

    parser.add_argument("--lengths", type=checked(parse_lengths), default="1k,4k,16k,64k,256k,1M",
                        help="comma-separated lengths; k = 1,024, M = 1,048,576")
    parser.add_argument("--methods", type=checked(parse_methods), default=",".join(METHODS),
                        help="any of " + ",".join(METHODS))
    parser.add_argument("--max-length", type=checked(parse_max_lengths), default="",
                        help="per-method longest length, e.g. focus=2M,truncation=2M: longer lengths are not run for "
                             "that method")
    parser.add_argument("--checkpoint", default="embedded", help="embedded | random:<preset> | checkpoint path")
    parser.add_argument("--adapter", help="adapter directory or 'embedded'; default: untrained Focus projections "
                                          "(time and memory do not depend on the adapter's values)")
    parser.add_argument("--k", type=int, default=100, help="bases per Focus token")
    parser.add_argument("--window", type=int, default=1024, help="window W (FOCUS and truncation)")
    parser.add_argument("--horizon", type=checked(_horizon_arg), default=AUTO,
                        help="Focus horizon of the focus_h method in bases (a multiple of W, k/M suffixes) or 'auto' "
                             "(the base model's trained context)")
    parser.add_argument("--local", type=int, default=None,
                        help="exact local band of focus/focus_h in windows (default: the adapter's; 0 untrained)")
    parser.add_argument("--chunk-size", type=int, help="bases per forward_chunk call (default: W)")
    parser.add_argument("--dtype", default="float32", help="float32 | bf16")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:<n>")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="seconds per run; a length predicted to exceed it is skipped")
    parser.add_argument("--fit-min-length", type=checked(parse_length), default="16k",
                        help="fit exponents over lengths >= this (shorter ones are dominated by fixed costs)")
    parser.add_argument("--random", action="store_true", help="random A/C/G/T instead of the bundled chr20 DNA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--isolation", choices=("auto", "process", "none"), default="auto",
                        help="'process': each run in a fresh process (per-run peak RSS); 'none': one process, model "
                             "loaded once; 'auto': process on CPU, none on CUDA")
    parser.add_argument("--out", default="runs/profile", help="output folder")
    parser.add_argument("--name", default="profile", help="output file stem")


def config_from_args(a) -> ProfileConfig:
    """The `ProfileConfig` of parsed `add_arguments` options."""
    return ProfileConfig(checkpoint=a.checkpoint, adapter=a.adapter, k=a.k, window=a.window, chunk_size=a.chunk_size,
                         dtype=a.dtype, device=a.device, random_sequence=a.random, seed=a.seed, threads=a.threads,
                         horizon=a.horizon, local=a.local)


def _horizon_arg(text: str) -> int | str:
    """``auto`` or a number of bases with the length suffixes (``256k`` = 262,144)."""
    if str(text).strip().lower() == AUTO:
        return AUTO
    try:
        return parse_length(text)
    except ValueError:
        raise ValueError(f"horizon {text!r}: expected 'auto' or a number of bases (k, M suffixes)") from None
