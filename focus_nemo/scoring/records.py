"""What one scoring run shares between one process, worker processes and torchrun groups: the run's
record of files (`ScoreRun`), its job (`Job`), the manifest and summary book (`RunBook`, one writer), the
scoring of one record into its files (`score_record`), signals that stop a run, and the end-of-run check."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from focus_nemo.durable import publish, seal, staged
from focus_nemo.scoring import parallel
from focus_nemo.scoring.outputs import (
    FLAG,
    MANIFEST,
    SUFFIX,
    SUMMARY,
    TEMP_FILE,
    BedGraphWriter,
    NpzWriter,
    check_stems,
    fasta_identity,
    finished,
    input_files,
    locked,
    prepare_out_dir,
    safe_stem,
    write_manifest,
    write_summary,
    writing,
)
from focus_nemo.scoring.stream import SCORE_DEFINITION, UNITS, LoglikStream, ScoringError
from focus_nemo.scoring.tally import RecordTally

logger = logging.getLogger(__name__)
class ScoringInterrupted(ScoringError):
    """SIGTERM or SIGINT arrived while records were being scored (the run is left resumable)."""


@dataclass
class ScoreRun:
    """What `score_fasta` did: records scored now, records skipped as already finished, summary rows."""

    out_dir: Path
    scored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)


def check_something_scored(run: ScoreRun, out: Path, allow_empty: bool, rank: int, world: int, group=None
                            ) -> ScoreRun:
    """Raise ScoringError on every rank when the finished run (rank 0's summary) scored no base at all."""
    nothing = None
    if rank == 0 and not allow_empty and not any(r["scored"] for r in run.summary):
        why = "; ".join(f"{r['record']}: {r.get('note') or 'nothing scored'}" for r in run.summary)
        nothing = (f"{out}: nothing was scored ({why or 'no records'}); the reasons are in {SUMMARY}. "
                   f"Pass allow_empty=True (--allow-empty) to accept a run that scores nothing")
    nothing = parallel.from_rank0(nothing, world) if group is None else parallel.from_rank0(nothing, world, group)
    if nothing is not None:
        raise ScoringError(nothing)
    return run


@contextlib.contextmanager
def signals_raise(enabled: bool):
    """While scoring, SIGTERM (a scheduler's stop) and SIGINT raise `ScoringInterrupted`, so the manifest and
    summary record where the run stopped before the process ends (main thread only)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise ScoringInterrupted(f"scoring stopped by {signal.Signals(signum).name}; the run is incomplete "
                                 f"({SUMMARY} lists the pending records): rerun with --resume to finish it")

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_reason(error: BaseException, done: int, n: int) -> dict:
    """Why a record did not finish, as the manifest records it: ``pending`` when the run was interrupted
    (SIGTERM, SIGINT), else ``failed`` with the error."""
    if isinstance(error, (ScoringInterrupted, KeyboardInterrupt)):
        return {"status": "pending", "note": f"interrupted after {done:,} of {n:,} bases"}
    return {"status": "failed", "note": f"{type(error).__name__}: {error}"}


@dataclass
class Job:
    """What every process that scores records of one run needs besides the model."""

    genome: object
    out: Path
    k: int
    window: int
    formats: tuple[str, ...]
    chunk_size: int
    read_size: int
    max_bits: float
    source: object = None  # what `score_fasta` was given: a path that worker processes open again, or a Genome
    split: tuple | None = None  # (split_records, split_overlap) as given; `split_settings` checks them


def split_settings(split: tuple | None, window: int | None) -> dict:
    """The manifest settings of splitting long records into segments (`focus_nemo.scoring.segments`):
    ``split_records`` (segment size, a multiple of the window W) and ``split_overlap`` (warm-up bases before
    each segment after the first, rounded up to a multiple of W); empty when records are not split."""
    size, overlap = split if split is not None else (None, 0)
    if not isinstance(overlap, int) or overlap < 0:
        raise ScoringError(f"split_overlap (--split-overlap): must be an integer >= 0 bases, got {overlap!r}")
    if size is None:
        return {}
    if not isinstance(size, int) or size < 1 or (window is not None and size % window):
        raise ScoringError(f"split_records (--split-records): must be a positive multiple of the window "
                           f"W={window}, got {size!r}")
    if window is None:
        return {}
    return {"split_records": size, "split_overlap": -(-overlap // window) * window}


class RunBook:
    """The run's ``manifest.json`` and ``summary.tsv`` and their only writer: one per run, in the process that
    opened the output directory (the single process, the coordinator of ``workers``, global rank 0 under
    torchrun). Records finished anywhere are entered here (`finished`, `stopped`) and both files rewritten;
    another process cannot write through it. Thread-safe."""

    def __init__(self, out: Path, manifest: dict, max_bits: float) -> None:
        self.out, self.manifest, self.max_bits = out, manifest, max_bits
        self.pid = os.getpid()
        self.lock = threading.RLock()

    def write(self) -> list[dict]:
        """Rewrite the manifest (records in the order requested) and the summary; returns the summary rows."""
        if os.getpid() != self.pid:
            raise ScoringError(f"{self.out}: {MANIFEST} and {SUMMARY} are written by the process that opened the "
                               f"run (pid {self.pid}) alone, not by pid {os.getpid()}")
        with self.lock:
            m = self.manifest
            order = {n: i for i, n in enumerate(m.get("requested", []))}
            m["records"] = dict(sorted(m["records"].items(), key=lambda kv: order.get(kv[0], len(order))))
            write_manifest(self.out, m)
            return write_summary(self.out, m, self.max_bits)

    def finished(self, name: str, entry: dict) -> None:
        with self.lock:
            self.manifest["records"][name] = entry
            self.manifest.get("unfinished", {}).pop(name, None)
            self.write()

    def stopped(self, name: str, why: dict) -> None:
        """Record why `name` did not finish (`stop_reason`); best effort: on a full disk this write may fail
        too, and the files already say the run is incomplete."""
        with self.lock:
            kept = len(self.manifest.get("segments", {}).get(name, {}))
            if kept:  # a record scored in segments (`focus_nemo.scoring.segments`)
                why = {**why, "note": f"{why['note']}; {kept} segment(s) scored, kept for --resume"}
            self.manifest.setdefault("unfinished", {})[name] = why
            try:
                self.write()
            except Exception as e:  # noqa: BLE001 - the original error is the one to report
                logger.warning("%s: could not record why %s did not finish (%s)", self.out, name, e)

    def complete(self) -> list[dict]:
        """Mark the run complete; returns the summary rows (flagged records logged)."""
        with self.lock:
            self.manifest["complete"] = True
            rows = self.write()
        flagged = [r["record"] for r in rows if r.get("flag") == FLAG]
        if flagged:
            logger.warning("%s: %d record(s) average more than %g bits/base (flag %s in %s): %s", self.out,
                           len(flagged), self.max_bits, FLAG, SUMMARY, ", ".join(flagged))
        return rows


def open_book(stack: contextlib.ExitStack, job: Job, run: ScoreRun, settings: dict, resume: bool,
              names: list[str], requested: list[str], empty: dict, info: dict) -> tuple[RunBook, list[str]]:
    """Open (and lock until `stack` closes) the output directory, write its manifest and summary saying
    which records are pending; returns the run's `RunBook` and the records still to score."""
    settings = {**settings, **split_settings(job.split, settings["window"])}
    manifest, todo = open_run(stack, job.out, settings, resume, names, requested, job.formats, job.genome,
                               job.read_size, run)
    manifest["not_scored"] = empty
    earlier = manifest.get("info", {})
    manifest["info"] = {**earlier, **info, "max_bits_per_base": job.max_bits}
    for key in ("tensor_parallel", "data_parallel"):  # a run's parallel sizes, once recorded, stay visible
        if key in earlier and key not in info:
            manifest["info"][key] = 1
    book = RunBook(job.out, manifest, job.max_bits)
    book.job = job
    # from here on the directory says which records are pending until each one is finished
    book.write()
    return book, todo


def open_run(stack: contextlib.ExitStack, out: Path, settings: dict, resume: bool, names: list[str],
              requested: list[str], formats: Sequence[str], genome, read_size: int, run: ScoreRun
              ) -> tuple[dict, list[str]]:
    """Create or reopen and lock (until `stack` closes) the output directory; returns its manifest and
    the records still to score (finished ones are added to ``run.skipped``)."""
    if out.exists() and not out.is_dir():
        raise ScoringError(f"{out}: output path exists and is not a directory")
    held = [p for p in input_files(genome) if p.exists() and out.exists() and p.resolve().parent == out.resolve()]
    if held:
        raise ScoringError(f"{out}: the output directory holds the input {held[0]}; write the scores to another "
                           f"directory (--out)")
    if not resume and out.is_dir() and any(out.iterdir()):
        raise ScoringError(f"{out}: output directory exists and is not empty; pass resume=True (--resume) "
                           f"to continue a run there, or choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    stack.enter_context(locked(out))
    manifest = prepare_out_dir(out, settings, resume, fasta_identity(genome))
    check_stems(names, {entry["stem"]: other for other, entry in manifest["records"].items()})
    if resume:
        for leftover in (p for p in out.iterdir() if TEMP_FILE.match(p.name)):
            logger.info("%s: removing %s left by an interrupted run", out, leftover.name)
            leftover.unlink()
    todo = []
    for name in names:
        entry = manifest["records"].get(name)
        stats = None if entry is None else finished(out, entry, formats, genome, name, read_size)
        if stats is not None:  # figures from the checksummed outputs, never the manifest's own
            entry["stats"] = stats
            run.skipped.append(name)
        else:
            manifest["records"].pop(name, None)
            todo.append(name)
    if run.skipped:
        logger.info("%s: %d record(s) already finished, skipped: %s", out, len(run.skipped),
                    ", ".join(run.skipped))
    earlier = [n for n in manifest.get("requested", list(manifest["records"])) if n in manifest["records"]]
    manifest["requested"] = requested + [n for n in earlier if n not in requested]
    manifest["complete"], manifest["unfinished"] = False, {}
    return manifest, todo


def record_scores(genome, name: str, fm, k: int, window: int, chunk_size: int, read_size: int,
                   advance: Callable[[int], None]):
    """(start, bases, scores) of each read of record `name`, streamed from its first base."""
    n = genome.length(name)
    stream = LoglikStream(fm, k, window, chunk_size)
    for s in range(0, n, read_size):
        raw = genome.fetch(name, s, min(n, s + read_size))
        yield s, raw, stream.feed(raw, advance)


def score_record(genome, name: str, out: Path, fm, k: int, window: int, formats: Sequence[str],
                  chunk_size: int, read_size: int, advance: Callable[[int], None], max_bits: float,
                  scores=None, seconds: float | None = None) -> dict:
    """Stream one record into temporary output files, rename them into place, return its manifest entry.
    `scores`: (start, bases, scores) of each read already scored (segments assembled; `seconds` their time)
    instead of the model's."""
    t0 = time.perf_counter()
    n = genome.length(name)
    stem = safe_stem(name)
    finals = {fmt: out / (stem + SUFFIX[fmt]) for fmt in formats}
    with contextlib.ExitStack() as stack:
        tmps = {}
        for fmt, p in finals.items():
            with writing(p, out):
                tmps[fmt] = stack.enter_context(staged(p))
        writers = {}
        try:
            for fmt, tmp in tmps.items():
                with writing(finals[fmt], out):
                    writers[fmt] = NpzWriter(tmp, n) if fmt == "npz" else BedGraphWriter(tmp, name)
            tally = RecordTally(name, n, max_bits)
            if scores is None:
                scores = record_scores(genome, name, fm, k, window, chunk_size, read_size, advance)
            for s, raw, ll in scores:
                tally.add(raw, ll)
                for fmt, w in writers.items():
                    with writing(finals[fmt], out):
                        w.write(s, ll)
            stats = tally.stats(time.perf_counter() - t0 if seconds is None else seconds)
            meta = {"record": name, "length": n, "units": UNITS, "score": SCORE_DEFINITION, "k": k,
                    "window": window, "first_base_acgt": tally.first_acgt,
                    **{c: stats[c] for c in ("scored", "n_bases", "iupac_bases", "soft_masked")}}
            for fmt, w in writers.items():
                with writing(finals[fmt], out):
                    w.close(meta)
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        files = {}
        for fmt, tmp in tmps.items():
            with writing(finals[fmt], out):
                files[fmt] = {"file": finals[fmt].name, "sha256": seal(tmp)}
        for fmt, tmp in tmps.items():
            with writing(finals[fmt], out):
                publish(tmp, finals[fmt])
    return {"stem": stem, "length": n, "sequence_sha256": tally.seq_hash.hexdigest(), "read_size": read_size,
            "files": files, "stats": stats}
