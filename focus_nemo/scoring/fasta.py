"""Whole-record FASTA scoring (`score_fasta`): every record streamed through the FOCUS model into its
output files, finished records recorded in the manifest, resumable (see `focus_nemo.scoring`)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from focus_nemo.scoring import parallel, segments
from focus_nemo.scoring.model import model_settings
from focus_nemo.scoring.outputs import (
    FINISHED,
    check_stems,
    not_scored_row,
    parse_formats,
    progress_bar,
)
from focus_nemo.scoring.records import (
    Job,
    ScoreRun,
    check_something_scored,
    open_book,
    score_record,
    signals_raise,
    split_settings,
    stop_reason,
)
from focus_nemo.scoring.stream import DEFAULT_CHUNK, ScoringError
from focus_nemo.scoring.tally import UNIFORM_BITS, check_max_bits

logger = logging.getLogger(__name__)

DEFAULT_READ = 1 << 20
DEFAULT_OVERLAP = 1 << 15  # --split-overlap


def score_fasta(fasta, out_dir: str | os.PathLike, fm, *, records: Sequence[str] | None = None,
                k: int | None = None, window: int | None = None, formats: str | Sequence[str] = "npz",
                chunk_size: int = DEFAULT_CHUNK, read_size: int = DEFAULT_READ, resume: bool = False,
                progress: bool = True, info: dict | None = None, allow_empty: bool = False,
                max_bits_per_base: float = UNIFORM_BITS, workers: int = 1, model_factory: Callable | None = None,
                threads: int | None = None, split_records: int | None = None,
                split_overlap: int = DEFAULT_OVERLAP) -> ScoreRun:
    """Score every base of the records of a FASTA file by streaming them through FOCUS.

    Under an initialised `torch.distributed` every rank must call this with the same arguments and its
    shard of one tensor-parallel model; rank 0 writes (see the module docstring), the others compute
    and discard, and their `ScoreRun` has the same ``scored`` and ``skipped`` lists but no summary.

    Args:
        fasta: a path (plain, gzip or bgzip FASTA; see `focus_nemo.data.open_genome`) or an open Genome.
        out_dir: output directory (contents in the module docstring).
        fm: a FocusModel (see `load_scoring_model`) or, tensor parallel, a NemoFocusModel; None with
            ``workers > 1`` (the workers build their own).
        records: record names or ``chr`` aliases to score, in this order; None: every non-empty record.
        k, window: FOCUS ratio and window (default: the model's FocusConfig).
        formats: ``npz``, ``bedgraph``, ``both`` or a list.
        chunk_size: bases per model call. read_size: bases per FASTA read.
        resume: continue in a directory of an earlier run with the same settings and FASTA, skipping its
            finished records; without it the directory must not exist or be empty.
        progress: show a progress bar (rank 0 only); off a terminal, a log line a minute.
        info: extra entries recorded in the manifest (not compared on resume), e.g. checkpoint paths.
        allow_empty: accept a run whose output directory ends with no scored base at all (every record
            empty, only N/IUPAC, or a single base); by default that is an error, raised after
            ``summary.tsv`` is written with the reason for each record.
        max_bits_per_base: records (in ``summary.tsv``) and megabases (in the log) whose scored bases
            average more bits than this are flagged (default 2: a uniform guess over A/C/G/T).
        workers: processes that score records side by side on this machine (data parallel,
            `focus_nemo.scoring.dataparallel`); above 1 this process only coordinates (it writes the manifest
            and summary): `fm` may be None (the workers report their model's settings, which must agree) or
            a model whose settings the workers' must equal.
        model_factory: with ``workers > 1``, a picklable callable that builds the model in each worker
            (returns a model or ``(model, k, window)`` like `load_scoring_model`; `k` and `window` given here
            win over the returned ones).
        threads: with ``workers > 1``, CPU threads of all workers together, split evenly (at least one each;
            None: torch's default here).
        split_records: score records longer than this many bases (a multiple of the window) in segments
            that workers or groups score side by side (`focus_nemo.scoring.segments`); None: records whole.
        split_overlap: warm-up bases streamed before each segment after the first (scores discarded),
            rounded up to a multiple of the window (default `DEFAULT_OVERLAP`, 32,768).

    Raises:
        ScoringError: a bad option, unusable output directory, settings or FASTA differing from the
            directory's, a file that could not be written, or nothing scored (unless `allow_empty`).
        ScoringInterrupted: SIGTERM or SIGINT (the manifest and summary say which records are pending).
    """
    from focus_nemo.data import open_genome

    if fm is None and workers <= 1:
        raise ValueError("fm: a model is needed unless workers > 1 build their own (model_factory)")
    where = parallel.layout(fm) if fm is not None else parallel.Layout(*parallel.rank_world())
    rank, world = where.rank, where.world
    # every option is checked before anything is written
    if not isinstance(workers, int) or workers < 1:
        raise ScoringError(f"workers (--workers): must be >= 1, got {workers!r}")
    if workers > 1 and world > 1:
        raise ScoringError("workers (--workers): not with torchrun, whose processes are the workers already")
    if workers > 1 and model_factory is None:
        raise ValueError("workers > 1 needs model_factory, which builds the model in each worker")
    if read_size < 1:
        raise ValueError(f"read_size: must be >= 1, got {read_size}")
    if chunk_size < 1:
        raise ScoringError(f"chunk_size (--chunk-size): must be >= 1, got {chunk_size}")
    max_bits = check_max_bits(max_bits_per_base)
    formats = parse_formats(formats)
    genome = open_genome(fasta) if isinstance(fasta, (str, os.PathLike)) else fasta
    if fm is not None:
        k = fm.config.k if k is None else k
        window = fm.config.window if window is None else window
        settings = {**model_settings(fm, k, window), "formats": list(formats)}  # collective under TP
    else:  # the workers build the model and report its settings
        settings = None
    split_settings((split_records, split_overlap), window)  # window None (workers): checked again on opening
    requested = list(dict.fromkeys(genome.resolve(n) for n in (genome.names if records is None else records)))
    names = genome.records(records)  # empty records left out (FastaWarning) or an error, per the FASTA policy
    empty = {n: not_scored_row(n, "skipped", "empty record (a header with no sequence)")
             for n in requested if n not in set(names)}
    check_stems(names)
    out = Path(out_dir)
    run = ScoreRun(out)
    job = Job(genome, out, k, window, formats, chunk_size, read_size, max_bits, fasta,
              (split_records, split_overlap))
    if workers > 1 or where.groups > 1:
        from focus_nemo.scoring import dataparallel

        extra = {**(info or {}), "chunk_size": chunk_size}
        if fm is not None:
            extra["device"] = str(next(fm.parameters()).device)
        opened = (settings, resume, names, requested, empty, extra)
        if workers > 1:
            run = dataparallel.score_with_workers(job, run, opened, workers, model_factory, threads, progress)
            return check_something_scored(run, out, allow_empty, 0, 1)
        return dataparallel.score_in_groups(job, run, opened, fm, where, progress, allow_empty)
    with contextlib.ExitStack() as stack:
        book = None
        if rank == 0:
            try:
                extra = {**(info or {}), "chunk_size": chunk_size, "device": str(next(fm.parameters()).device)}
                if world > 1:
                    extra["tensor_parallel"] = world
                book, todo = open_book(stack, job, run, settings, resume, names, requested, empty, extra)
                todo = segments.plan(book, job, todo, run)
                plan = ("ok", todo, run.skipped)
            except Exception as e:
                parallel.from_rank0(("error", f"{type(e).__name__}: {e}"), world)
                raise
            parallel.from_rank0(plan, world)
        else:
            plan = parallel.from_rank0(None, world)
            if plan[0] == "error":
                raise ScoringError(f"rank 0 could not start scoring: {plan[1]}")
            todo, run.skipped = plan[1], list(plan[2])
        with progress_bar(progress and rank == 0) as bar, signals_raise(rank == 0):
            task = bar.add_task("scoring", total=sum(segments.length_of(genome, n) for n in todo))
            for item in todo:
                name = segments.name_of(item)
                bar.update(task, description=name)
                done = [0]

                def advance(n: int, done=done) -> None:
                    done[0] += n
                    bar.advance(task, n)

                if rank != 0:
                    segments.stream_item(job, fm, item)
                    run.scored += [name] if name not in run.scored else []
                    continue
                try:
                    entry = segments.score_segment(job, fm, item, advance) if isinstance(item, segments.Segment) \
                        else score_record(genome, name, out, fm, k, window, formats, chunk_size, read_size, advance,
                                          max_bits)
                except BaseException as e:
                    book.stopped(name, stop_reason(e, done[0], segments.length_of(genome, item)))
                    raise
                segments.finish(book, run, item, entry)
        if rank == 0:
            run.summary = book.complete()
    return check_something_scored(run, out, allow_empty, rank, world)


def run_report(run: ScoreRun) -> list[str]:
    """Lines describing a finished run: one per record of its summary, then the totals."""
    lines = []
    for row in run.summary:
        if row["status"] not in FINISHED:
            lines.append(f"{row['record']}\t{row['length']:,} bases\t{row['status']}: {row.get('note')}")
            continue
        if not row["scored"]:
            why = row.get("note") or "no scored base"
            lines.append(f"{row['record']}\t{row['length']:,} bases\tnot scored: {why}")
            continue
        flag = f"\tFLAGGED: {row['note']}" if row.get("flag") else ""
        lines.append(f"{row['record']}\t{row['length']:,} bases\t{row['scored']:,} scored\t"
                     f"{row['bits_per_base'] or float('nan'):.4f} bits/base\t{row['bases_per_s'] or 0:,.0f} bases/s"
                     f"{flag}")
    lines.append(f"{len(run.scored)} record(s) scored, {len(run.skipped)} already finished; results in {run.out_dir}")
    return lines


def add_score_fasta_arguments(p) -> None:
    """The options of ``recipes/score_fasta.py`` (and the model options, `add_model_arguments`)."""
    from focus_nemo import cli
    from focus_nemo.scoring.model import add_model_arguments

    p.add_argument("--fasta", required=True, help="FASTA file (plain, gzip or bgzip), directory or glob")
    p.add_argument("--out", required=True, help="output directory (must be new or empty unless --resume)")
    p.add_argument("--records", nargs="+", help="records to score (chr1 and 1 name the same record); default all")
    add_model_arguments(p)
    cli.add_device_argument(p, "cpu, cuda, cuda:N (default: cuda if available; with --tensor-parallel: rank's GPU)")
    p.add_argument("--tensor-parallel", type=int, metavar="N", help="split the model over N processes (torchrun)")
    p.add_argument("--workers", type=cli.at_least(1), default=1, metavar="N",
                   help="score records in N processes on this machine (data parallel; --threads is their total)")
    p.add_argument("--split-records", type=cli.at_least(1), metavar="SIZE",
                   help="score records longer than SIZE bases (a multiple of the window) in segments side by side")
    p.add_argument("--split-overlap", type=cli.at_least(0), default=DEFAULT_OVERLAP, metavar="BASES",
                   help=f"warm-up bases before each segment, scores discarded (default {DEFAULT_OVERLAP})")
    p.add_argument("--format", default="npz", choices=["npz", "bedgraph", "both"])
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--allow-empty", action="store_true", help="exit 0 even when no base at all is scored")
    p.add_argument("--max-bits-per-base", type=cli.positive_number, default=2.0, help="flag records above it")
