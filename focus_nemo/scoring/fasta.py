"""Whole-record FASTA scoring (`score_fasta`): every record streamed through the FOCUS model into its
output files, finished records recorded in the manifest, resumable (see `focus_nemo.scoring`)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from focus_nemo.durable import publish, seal, staged
from focus_nemo.scoring import parallel
from focus_nemo.scoring.model import model_settings
from focus_nemo.scoring.outputs import (
    SUFFIX,
    SUMMARY,
    TEMP_FILE,
    BedGraphWriter,
    NpzWriter,
    finished,
    locked,
    parse_formats,
    prepare_out_dir,
    progress_bar,
    safe_stem,
    write_manifest,
    write_summary,
)
from focus_nemo.scoring.stream import (
    DEFAULT_CHUNK,
    IS_ACGT,
    IS_LOWER,
    IS_N,
    SCORE_DEFINITION,
    UNITS,
    UPPER,
    LoglikStream,
    ScoringError,
)

logger = logging.getLogger(__name__)

DEFAULT_READ = 1 << 20


@dataclass
class ScoreRun:
    """What `score_fasta` did: records scored now, records skipped as already finished, summary rows."""

    out_dir: Path
    scored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)


def score_fasta(fasta, out_dir: str | os.PathLike, fm, *, records: Sequence[str] | None = None,
                k: int | None = None, window: int | None = None, formats: str | Sequence[str] = "npz",
                chunk_size: int = DEFAULT_CHUNK, read_size: int = DEFAULT_READ, resume: bool = False,
                progress: bool = True, info: dict | None = None, allow_empty: bool = False) -> ScoreRun:
    """Score every base of the records of a FASTA file by streaming them through FOCUS.

    Under an initialised `torch.distributed` every rank must call this with the same arguments and its
    shard of one tensor-parallel model; rank 0 writes (see the module docstring), the others compute
    and discard, and their `ScoreRun` has the same ``scored`` and ``skipped`` lists but no summary.

    Args:
        fasta: a path (plain, gzip or bgzip FASTA; see `focus_nemo.data.open_genome`) or an open Genome.
        out_dir: output directory (contents in the module docstring).
        fm: a FocusModel (see `load_scoring_model`) or, tensor parallel, a NemoFocusModel.
        records: record names or ``chr`` aliases to score, in this order; None: every non-empty record.
        k, window: FOCUS ratio and window (default: the model's FocusConfig).
        formats: ``npz``, ``bedgraph``, ``both`` or a list.
        chunk_size: bases per model call. read_size: bases per FASTA read.
        resume: continue in a directory of an earlier run with the same settings, skipping its finished
            records; without it the directory must not exist or be empty.
        progress: show a progress bar (rank 0 only).
        info: extra entries recorded in the manifest (not compared on resume), e.g. checkpoint paths.
        allow_empty: accept a run whose output directory ends with no scored base at all (every record
            empty, only N/IUPAC, or a single base); by default that is an error, raised after
            ``summary.tsv`` is written with the reason for each record.

    Raises:
        ScoringError: unusable output directory, settings or sequence differing from the directory's, or
            nothing scored (unless `allow_empty`).
    """
    from focus_nemo.data import open_genome

    rank, world = parallel.rank_world()
    genome = open_genome(fasta) if isinstance(fasta, (str, os.PathLike)) else fasta
    k = fm.config.k if k is None else k
    window = fm.config.window if window is None else window
    if read_size < 1:
        raise ValueError(f"read_size: must be >= 1, got {read_size}")
    formats = parse_formats(formats)
    settings = {**model_settings(fm, k, window), "formats": list(formats)}  # collective under TP
    requested = list(dict.fromkeys(genome.resolve(n) for n in (genome.names if records is None else records)))
    names = genome.records(records)  # empty records left out (FastaWarning) or an error, per the FASTA policy
    empty = {n: _not_scored_row(n, "skipped", "empty record (a header with no sequence)")
             for n in requested if n not in set(names)}
    stems: dict[str, str] = {}
    for name in names:
        stem = safe_stem(name)
        if stem in stems:
            raise ScoringError(f"records {stems[stem]!r} and {name!r} map to the same output file name {stem!r}")
        stems[stem] = name
    out = Path(out_dir)
    run = ScoreRun(out)
    with contextlib.ExitStack() as stack:
        manifest: dict = {}
        if rank == 0:
            try:
                manifest, todo = _open_run(stack, out, settings, resume, names, stems, formats, genome, read_size,
                                           run)
                manifest["not_scored"] = empty
                manifest["info"] = {**manifest.get("info", {}), **(info or {}), "chunk_size": chunk_size,
                                    "device": str(next(fm.parameters()).device)}
                if world > 1 or "tensor_parallel" in manifest["info"]:
                    manifest["info"]["tensor_parallel"] = world
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
        with progress_bar(progress and rank == 0) as bar:
            task = bar.add_task("scoring", total=sum(genome.length(n) for n in todo))
            for name in todo:
                bar.update(task, description=name)
                advance = lambda n: bar.advance(task, n)  # noqa: E731
                if rank != 0:
                    for _ in _record_scores(genome, name, fm, k, window, chunk_size, read_size, advance):
                        pass
                    run.scored.append(name)
                    continue
                entry = _score_record(genome, name, out, fm, k, window, formats, chunk_size, read_size, advance)
                manifest["records"][name] = entry
                write_manifest(out, manifest)
                write_summary(out, manifest)
                run.scored.append(name)
        nothing = None
        if rank == 0:
            write_manifest(out, manifest)
            run.summary = write_summary(out, manifest)
            if not allow_empty and not any(r["scored"] for r in run.summary):
                why = "; ".join(f"{r['record']}: {r.get('note') or 'nothing scored'}" for r in run.summary)
                nothing = (f"{out}: nothing was scored ({why or 'no records'}); the reasons are in {SUMMARY}. "
                           f"Pass allow_empty=True (--allow-empty) to accept a run that scores nothing")
        nothing = parallel.from_rank0(nothing, world)
        if nothing is not None:
            raise ScoringError(nothing)
    return run


def _not_scored_row(name: str, status: str, note: str, length: int = 0) -> dict:
    """Summary row of a record that was not streamed."""
    return {"record": name, "length": length, "scored": 0, "not_scored": length, "n_bases": 0, "iupac_bases": 0,
            "soft_masked": 0, "soft_masked_scored": 0, "sum_ll_nats": 0.0, "mean_ll_nats": None,
            "bits_per_base": None, "perplexity": None, "seconds": None, "bases_per_s": None, "status": status,
            "note": note}


def _nothing_scored_note(n: int, first_acgt: bool, n_bases: int, iupac: int) -> str:
    if n == 1 and first_acgt:
        return "a single base: the first base of a sequence has no prediction"
    return f"no A/C/G/T base after the first ({n_bases} N, {iupac} other IUPAC code(s) of {n} bases)"


def _open_run(stack: contextlib.ExitStack, out: Path, settings: dict, resume: bool, names: list[str],
              stems: dict[str, str], formats: Sequence[str], genome, read_size: int, run: ScoreRun
              ) -> tuple[dict, list[str]]:
    """Create or reopen and lock (until `stack` closes) the output directory; returns its manifest and
    the records still to score (finished ones are added to ``run.skipped``)."""
    if out.exists() and not out.is_dir():
        raise ScoringError(f"{out}: output path exists and is not a directory")
    if not resume and out.is_dir() and any(out.iterdir()):
        raise ScoringError(f"{out}: output directory exists and is not empty; pass resume=True (--resume) "
                           f"to continue a run there, or choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    stack.enter_context(locked(out))
    manifest = prepare_out_dir(out, settings, resume)
    for other, entry in manifest["records"].items():
        if other != stems.get(entry["stem"], other):
            raise ScoringError(f"{out}: record {stems[entry['stem']]!r} would overwrite the outputs of "
                               f"record {other!r} (both map to the file name {entry['stem']!r})")
    if resume:
        for leftover in (p for p in out.iterdir() if TEMP_FILE.match(p.name)):
            logger.info("%s: removing %s left by an interrupted run", out, leftover.name)
            leftover.unlink()
    todo = []
    for name in names:
        entry = manifest["records"].get(name)
        if entry is not None and finished(out, entry, formats, genome, name, read_size):
            run.skipped.append(name)
        else:
            manifest["records"].pop(name, None)
            todo.append(name)
    if run.skipped:
        logger.info("%s: %d record(s) already finished, skipped: %s", out, len(run.skipped),
                    ", ".join(run.skipped))
    return manifest, todo


def _record_scores(genome, name: str, fm, k: int, window: int, chunk_size: int, read_size: int,
                   advance: Callable[[int], None]):
    """(start, bases, scores) of each read of record `name`, streamed from its first base."""
    n = genome.length(name)
    stream = LoglikStream(fm, k, window, chunk_size)
    for s in range(0, n, read_size):
        raw = genome.fetch(name, s, min(n, s + read_size))
        yield s, raw, stream.feed(raw, advance)


def _score_record(genome, name: str, out: Path, fm, k: int, window: int, formats: Sequence[str],
                  chunk_size: int, read_size: int, advance: Callable[[int], None]) -> dict:
    """Stream one record into temporary output files, rename them into place, return its manifest entry."""
    t0 = time.perf_counter()
    n = genome.length(name)
    stem = safe_stem(name)
    finals = {fmt: out / (stem + SUFFIX[fmt]) for fmt in formats}
    with contextlib.ExitStack() as stack:
        tmps = {fmt: stack.enter_context(staged(p)) for fmt, p in finals.items()}
        writers = {}
        try:
            if "npz" in tmps:
                writers["npz"] = NpzWriter(tmps["npz"], n)
            if "bedgraph" in tmps:
                writers["bedgraph"] = BedGraphWriter(tmps["bedgraph"], name)
            seq_hash = hashlib.sha256()
            counts = dict.fromkeys(("scored", "n_bases", "iupac_bases", "soft_masked", "soft_masked_scored"), 0)
            total = 0.0
            first_acgt = False
            for s, raw, ll in _record_scores(genome, name, fm, k, window, chunk_size, read_size, advance):
                seq_hash.update(raw.tobytes())
                if s == 0:
                    first_acgt = bool(IS_ACGT[UPPER[raw[0]]])
                ok = ~np.isnan(ll)
                lower = IS_LOWER[raw]
                up = UPPER[raw]
                counts["scored"] += int(ok.sum())
                counts["n_bases"] += int(IS_N[raw].sum())
                counts["iupac_bases"] += int((~IS_ACGT[up] & ~IS_N[raw]).sum())
                counts["soft_masked"] += int(lower.sum())
                counts["soft_masked_scored"] += int((lower & ok).sum())
                total += float(ll[ok].astype(np.float64).sum())
                for w in writers.values():
                    w.write(s, ll)
            seconds = time.perf_counter() - t0
            mean = total / counts["scored"] if counts["scored"] else None
            stats = {
                "record": name, "length": n, "scored": counts["scored"], "not_scored": n - counts["scored"],
                **{c: counts[c] for c in ("n_bases", "iupac_bases", "soft_masked", "soft_masked_scored")},
                "sum_ll_nats": total, "mean_ll_nats": mean,
                "bits_per_base": None if mean is None else -mean / math.log(2),
                "perplexity": None if mean is None else math.exp(-mean),
                "seconds": seconds, "bases_per_s": n / seconds if seconds > 0 else None,
                "status": "scored" if counts["scored"] else "nothing_scored",
                "note": "" if counts["scored"] else _nothing_scored_note(n, first_acgt, counts["n_bases"],
                                                                        counts["iupac_bases"]),
            }
            meta = {"record": name, "length": n, "units": UNITS, "score": SCORE_DEFINITION, "k": k,
                    "window": window, "first_base_acgt": first_acgt,
                    **{c: stats[c] for c in ("scored", "n_bases", "iupac_bases", "soft_masked")}}
            for w in writers.values():
                w.close(meta)
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
        files = {}
        for fmt, tmp in tmps.items():
            files[fmt] = {"file": finals[fmt].name, "sha256": seal(tmp)}
        for fmt, tmp in tmps.items():
            publish(tmp, finals[fmt])
    return {"stem": stem, "length": n, "sequence_sha256": seq_hash.hexdigest(), "files": files, "stats": stats}


def run_report(run: ScoreRun) -> list[str]:
    """Lines describing a finished run: one per record of its summary, then the totals."""
    lines = []
    for row in run.summary:
        if not row["scored"]:
            why = row.get("note") or "no scored base"
            lines.append(f"{row['record']}\t{row['length']:,} bases\tnot scored: {why}")
            continue
        lines.append(f"{row['record']}\t{row['length']:,} bases\t{row['scored']:,} scored\t"
                     f"{row['bits_per_base'] or float('nan'):.4f} bits/base\t{row['bases_per_s'] or 0:,.0f} bases/s")
    lines.append(f"{len(run.scored)} record(s) scored, {len(run.skipped)} already finished; results in {run.out_dir}")
    return lines
