"""Time and memory against sequence length: FOCUS streaming (with or without a horizon), the full KV cache,
fixed-window truncation.

Each method streams one sequence [1, L] chunk by chunk under `torch.no_grad`:

* ``focus``: `FocusModel.stream`. Hyena state carried exactly; each attention block keeps the Focus
  keys/values of completed windows plus the current window's bases.
* ``focus_h``: ``focus`` with a Focus horizon (`ProfileConfig.horizon`): entries older than it leave
  the memory, at most horizon/W x ceil(W/k) of them per attention block.
* ``full``: the base model's `forward_chunk` with its full attention KV cache (exact; attention work
  grows as L^2, the cache as L).
* ``truncation``: the base model with its attention KV cache emptied at every multiple of W (Hyena
  state still carried): FOCUS without its memory.

A run (`measure`) records wall time (CUDA synchronised), peak resident-memory growth (Linux VmHWM
after a reset; per run when each run has its own process, see `isolated`), on CUDA the growth of
`torch.cuda.max_memory_allocated`, and the exact tensor bytes of the attention and Hyena state when
the sequence ends. `profile` sweeps methods x lengths under a time budget, `fit_power_law` fits
exponents on log-log, and `write_outputs` writes CSV, JSON, a markdown table and a log-log plot.

Modules: ``config`` (what is measured), ``resources`` (timers, resident memory, process isolation),
``runs`` (one run, the sweep), ``fits`` (power laws) and ``report`` (results and their files); this
package re-exports their public names.
"""

from focus_nemo.profiling.config import (
    CSV_COLUMNS,
    HELDOUT,
    HELDOUT_REGION,
    METHODS,
    PRIOR_EXPONENT,
    ProfileConfig,
    add_arguments,
    config_from_args,
    parse_length,
    parse_lengths,
    parse_max_lengths,
    parse_methods,
)
from focus_nemo.profiling.fits import PowerLaw, fit_power_law, loglog_slope
from focus_nemo.profiling.report import (
    COLORS,
    ProfileResult,
    fit_lines,
    markdown_table,
    memory_column,
    method_label,
    plot,
    write_outputs,
)
from focus_nemo.profiling.resources import Timer, isolated, machine, mib, peak_rss_bytes, reset_peak_rss, rss_bytes
from focus_nemo.profiling.runs import (
    describe_sequence,
    focus_state,
    format_row,
    load_model,
    measure,
    predict_seconds,
    profile,
    resolve_horizon,
    sequence_tokens,
    stream_method,
)

__all__ = [
    "COLORS", "CSV_COLUMNS", "HELDOUT", "HELDOUT_REGION", "METHODS", "PRIOR_EXPONENT", "PowerLaw", "ProfileConfig",
    "ProfileResult", "Timer", "add_arguments", "config_from_args", "describe_sequence", "fit_lines",
    "fit_power_law", "focus_state", "format_row", "isolated", "load_model", "loglog_slope", "machine",
    "markdown_table", "measure", "memory_column", "method_label", "mib", "parse_length", "parse_lengths",
    "parse_max_lengths", "parse_methods", "peak_rss_bytes", "plot", "predict_seconds", "profile", "reset_peak_rss",
    "resolve_horizon", "rss_bytes", "sequence_tokens", "stream_method", "write_outputs",
]
