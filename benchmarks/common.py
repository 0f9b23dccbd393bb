"""Shared by the benchmark scripts: results files. Measurement (isolated runs, peak memory, timing,
power-law fits, the budget rule) lives in `focus_nemo.profiling`, which recipes/profile_memory.py uses too."""

from __future__ import annotations

import json
from pathlib import Path

from focus_nemo.profiling import (  # noqa: F401  (re-exported for the benchmark scripts)
    Timer,
    isolated,
    loglog_slope,
    machine,
    mib,
    peak_rss_bytes,
    predict_seconds,
    reset_peak_rss,
    rss_bytes,
)

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, payload: dict, markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown)
