"""Long records scored in segments (``split_records``, ``--split-records SIZE``; off by default), so that
one chromosome can be scored by several workers or groups at once.

A record longer than SIZE (a multiple of the FOCUS window W) is cut at multiples of SIZE into `Segment`s.
Each segment after the first is streamed from ``split_overlap`` bases (rounded up to a multiple of W) before
its start, a warm-up whose scores are discarded: the model's state at the segment's start then depends on
that much context only, so scores near a segment's start differ a little from an unsplit stream's (an
overlap that reaches back to the record's first base gives the unsplit scores, to float rounding;
``benchmarks/score_scaling.py --split`` measures the difference for shorter ones).

Files and writers: the process that scores a segment writes its scores alone, into a hidden
``.<stem>.segment-<start>.npy`` (temporary name, then renamed) and reports its SHA-256; the coordinator (the
single process, the coordinator of workers, global rank 0) enters it in the manifest (``segments``) and,
once every segment of the record is in, assembles them into the record's files, the same files an unsplit
run writes (`assemble`), enters the record as finished (its entry says ``split``: size, overlap, segments)
and deletes the segment files. A record with some segments scored is pending ("k of m segments scored");
``--resume`` keeps segments whose files match their checksums and scores only the others. The run's
settings hold ``split_records`` and ``split_overlap``: resuming with other values is refused.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from focus_nemo.durable import publish, seal, sha256_file, staged
from focus_nemo.scoring.outputs import safe_stem, writing
from focus_nemo.scoring.records import Job, RunBook, ScoreRun, record_scores, score_record
from focus_nemo.scoring.stream import LoglikStream

logger = logging.getLogger(__name__)


class Segment(NamedTuple):
    """Bases [start, end) of `record`, streamed from `warm` (<= start; scores before `start` discarded)."""

    record: str
    start: int
    end: int
    warm: int


def bounds(record: str, length: int, size: int, overlap: int) -> list[Segment]:
    """The segments of a record of `length` bases (one, the whole record, when it is not longer than `size`)."""
    return [Segment(record, s, min(length, s + size), max(0, s - overlap)) for s in range(0, length, size)]


def name_of(item) -> str:
    """The record of a work item: a record name (scored whole) or a `Segment`."""
    return item.record if isinstance(item, Segment) else item


def length_of(genome, item) -> int:
    """Bases of a work item that get scores (a segment's warm-up not counted)."""
    return item.end - item.start if isinstance(item, Segment) else genome.length(item)


def max_items(genome, names, split: tuple | None) -> int:
    """How many work items `names` can become (processes beyond that would have nothing to do)."""
    size = split[0] if split else None
    return sum(-(-genome.length(n) // size) if size else 1 for n in names)


def segment_file(out: Path, seg: Segment) -> Path:
    return out / f".{safe_stem(seg.record)}.segment-{seg.start:012d}.npy"


def _segment_reads(job: Job, seg: Segment):
    """(start, bases) of the reads of a segment's warm-up then of the segment itself."""
    for lo, hi in ((seg.warm, seg.start), (seg.start, seg.end)):
        for s in range(lo, hi, job.read_size):
            yield s, job.genome.fetch(seg.record, s, min(hi, s + job.read_size))


def _stream(job: Job, fm, seg: Segment, advance):
    stream = LoglikStream(fm, job.k, job.window, job.chunk_size)
    for s, raw in _segment_reads(job, seg):
        ll = stream.feed(raw, advance if s >= seg.start else None)
        if s >= seg.start:
            yield ll


def score_segment(job: Job, fm, seg: Segment, advance) -> dict:
    """Stream one segment (warm-up first) into its segment file; returns what the coordinator enters."""
    t0 = time.perf_counter()
    path = segment_file(job.out, seg)
    scores = np.concatenate([np.zeros(0, np.float32), *_stream(job, fm, seg, advance)])
    with writing(path, job.out), staged(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, scores.astype("<f4", copy=False))
        digest = seal(tmp)
        publish(tmp, path)
    return {"file": path.name, "sha256": digest, "start": seg.start, "end": seg.end, "warm": seg.warm,
            "seconds": time.perf_counter() - t0}


def stream_item(job: Job, fm, item) -> None:
    """The model calls of scoring a work item without any file (the other ranks of a tensor-parallel group)."""
    if isinstance(item, Segment):
        for _ in _stream(job, fm, item, None):
            pass
        return
    for _ in record_scores(job.genome, item, fm, job.k, job.window, job.chunk_size, job.read_size, lambda n: None):
        pass


def _split(book: RunBook) -> tuple[int, int] | None:
    settings = book.manifest["settings"]
    return (settings["split_records"], settings["split_overlap"]) if "split_records" in settings else None


def plan(book: RunBook, job: Job, todo: list[str], run: ScoreRun) -> list:
    """The work items of the records still to score (coordinator): records no longer than the segment size
    whole, the others as their segments not yet scored (on resume, segment files that match their checksums
    are kept); a record whose segments are all scored is assembled here. Segment files of finished records
    are deleted."""
    split = _split(book)
    done = book.manifest.setdefault("segments", {})
    for name in [n for n in done if n in book.manifest["records"]]:
        _remove(job.out, done.pop(name))
    if split is None:
        return list(todo)
    items = []
    for name in todo:
        segs = bounds(name, job.genome.length(name), *split)
        if len(segs) == 1:
            items.append(name)
            continue
        kept = {}
        for seg in segs:
            entry = done.get(name, {}).get(str(seg.start))
            path = segment_file(job.out, seg)
            if entry is not None and (entry["end"], entry["warm"]) == (seg.end, seg.warm) and path.is_file() \
                    and sha256_file(path) == entry["sha256"]:
                kept[str(seg.start)] = entry
            else:
                items.append(seg)
        done[name] = kept
        if kept:
            logger.info("%s: record %s: %d of %d segments already scored, kept", job.out, name, len(kept), len(segs))
        if len(kept) == len(segs):
            _assemble_into(book, job, name, run)
        elif kept:
            book.manifest.setdefault("unfinished", {})[name] = _pending(len(kept), len(segs))
    book.write()
    return items


def _pending(k: int, m: int) -> dict:
    return {"status": "pending", "note": f"{k} of {m} segments scored"}


def finish(book: RunBook, run: ScoreRun, item, entry: dict) -> None:
    """Enter a finished work item (coordinator): a whole record, or a segment (the record is assembled and
    entered once its last segment is in)."""
    if not isinstance(item, Segment):
        book.finished(item, entry)
        run.scored.append(item)
        return
    with book.lock:
        job: Job = book.job
        name = item.record
        got = book.manifest.setdefault("segments", {}).setdefault(name, {})
        got[str(item.start)] = entry
        m = len(bounds(name, job.genome.length(name), *_split(book)))
        if len(got) < m:
            book.manifest.setdefault("unfinished", {})[name] = _pending(len(got), m)
            book.write()
            return
        _assemble_into(book, job, name, run)


def _assemble_into(book: RunBook, job: Job, name: str, run: ScoreRun) -> None:
    entries = book.manifest["segments"][name]
    entry = assemble(job, name, entries)
    entry["split"] = {"size": _split(book)[0], "overlap": _split(book)[1], "segments": len(entries)}
    book.finished(name, entry)
    run.scored.append(name)
    _remove(job.out, book.manifest["segments"].pop(name))
    book.write()


def _remove(out: Path, entries: dict) -> None:
    for entry in entries.values():
        with contextlib.suppress(OSError):
            (out / entry["file"]).unlink()


def assemble(job: Job, name: str, entries: dict) -> dict:
    """Write record `name`'s files from its segment files (`entries`: start -> segment entry); returns the
    record's manifest entry, as `score_record` does for an unsplit record."""
    parts = sorted(entries.values(), key=lambda e: e["start"])
    arrays = [np.load(job.out / e["file"], mmap_mode="r") for e in parts]
    n = job.genome.length(name)

    def scores():
        for s in range(0, n, job.read_size):
            e = min(n, s + job.read_size)
            ll = np.empty(e - s, dtype=np.float32)
            for part, arr in zip(parts, arrays, strict=True):
                lo, hi = max(s, part["start"]), min(e, part["end"])
                if lo < hi:
                    ll[lo - s: hi - s] = arr[lo - part["start"]: hi - part["start"]]
            yield s, job.genome.fetch(name, s, e), ll

    seconds = sum(e["seconds"] for e in parts)
    return score_record(job.genome, name, job.out, None, job.k, job.window, job.formats, job.chunk_size,
                        job.read_size, lambda n: None, job.max_bits, scores=scores(), seconds=seconds)
