"""The recall section of an evaluation run (`EvalConfig.recall`): the repeat-copy probe
(`focus_nemo.evaluation.recall`) for full context and every evaluated method, on the same trials, with each
method's logits computed by `method_logits` (the code the fidelity evaluation uses)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from focus_nemo.evaluation.config import EvalConfig, source_name
from focus_nemo.evaluation.recall import (
    RECALL_COLUMNS,
    RECALL_SUMMARY_COLUMNS,
    RecallMethod,
    recall_probe_methods,
    recall_summary,
    recall_summary_markdown,
    write_recall_csv,
)
from focus_nemo.evaluation.sequences import attention_budget, method_logits

log = logging.getLogger(__name__)
K_FREE = ("full", "truncation")  # methods that do not depend on k


def recall_heldout(cfg: EvalConfig) -> tuple[str, np.ndarray]:
    """(description, bases) of the region the trials are drawn from: the longest record or region of
    ``recall.source`` (default: the first source), checked to be long enough for every distance."""
    from focus_nemo.data import open_genome
    from focus_nemo.data.assets import resolve_fasta
    from focus_nemo.data.regions import parse_region

    rc = cfg.recall
    src = next(s for s in cfg.sources if rc.source is None or source_name(s) == rc.source)
    name = source_name(src)
    path = resolve_fasta(src.fasta)
    if not src.fasta.startswith("bundled:") and not Path(path).exists():
        raise FileNotFoundError(f"EvalConfig.sources[{name}].fasta: {path} does not exist")
    genome = open_genome(path)
    spans = []
    for text in src.regions or genome.names:
        r = parse_region(text, genome)
        spans.append((r, 0, genome.length(r)) if isinstance(r, str) else (r.chrom, r.start, r.end))
    chrom, start, end = max(spans, key=lambda s: s[2] - s[1])
    need = 2 * (2 * rc.segment + max(rc.distances))
    if end - start < need:
        raise ValueError(f"EvalConfig.recall.distances: distance {max(rc.distances)} needs a held-out region of at "
                         f"least {need} bases; the longest of source {name!r} ({chrom}:{start + 1}-{end}) has "
                         f"{end - start}")
    return f"{name} {chrom}:{start + 1}-{end}", genome.fetch(chrom, start, end)


def recall_methods(fm, cfg: EvalConfig, window: int, evaluation_methods: list[str]) -> list[RecallMethod]:
    """Full context (up to ``recall.full_max_len``), then every method at every ratio of ``recall.ks``."""
    rc = cfg.recall
    ks = list(rc.ks or cfg.ks)
    h = fm.config.horizon_windows(window)
    dev = fm.focus_embedding.device
    out = []
    for name in rc.methods_used(evaluation_methods):
        for k in ([None] if name in K_FREE else ks):
            kk = ks[0] if k is None else k

            def logits_fn(x, name=name, kk=kk):
                return method_logits(fm, x.to(dev), name, kk, window)

            def budget(length, name=name, kk=kk):
                return attention_budget(name, length, kk, window, h)

            out.append(RecallMethod(name, k, logits_fn, rc.full_max_len if name == "full" else None, budget))
    return out


def evaluate_recall(fm, cfg: EvalConfig, window: int, evaluation_methods: list[str], run: Path,
                    heldout: tuple[str, np.ndarray] | None = None) -> list[dict]:
    """Run the probe and write ``recall.csv`` (one row per method, k, distance, trial, copy and control),
    ``recall_summary.csv`` and ``recall.md`` (copy advantage with 95% bootstrap CIs and the fraction of full
    context's retained, `recall_summary`), ``recall_info.json`` and, with ``plots``, ``recall.png``.

    Returns:
        The summary rows.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from focus_nemo.evaluation.plots import recall_figure

    rc = cfg.recall
    t0 = time.time()
    where, seq = heldout or recall_heldout(cfg)
    methods = recall_methods(fm, cfg, window, evaluation_methods)
    seed = cfg.seed if rc.seed is None else rc.seed
    log.info("recall: %d trials at d = %s from %s, methods %s", rc.n_trials, rc.distances, where,
             ", ".join(m.label for m in methods))
    with Progress(TextColumn("[bold]recall[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("{task.fields[info]}"), TimeRemainingColumn()) as progress:
        task = progress.add_task("recall", total=len(rc.distances) * rc.n_trials, info="")
        rows = recall_probe_methods(methods, seq, rc.distances, rc.n_trials, seed, rc.variants, rc.controls,
                                    rc.segment, on_trial=lambda d, t: progress.update(task, advance=1, info=f"d={d}"))
    summary = recall_summary(rows, [(m.name, m.k, m.max_len) for m in methods], rc.distances, rc.variants,
                             rc.controls, rc.segment, rc.min_reference)
    write_recall_csv(run / "recall.csv", rows, RECALL_COLUMNS)
    write_recall_csv(run / "recall_summary.csv", summary, RECALL_SUMMARY_COLUMNS)
    level2 = fm.config.level2
    head = [f"# Recall: repeat-copy probe, {rc.n_trials} trials per distance (the same trials for every method)",
            "",
            f"Held-out region: {where}; segment {rc.segment} bases; seed {seed}; W = {window}; "
            f"FOCUS horizon {fm.config.horizon or 'none'}, second level {level2 or 'none'}; full context on windows "
            f"up to {rc.full_max_len or 'any length'} bases.",
            "",
            "Copy advantage = CE(control) - CE(repeat) over the final copy of the segment, nats/base. Retained = "
            "a method's copy advantage / full context's on the same trials (at the largest distance where full "
            f"context runs, where it does not), where full context's is at least {rc.min_reference} nats/base.",
            ""]
    body = "\n".join(recall_summary_markdown(summary, c) for c in rc.controls)
    (run / "recall.md").write_text("\n".join(head) + "\n" + body)
    if cfg.plots:
        recall_figure(summary, run / "recall.png", control=rc.controls[0])
    seconds = round(time.time() - t0, 1)
    (run / "recall_info.json").write_text(json.dumps(
        {"seconds": seconds, "heldout": where, "seed": seed, "window": window, "horizon": fm.config.horizon,
         "level2": level2, "methods": [m.label for m in methods], "trials": rc.n_trials,
         "min_reference": rc.min_reference,
         "distances": list(rc.distances)}, indent=2))
    return summary
