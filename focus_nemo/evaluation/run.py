"""`evaluate(cfg)`: an evaluation run from its config to the files of its run directory."""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from focus_nemo.evaluation.config import EvalConfig, source_name
from focus_nemo.evaluation.metrics import SEQUENCE_COLUMNS, SUMMARY_METRICS
from focus_nemo.evaluation.plots import k_figure, profile_figure
from focus_nemo.evaluation.recall_run import evaluate_recall, recall_heldout
from focus_nemo.evaluation.report import (
    PAIRED_METRICS,
    headline_markdown,
    paired_differences,
    paired_markdown,
    profile_rows,
    summarize,
    summary_markdown,
    write_csv,
)
from focus_nemo.evaluation.sequences import PROFILE_METRICS, Profile, evaluate_sequence, sample_sequences

log = logging.getLogger(__name__)


def evaluate(cfg: EvalConfig) -> dict:
    """Run the evaluation and write its outputs into ``cfg.run_dir``.

    Files: ``config.json``; ``sequences.csv`` (one row per sequence, k and method, `SEQUENCE_COLUMNS`);
    ``summary.csv`` and ``summary.md`` (per source, record group, length, k and method: mean, median,
    std and 95% CI over sequences); ``paired.csv`` (FOCUS minus each baseline per sequence, the same
    statistics; also in ``summary.md``); ``headline.md`` (`headline_markdown`: the short table at
    k = 100 the README and the demo print); ``profile.csv`` (metric means per position-in-window bin
    and per window index, pooled over sequences); ``run_info.json`` (machine, versions, seconds); with
    ``plots``: ``shift_vs_position_in_window.png``, ``shift_vs_length.png`` and ``shift_vs_k.png``.

    With ``recall.enabled`` the recall probe runs too (``recall.only``: alone), writing ``recall.csv``,
    ``recall_summary.csv``, ``recall.md``, ``recall_info.json`` and ``recall.png`` (`evaluate_recall`).

    Returns:
        {"summary": fidelity summary rows ([] with ``recall.only``), "recall": recall summary rows ([] without
        recall), "run_dir": path, "seconds": wall time}.
    """
    from focus_nemo.cli import check_device
    from focus_nemo.loading import load_focus_model

    try:  # before the run directory exists
        check_device(cfg.device)
    except ValueError as e:
        raise ValueError(f"device: {e}") from None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    checkpoint = f"random:{cfg.model.preset}" if cfg.model.checkpoint == "random" else cfg.model.checkpoint
    fm = load_focus_model(checkpoint, cfg.adapter, dtype=cfg.model.dtype, device=cfg.device, config=cfg.model.config)
    window = cfg.window or fm.config.window
    cfg.check_window(window)
    horizon = cfg.focus_horizon(fm.base.config, window, fm.config.horizon)
    fm.config.horizon = horizon  # checked against the window in use (k and W are passed per forward)
    methods = cfg.methods_for(fm.config.local)
    recall_used = cfg.recall.methods_used(methods) if cfg.recall.enabled else []
    (run / "config.json").write_text(json.dumps({**asdict(cfg), "window_used": window, "horizon_used": horizon,
                                                "methods_used": methods, "recall_methods_used": recall_used},
                                               indent=2))
    heldout = recall_heldout(cfg) if cfg.recall.enabled else None  # errors before the long part
    sequences, summary = ([], []) if cfg.recall.only else _fidelity(fm, cfg, window, horizon, methods, run)
    recall = evaluate_recall(fm, cfg, window, methods, run, heldout) if cfg.recall.enabled else []
    seconds = round(time.time() - t0, 1)
    info = {"seconds": seconds, "sequences": len(sequences), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine(), "processor": cpu_name(),
            "python": platform.python_version(), "device": str(fm.focus_embedding.device)}
    (run / "run_info.json").write_text(json.dumps(info, indent=2))
    return {"summary": summary, "recall": recall, "run_dir": str(run), "seconds": seconds}


def _fidelity(fm, cfg: EvalConfig, window: int, horizon, methods: list[str], run: Path) -> tuple[list, list[dict]]:
    """The fidelity part of `evaluate`: its files in `run`; returns (the evaluated sequences, the summary)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    sequences = sample_sequences(cfg)
    log.info("evaluating %d sequences from %s at k=%s, W=%d, horizon %s", len(sequences),
             ", ".join(source_name(s) for s in cfg.sources), cfg.ks, window, horizon or "none")
    rows: list[dict] = []
    profiles: dict[tuple, Profile] = {}
    with Progress(TextColumn("[bold]evaluate[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn()) as progress:
        task = progress.add_task("evaluate", total=len(sequences), info="")
        for seq in sequences:
            seq_rows, seq_prof = evaluate_sequence(fm, seq, cfg.ks, window, methods, cfg.position_bins)
            rows += seq_rows
            for (k, method), prof in seq_prof.items():
                key = (seq.source, k, method)
                if key in profiles:
                    profiles[key].add(prof)
                else:
                    profiles[key] = prof
            progress.update(task, advance=1, info=seq.sequence_id)
    summary = summarize(rows)
    write_csv(run / "sequences.csv", rows, SEQUENCE_COLUMNS)
    summary_cols = ["source", "chrom_group", "length", "k", "method", "attention_budget", "sequences", "positions"]
    summary_cols += [f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "median", "std", "ci_low", "ci_high")]
    write_csv(run / "summary.csv", summary, summary_cols)
    paired = paired_differences(rows)
    write_csv(run / "paired.csv", paired, ["source", "length", "k", "comparison", "sequences"]
              + [f"{m}_{s}" for m in PAIRED_METRICS for s in ("mean", "median", "std", "ci_low", "ci_high")])
    (run / "summary.md").write_text(summary_markdown(summary) + "\n" + paired_markdown(paired))
    (run / "headline.md").write_text(headline_markdown(summary))
    prof_rows = profile_rows(profiles, window)
    write_csv(run / "profile.csv", prof_rows, ["source", "k", "method", "axis", "bin", "start", "end", "positions",
                                                *PROFILE_METRICS])
    if cfg.plots:
        profile_figure(profiles, "in_window", cfg.ks, window, run / "shift_vs_position_in_window.png")
        profile_figure(profiles, "by_window", cfg.ks, window, run / "shift_vs_length.png")
        k_figure(summary, cfg.ks, run / "shift_vs_k.png")
    return sequences, summary


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
