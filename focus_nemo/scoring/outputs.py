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
from focus_nemo.scoring.tally import RecordTally, implausible_note

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"

SUMMARY = "summary.tsv"

MANIFEST_FORMAT = "focus-nemo-scores/2"

FORMATS = ("npz", "bedgraph")

SUFFIX = {"npz": ".npz", "bedgraph": ".bedgraph.gz"}

SUMMARY_COLUMNS = ("record", "length", "scored", "not_scored", "n_bases", "iupac_bases", "soft_masked",
                   "soft_masked_scored", "sum_ll_nats", "mean_ll_nats", "bits_per_base", "perplexity",
                   "seconds", "bases_per_s", "status", "flag", "note", "files")

# ``status`` of a summary row: finished (scored, nothing_scored, skipped) or not (pending, failed)
FINISHED = ("scored", "nothing_scored", "skipped")

FLAG = "above_max_bits_per_base"  # ``flag`` of a record whose bits per base exceed the run's threshold

# Output file names stay far below the 255 bytes file systems allow, with room for the temporary name's
# ``.<name>.<pid>@<host>.<random>.tmp``.
MAX_STEM = 96

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
        # Cleanup after a failed write (a full disk fails the flush again): never raise over the cause.
        with contextlib.suppress(Exception):
            self.fh.close()
        with contextlib.suppress(Exception):
            self.file.close()


def safe_stem(name: str) -> str:
    """File stem of a record: characters outside ``A-Za-z0-9._-`` become ``_``; never hidden; a name longer
    than `MAX_STEM` is cut and ends with ``-`` and 12 hex digits of its SHA-256 (``summary.tsv`` maps
    record names to files)."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    stem = "_" + stem if stem.startswith(".") else stem
    if len(stem) > MAX_STEM:
        stem = stem[: MAX_STEM - 13] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return stem


def check_stems(names: Sequence[str], earlier: dict[str, str] | None = None) -> dict[str, str]:
    """{stem: record} of `names`; refuses two records whose file names are equal or differ only in case
    (macOS and Windows file systems fold case), also against `earlier` ({stem: record} already in the
    output directory)."""
    stems: dict[str, str] = {}
    folded: dict[str, tuple[str, str]] = {s.casefold(): (s, n) for s, n in (earlier or {}).items()}
    for name in names:
        stem = safe_stem(name)
        other_stem, other = folded.get(stem.casefold(), (stem, name))
        if other != name:
            what = (f"the same output file name {stem!r}" if other_stem == stem else
                    f"output file names that differ only in case ({other_stem!r}, {stem!r}), which file systems "
                    f"that fold case (macOS, Windows) would mix")
            raise ScoringError(f"records {other!r} and {name!r} map to {what}; rename one, or score them into "
                               f"separate directories (--records)")
        folded[stem.casefold()] = (stem, name)
        stems[stem] = name
    return stems


RESUME_HINT = ("files finished before it are kept (manifest.json lists them): free space, then rerun with "
               "--resume")


@contextlib.contextmanager
def writing(path: Path, directory: Path, what: str = "output file", hint: str = RESUME_HINT):
    """Turns an OSError while writing `path` (a full disk, a quota, a file-size limit, a name too long)
    into one ScoringError naming the file and its directory, and what to do (`hint`)."""
    try:
        yield
    except OSError as e:
        why = e.strerror or str(e)
        raise ScoringError(f"{path}: could not write this {what} in {directory}: {why} (errno {e.errno}); "
                           f"{hint}") from None


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


def manifest_checksum(manifest: dict) -> str:
    """SHA-256 of the manifest's content (sorted-key JSON, its ``checksum`` entry left out)."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_manifest(path: Path) -> dict:
    """The manifest at `path`, refused unless its own checksum matches (an edited or damaged manifest
    could otherwise vouch for outputs or figures it does not describe)."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ScoringError(f"{path}: unreadable manifest ({e}); score into a new output directory") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ScoringError(f"{path}: not a {MANIFEST_FORMAT} manifest (format {found!r}); score into a new "
                           f"output directory")
    if manifest.get("checksum") != manifest_checksum(manifest):
        raise ScoringError(f"{path}: the manifest does not match its own checksum (edited or damaged after it "
                           f"was written); its records cannot be trusted: score into a new output directory")
    return manifest


_RUN_FILES_FORBIDDEN: str | None = None  # why this process may not write manifest.json and summary.tsv


def forbid_run_files(why: str) -> None:
    """From now on this process may not write a run's ``manifest.json`` or ``summary.tsv`` (a worker or a rank
    that scores records for a run whose coordinator writes them): one writer per file."""
    global _RUN_FILES_FORBIDDEN
    _RUN_FILES_FORBIDDEN = why


def _check_run_file_writer(path: Path) -> None:
    if _RUN_FILES_FORBIDDEN is not None:
        raise ScoringError(f"{path}: not written by this process (pid {os.getpid()}): {_RUN_FILES_FORBIDDEN}")


def write_manifest(out: Path, manifest: dict) -> None:
    _check_run_file_writer(out / MANIFEST)
    manifest["checksum"] = manifest_checksum(manifest)
    with writing(out / MANIFEST, out, "manifest"):
        durable_write_bytes(out / MANIFEST, json.dumps(manifest, indent=2).encode())


def _fmt(value) -> str:
    if value is None:
        return "nan"
    if isinstance(value, str):
        return value
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def not_scored_row(name: str, status: str, note: str, length: int = 0) -> dict:
    """Summary row of a record that was not streamed (``skipped``) or not finished (``pending``, ``failed``)."""
    return {"record": name, "length": length, "scored": 0, "not_scored": length, "n_bases": 0, "iupac_bases": 0,
            "soft_masked": 0, "soft_masked_scored": 0, "sum_ll_nats": 0.0, "mean_ll_nats": None,
            "bits_per_base": None, "perplexity": None, "seconds": None, "bases_per_s": None, "status": status,
            "note": note}


def summary_rows(manifest: dict, max_bits: float) -> list[dict]:
    """One row per requested record, in the order requested: finished records with their figures (flagged
    when their bits per base exceed `max_bits`), the others ``pending`` or ``failed`` with the reason."""
    rows = []
    for name in manifest["requested"]:
        entry = manifest["records"].get(name)
        if entry is not None:
            row = dict(entry["stats"])
            row["files"] = ",".join(sorted(f["file"] for f in entry["files"].values()))
            note = implausible_note(row.get("bits_per_base"), max_bits)
            if note:
                row["flag"], row["note"] = FLAG, note
        elif name in manifest.get("not_scored", {}):
            row = manifest["not_scored"][name]
        else:
            why = manifest.get("unfinished", {}).get(name, {"status": "pending", "note": ""})
            note = "; ".join(x for x in (why["note"], "not finished: a run with --resume scores it") if x)
            row = not_scored_row(name, why["status"], note, manifest["inputs"]["records"][name])
        rows.append(row)
    return rows


def write_summary(out: Path, manifest: dict, max_bits: float) -> list[dict]:
    _check_run_file_writer(out / SUMMARY)
    rows = summary_rows(manifest, max_bits)
    lines = ["\t".join(SUMMARY_COLUMNS)] + ["\t".join(_fmt(r.get(c, "")) for c in SUMMARY_COLUMNS) for r in rows]
    with writing(out / SUMMARY, out, "summary"):
        durable_write_bytes(out / SUMMARY, ("\n".join(lines) + "\n").encode())
    return rows


def input_files(genome) -> list[Path]:
    """The files a FASTA input reads: each file, the copy it is read from (a cache) and their indexes."""
    paths = []
    for f in genome.files:
        for p in dict.fromkeys((f.path, f.read_path)):
            paths += [p, p.with_name(p.name + ".fai"), p.with_name(p.name + ".gzi")]
    return paths


def same_file(a: Path, b: Path) -> bool:
    """`a` and `b` name one file (also through links), or would once created."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b) or a.resolve() == b.resolve()
    except OSError:
        return False


def settings_diff(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} in the directory, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)]


def stored_scores(out: Path, entry: dict, length: int, read_size: int):
    """The scores of a finished record read back from its output files, `read_size` at a time (the npz
    when there is one, else the bedGraph, whose 9 significant digits give back the same float32)."""
    files = entry["files"]
    if "npz" in files:
        with zipfile.ZipFile(out / files["npz"]["file"]) as z, z.open("log_likelihood.npy") as f:
            np.lib.format.read_magic(f)
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            if shape != (length,) or dtype != np.dtype("<f4"):
                raise ScoringError(f"{out / files['npz']['file']}: holds {shape} {dtype} scores for a record of "
                                   f"{length} bases")
            for s in range(0, length, read_size):
                yield np.frombuffer(f.read(4 * min(read_size, length - s)), dtype="<f4")
        return
    with gzip.open(out / files["bedgraph"]["file"], "rt", encoding="utf-8") as fh:
        lines = (line.split("\t") for line in fh)
        nxt = next(lines, None)
        for s in range(0, length, read_size):
            chunk = np.full(min(read_size, length - s), np.nan, dtype=np.float32)
            while nxt is not None and int(nxt[1]) < s + chunk.shape[0]:
                chunk[int(nxt[1]) - s] = float(nxt[3])
                nxt = next(lines, None)
            yield chunk


def finished(out: Path, entry: dict, formats: Sequence[str], genome, name: str, read_size: int) -> dict | None:
    """The summary figures of record `name` recomputed from its output files when every one exists with
    its recorded checksum and was scored from the same sequence; None when one is missing or damaged.

    Raises ScoringError when the FASTA's sequence is not the one that was scored."""
    for fmt in formats:
        info = entry["files"].get(fmt)
        path = out / info["file"] if info else None
        if path is None or not path.is_file() or sha256_file(path) != info["sha256"]:
            logger.warning("%s: %s output of record %s is missing or does not match its checksum; scoring it "
                           "again", out, fmt, name)
            return None
    n = genome.length(name)
    tally = RecordTally(name, n)
    if entry["length"] == n:
        read_size = entry.get("read_size", read_size)
        for s, ll in zip(range(0, n, read_size), stored_scores(out, entry, n, read_size), strict=True):
            tally.add(genome.fetch(name, s, min(n, s + read_size)), ll)
    if entry["length"] != n or entry["sequence_sha256"] != tally.seq_hash.hexdigest():
        raise ScoringError(f"{out}: record {name!r} was scored from a different sequence (length "
                           f"{entry['length']}, now {n}, or different bases); score this "
                           f"FASTA into a new output directory")
    return tally.stats(entry["stats"].get("seconds"))


def fasta_identity(genome) -> dict:
    """What identifies the FASTA input of a run: its files (path, size) and its records' names and lengths."""
    return {"files": [{"path": str(f.path), "size": f.path.stat().st_size} for f in genome.files],
            "records": {name: genome.length(name) for name in genome.names}}


def inputs_diff(old: dict, new: dict) -> list[str]:
    """What differs between two `fasta_identity` values, in words."""
    diff = []
    old_files, new_files = old.get("files", []), new.get("files", [])
    if [f["path"] for f in old_files] != [f["path"] for f in new_files]:
        diff.append(f"FASTA {', '.join(f['path'] for f in old_files)} in the directory, "
                    f"{', '.join(f['path'] for f in new_files)} now")
    else:
        diff += [f"size of {a['path']}: {a['size']:,} bytes in the directory, {b['size']:,} now"
                 for a, b in zip(old_files, new_files, strict=True) if a["size"] != b["size"]]
    old_rec, new_rec = old.get("records", {}), new.get("records", {})
    gone, added = [n for n in old_rec if n not in new_rec], [n for n in new_rec if n not in old_rec]
    if gone:
        diff.append(f"record(s) no longer in the FASTA: {', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''}")
    if added:
        diff.append(f"record(s) new in the FASTA: {', '.join(added[:5])}{' ...' if len(added) > 5 else ''}")
    diff += [f"length of {n}: {old_rec[n]:,} in the directory, {new_rec[n]:,} now"
             for n in old_rec if n in new_rec and old_rec[n] != new_rec[n]]
    return diff


def prepare_out_dir(out: Path, settings: dict, resume: bool, inputs: dict | None = None) -> dict:
    """Start or reopen the (existing, locked) output directory; returns its manifest (a new one is
    returned unwritten). Resuming refuses other settings or another FASTA (`inputs`, `fasta_identity`)."""
    entries = [p.name for p in out.iterdir()]
    ours = [n for n in entries if n != LOCK_FILE and not TEMP_FILE.match(n)]
    if not resume and ours:
        raise ScoringError(f"{out}: output directory exists and is not empty; pass resume=True (--resume) "
                           f"to continue a run there, or choose a new directory")
    if MANIFEST not in entries:
        if ours:
            raise ScoringError(f"{out}: cannot resume: the directory has no {MANIFEST} but holds other files "
                               f"({', '.join(sorted(ours)[:5])})")
        return {"format": MANIFEST_FORMAT, "complete": False, "settings": settings, "inputs": inputs or {},
                "records": {}}
    manifest = read_manifest(out / MANIFEST)
    diff = settings_diff(manifest.get("settings", {}), settings)
    if diff:
        raise ScoringError(f"{out}: cannot resume with different scoring settings ({'; '.join(diff)}); use a new "
                           f"output directory or the original settings")
    diff = inputs_diff(manifest.get("inputs", {}), inputs or {})
    if diff:
        raise ScoringError(f"{out}: cannot resume from another FASTA input ({'; '.join(diff)}); score it into a "
                           f"new output directory, or resume with the original file")
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

    def advance(self, task_id: int, n: float = 1) -> None:
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
