"""Score outputs on disk: the per-record writers (npz, bedGraph), the run's ``manifest.json`` and
``summary.tsv``, the output-directory lock and resume checks, and readers (`load_scores`, `read_tsv`). Every
file is written through `focus_nemo.durable` (temporary name, fsync, rename, checksum)."""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import logging
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from focus_nemo.durable import durable_write_bytes, sha256_file
from focus_nemo.scoring.stream import ScoringError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"

SUMMARY = "summary.tsv"

MANIFEST_FORMAT = "focus-nemo-scores/1"

FORMATS = ("npz", "bedgraph")

SUFFIX = {"npz": ".npz", "bedgraph": ".bedgraph.gz"}

SUMMARY_COLUMNS = ("record", "length", "scored", "not_scored", "n_bases", "iupac_bases", "soft_masked",
                   "soft_masked_scored", "sum_ll_nats", "mean_ll_nats", "bits_per_base", "perplexity",
                   "seconds", "bases_per_s", "status", "note")

LOCK_FILE = ".score_fasta.lock"

TEMP_FILE = re.compile(r"^\..+\.tmp$")


# Zip entries and gzip headers carry a fixed date, so the same scores give the same bytes (and checksums)
# whenever they are written.
FIXED_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


class NpzWriter:
    """Streams float32 scores into ``log_likelihood.npy`` inside an npz (zip, stored) of known length."""

    def __init__(self, path: Path, length: int) -> None:
        self.path, self.length, self.written = path, length, 0
        self.zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self.entry = self.zip.open(_zip_entry("log_likelihood.npy"), "w", force_zip64=True)
        header = {"descr": "<f4", "fortran_order": False, "shape": (length,)}
        np.lib.format.write_array_header_1_0(self.entry, header)

    def write(self, start: int, ll: np.ndarray) -> None:
        if start != self.written:
            raise RuntimeError(f"{self.path}: scores written out of order ({start} after {self.written})")
        self.entry.write(ll.astype("<f4", copy=False).tobytes())
        self.written += ll.shape[0]

    def close(self, meta: dict) -> None:
        self.entry.close()
        if self.written != self.length:
            raise RuntimeError(f"{self.path}: wrote {self.written} scores for a record of {self.length} bases")
        buf = io.BytesIO()
        np.save(buf, np.array(json.dumps(meta)))
        self.zip.writestr(_zip_entry("meta.npy"), buf.getvalue())
        self.zip.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.entry.close()
        with contextlib.suppress(Exception):
            self.zip.close()


class BedGraphWriter:
    """One gzipped bedGraph line per scored base (0-based half-open); NaN positions get no line."""

    def __init__(self, path: Path, record: str) -> None:
        self.path, self.record = path, record
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()/abort()
        # No file name and no time in the gzip header: the bytes depend on the scores only.
        self.gz = gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=self.file, mtime=0)
        self.fh = io.TextIOWrapper(self.gz, encoding="utf-8", newline="\n")

    def write(self, start: int, ll: np.ndarray) -> None:
        idx = np.flatnonzero(~np.isnan(ll))
        rec = self.record
        self.fh.write("".join(f"{rec}\t{p}\t{p + 1}\t{v:.9g}\n"
                              for p, v in zip((idx + start).tolist(), ll[idx].tolist(), strict=True)))

    def close(self, meta: dict) -> None:
        self.fh.close()
        self.file.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.fh.close()
        self.file.close()


def safe_stem(name: str) -> str:
    """File stem of a record: characters outside ``A-Za-z0-9._-`` become ``_``; never hidden."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return "_" + stem if stem.startswith(".") else stem


def parse_formats(fmt: str | Sequence[str]) -> tuple[str, ...]:
    """``npz``, ``bedgraph``, ``both`` or a list of those -> sorted tuple of formats."""
    items = [fmt] if isinstance(fmt, str) else list(fmt)
    out: set[str] = set()
    for f in items:
        if f == "both":
            out.update(FORMATS)
        elif f in FORMATS:
            out.add(f)
        else:
            raise ScoringError(f"format: {f!r} is not one of npz, bedgraph, both")
    if not out:
        raise ScoringError("format: no output format given")
    return tuple(sorted(out))


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ScoringError(f"{path}: unreadable manifest ({e}); score into a new output directory") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ScoringError(f"{path}: not a {MANIFEST_FORMAT} manifest")
    return manifest


def write_manifest(out: Path, manifest: dict) -> None:
    durable_write_bytes(out / MANIFEST, json.dumps(manifest, indent=2).encode())


def _fmt(value) -> str:
    if value is None:
        return "nan"
    if isinstance(value, str):
        return value
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def write_summary(out: Path, manifest: dict) -> list[dict]:
    rows = [rec["stats"] for rec in manifest["records"].values()]
    rows += [row for name, row in manifest.get("not_scored", {}).items() if name not in manifest["records"]]
    lines = ["\t".join(SUMMARY_COLUMNS)] + ["\t".join(_fmt(r.get(c)) for c in SUMMARY_COLUMNS) for r in rows]
    durable_write_bytes(out / SUMMARY, ("\n".join(lines) + "\n").encode())
    return rows


def settings_diff(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} in the directory, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)]


def record_hash(genome, name: str, read_size: int) -> str:
    h = hashlib.sha256()
    n = genome.length(name)
    for s in range(0, n, read_size):
        h.update(genome.fetch(name, s, min(n, s + read_size)).tobytes())
    return h.hexdigest()


def finished(out: Path, entry: dict, formats: Sequence[str], genome, name: str, read_size: int) -> bool:
    """Record `name` is done: every output exists with its recorded checksum, from the same sequence.

    Raises ScoringError when the FASTA's sequence is not the one that was scored."""
    for fmt in formats:
        info = entry["files"].get(fmt)
        path = out / info["file"] if info else None
        if path is None or not path.is_file() or sha256_file(path) != info["sha256"]:
            logger.warning("%s: %s output of record %s is missing or does not match its checksum; scoring it "
                           "again", out, fmt, name)
            return False
    if entry["length"] != genome.length(name) or entry["sequence_sha256"] != record_hash(genome, name, read_size):
        raise ScoringError(f"{out}: record {name!r} was scored from a different sequence (length "
                           f"{entry['length']}, now {genome.length(name)}, or different bases); score this "
                           f"FASTA into a new output directory")
    return True


def prepare_out_dir(out: Path, settings: dict, resume: bool) -> dict:
    """Start or reopen the (existing, locked) output directory; returns its manifest."""
    entries = [p.name for p in out.iterdir()]
    ours = [n for n in entries if n != LOCK_FILE and not TEMP_FILE.match(n)]
    if not resume and ours:
        raise ScoringError(f"{out}: output directory exists and is not empty; pass resume=True (--resume) "
                           f"to continue a run there, or choose a new directory")
    if MANIFEST not in entries:
        if ours:
            raise ScoringError(f"{out}: cannot resume: the directory has no {MANIFEST} but holds other files "
                               f"({', '.join(sorted(ours)[:5])})")
        manifest = {"format": MANIFEST_FORMAT, "settings": settings, "records": {}}
        write_manifest(out, manifest)
        return manifest
    manifest = read_manifest(out / MANIFEST)
    diff = settings_diff(manifest.get("settings", {}), settings)
    if diff:
        raise ScoringError(f"{out}: cannot resume with different scoring settings ({'; '.join(diff)}); use a new "
                           f"output directory or the original settings")
    return manifest


@contextlib.contextmanager
def locked(out: Path):
    """One run per output directory at a time (POSIX advisory lock; released when the process dies)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(out / LOCK_FILE, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ScoringError(f"{out}: another scoring run is writing to this directory") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def progress_bar(enabled: bool, unit: str = "bases", interactive: bool | None = None, every_s: float = 60.0):
    """Progress of a scoring run: a rich bar on a terminal; elsewhere (a batch job's log) a `LogProgress`
    line every `every_s` seconds. `interactive` None: whether stderr is a terminal."""
    import sys

    if interactive is None:
        interactive = sys.stderr.isatty()
    if enabled and not interactive:
        return LogProgress(unit, every_s)
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} {unit}/s" if speed else f"- {unit}/s")

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed:,.0f}/{task.total:,.0f}"), Rate(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled)


def resident_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB (Linux ``/proc``; NaN elsewhere)."""
    now = peak = float("nan")
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return now, peak


class LogProgress:
    """The progress bar's interface (`add_task`, `update`, `advance`) for non-interactive runs: every
    `every_s` seconds and at each record's end, one INFO line with the position, the rate over the last
    interval and overall, the resident and peak memory and the time left."""

    def __init__(self, unit: str = "bases", every_s: float = 60.0, clock=None) -> None:
        import time

        self.unit, self.every_s, self.clock = unit, every_s, clock or time.monotonic
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        for task in self.tasks.values():
            if task["completed"] != task["logged_at"]:
                self._log(task)

    def add_task(self, description: str, total: float | None = None) -> int:
        now = self.clock()
        self.tasks[len(self.tasks)] = {"description": description, "total": total, "completed": 0, "start": now,
                                       "last": now, "logged_at": 0}
        return len(self.tasks) - 1

    def update(self, task_id: int, description: str | None = None, advance: float = 0) -> None:
        task = self.tasks[task_id]
        if description is not None and description != task["description"]:
            if task["completed"] != task["logged_at"]:
                self._log(task)
            task["description"] = description
        self.advance(task_id, advance)

    def advance(self, task_id: int, n: float) -> None:
        task = self.tasks[task_id]
        task["completed"] += n
        if n and self.clock() - task["last"] >= self.every_s:
            self._log(task)

    def _log(self, task: dict) -> None:
        now = self.clock()
        done, total = task["completed"], task["total"]
        recent = (done - task["logged_at"]) / max(now - task["last"], 1e-9)
        overall = done / max(now - task["start"], 1e-9)
        rss, peak = resident_mib()
        where = f"{done:,.0f}/{total:,.0f} {self.unit} ({100 * done / total:.1f}%)" if total else f"{done:,.0f}"
        left = f", {(total - done) / overall / 60:.1f} min left" if total and overall > 0 else ""
        logger.info("%s: %s, %s %s/s (overall %s), RSS %.0f MiB (peak %.0f)%s", task["description"], where,
                    f"{recent:,.0f}", self.unit, f"{overall:,.0f}", rss, peak, left)
        task["last"], task["logged_at"] = now, done


def load_scores(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """(log-likelihoods float32 [L], metadata) of a ``<record>.npz`` written by `score_fasta`."""
    with np.load(path, allow_pickle=False) as z:
        return z["log_likelihood"], json.loads(str(z["meta"]))


def read_tsv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a TSV written by this module (``summary.tsv`` or a variant score file), as dicts."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
