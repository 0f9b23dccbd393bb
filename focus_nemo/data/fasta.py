"""Open reference FASTA files (plain, gzip, bgzip) and read sequence as case-preserving bytes.

Reading goes through pyfaidx (a samtools-compatible ``.fai`` index; ``.gzi`` for bgzip via Biopython's
``Bio.bgzf``), so any window of any record is random access and a whole genome is never held in memory.

Files, as users download them:

* plain text (``.fa``, ``.fasta``, ``.fna``): indexed in place (``.fai`` written next to the file; in the
  cache directory instead when that folder is read-only and has no up-to-date index).
* bgzip (``.fa.gz`` / ``.bgz`` written by ``bgzip``, with or without ``.fai``/``.gzi``): random access
  through the block index.
* plain gzip (UCSC's ``hg38.fa.gz``, ``chr1.fa.gz``): gzip has no random access, so the file is
  decompressed ONCE into the cache directory (logged) and the copy is indexed; later runs reuse the copy
  as long as the source's size and modification time are unchanged. The copy is written under a
  temporary name and renamed, and a file lock lets one of several ranks started together do the work
  while the others wait, so no rank reads a half-written file. Indexes are written the same way.

Cache directory (``cache_dir`` argument): by default ``$FOCUS_NEMO_CACHE`` if set, else a
``focus_nemo_cache`` folder next to the FASTA when that folder is writable (and not marked read-only by
its mode bits), else ``$XDG_CACHE_HOME/focus_nemo`` (``~/.cache/focus_nemo``). The decompressed human
genome takes about 3.2 GB there.

Record names: ``FastaFile.resolve`` accepts a record's exact name or an alias that differs only by the
``chr`` prefix, so ``chr1`` finds ``1`` (Ensembl/GRCh37 naming) and ``1`` finds ``chr1`` (UCSC/GRCh38),
and the mitochondrion's ``chrM``, ``M``, ``chrMT`` and ``MT`` all find each other. An unknown name raises
`RecordNotFoundError` listing the file's records.

Sequence policies (each has a test):

* Line endings: LF (``\\n``, Unix), CRLF (``\\r\\n``, Windows) and CR (``\\r``, classic Mac OS) all read the
  same sequence, in plain, gzip and bgzip files alike. LF and CRLF files are indexed in place; a file with CR
  line endings, or with a mix of kinds (for example LF and CRLF lines in one record), is rewritten once with
  LF line endings into the cache directory (logged, reused while the source is unchanged) and the copy is
  read, like a plain-gzip file. CR line endings are seen in the first 64 KiB of the file when it is opened;
  a mix further on is found when the index is built. Line lengths inside a record must be constant (the
  ``.fai`` format requires it); a violation is an error naming the file. An index written by another tool for
  a file of mixed line endings is found out when a read comes back short, and named.
* Byte-order marks: a UTF-8 byte-order mark (``EF BB BF``, written by some Windows editors and
  spreadsheet exports) is removed: the file is rewritten once without it into the cache, as above. A
  UTF-16 or UTF-32 byte-order mark (the whole file in a 2- or 4-byte encoding) is an error naming it.
* Very long lines (a whole chromosome on one line) work.
* Case is preserved: lower case marks soft-masked repeats, which the batch builder turns into a reduced
  loss weight; inputs are upper-cased there, not here.
* ``N``/``n`` are kept. Windows that are mostly N are skipped by the samplers in `windows`, with counts.
* IUPAC ambiguity codes ``R Y K M S W B D H V`` (either case) are kept as input bytes by default and get
  no loss as targets; ``FastaPolicy(iupac="to_n")`` maps them to ``N``/``n`` (case kept) when read.
* Any other byte (digits, ``-``, ``*``, ``U``, spaces, non-ASCII, ...) raises `FastaFormatError` naming the
  file, the record and the 0-based position. Sequence is validated as it is read, window by window, so
  opening a 3 GB genome costs no scan.
* Empty records (header with no sequence): ``FastaPolicy(empty_record="skip")`` (default) leaves them out
  of `FastaFile.records` with a `FastaWarning` naming them; ``"error"`` raises. Fetching one by name
  still returns an empty array.
* An empty file, a file without any ``>`` record, a binary file, a truncated gzip/bgzip stream, a
  duplicate record name: `FastaFormatError` naming the file (never a bare zlib/EOF traceback).
* Records shorter than a training window are a sampling matter: see `windows`.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyfaidx

from focus_nemo.durable import durable_write_bytes, durable_write_path, publish, seal, staged

logger = logging.getLogger(__name__)

IUPAC_AMBIGUOUS = b"RYKMSWBDHV"
"""Ambiguity codes other than N (upper case; lower case is accepted too)."""
VALID_BASES = b"ACGTN" + IUPAC_AMBIGUOUS
"""Every upper-case byte a sequence may contain."""

_VALID = np.zeros(256, dtype=bool)
_VALID[list(VALID_BASES + VALID_BASES.lower())] = True
_TO_N = np.arange(256, dtype=np.uint8)
_TO_N[list(IUPAC_AMBIGUOUS)] = ord("N")
_TO_N[list(IUPAC_AMBIGUOUS.lower())] = ord("n")

_GZIP_MAGIC = b"\x1f\x8b"
# The 28-byte empty block that ends every complete BGZF file (SAM/BAM specification, section 4.1.2).
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")
_OTHER_COMPRESSION = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"PK\x03\x04": "zip", b"\x28\xb5\x2f\xfd": "zstd"}
_UTF8_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32 (little-endian)", b"\x00\x00\xfe\xff": "UTF-32 (big-endian)",
              b"\xff\xfe": "UTF-16 (little-endian)", b"\xfe\xff": "UTF-16 (big-endian)"}
_HEAD = 1 << 16  # bytes read when a file is opened to see its line endings and byte-order mark
COPY_CHUNK = 1 << 22  # bytes per read when decompressing, scanning or rewriting a file
_NORMALISED = "lf-1"  # stamp of a copy rewritten with LF line endings and no byte-order mark
_READ_CHUNK = 1 << 24  # bases per pyfaidx call when reading a whole record: bounds the temporary strings
_LIST_LIMIT = 40  # record names shown in an error message


class FastaError(ValueError):
    """Base class of this module's errors; the message always names the file."""


class FastaFormatError(FastaError):
    """The file is not usable FASTA (bad bytes, no records, truncated compression, ...)."""


class RecordNotFoundError(FastaError, KeyError):
    """A requested record is not in the file; the message lists the records that are."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FastaWarning(UserWarning):
    """A record was left out under a documented policy (the warning names it)."""


@dataclass(frozen=True)
class FastaPolicy:
    """How to treat legal-but-special content.

    Attributes:
        iupac: ``"keep"`` keeps IUPAC ambiguity codes as input bytes (they get no loss as targets);
            ``"to_n"`` maps them to ``N`` (lower case to ``n``) when read.
        empty_record: ``"skip"`` leaves records with no sequence out of `FastaFile.records` with a
            `FastaWarning`; ``"error"`` raises `FastaFormatError` naming them.
    """

    iupac: str = "keep"
    empty_record: str = "skip"

    def __post_init__(self) -> None:
        if self.iupac not in ("keep", "to_n"):
            raise ValueError(f"FastaPolicy.iupac: {self.iupac!r} is not 'keep' or 'to_n'")
        if self.empty_record not in ("skip", "error"):
            raise ValueError(f"FastaPolicy.empty_record: {self.empty_record!r} is not 'skip' or 'error'")


def canonical_name(name: str) -> str:
    """Alias key of a record name: ``chr`` prefix dropped, mitochondrion spelled ``MT``.

    ``chr1`` and ``1`` -> ``1``; ``chrM``, ``chrMT``, ``M``, ``MT`` -> ``MT``; ``chrX`` -> ``X``. Other names
    (``chr1_KI270706v1_random``, ``NC_001416.1``) keep their spelling apart from the prefix.
    """
    key = name[3:] if name[:3].lower() == "chr" and len(name) > 3 else name
    return "MT" if key.upper() in ("M", "MT") else key


def _writable(folder: Path) -> bool:
    """Writable, and not marked read-only by its mode bits (which root's access() would ignore)."""
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def default_cache_dir(path: str | os.PathLike) -> Path:
    """Where decompressed copies and indexes of `path` go when no ``cache_dir`` is given."""
    env = os.environ.get("FOCUS_NEMO_CACHE")
    if env:
        return Path(env).expanduser()
    folder = Path(path).expanduser().resolve().parent
    if _writable(folder):
        return folder / "focus_nemo_cache"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "focus_nemo"


def _sniff(path: Path) -> str:
    """``plain``, ``bgzf`` or ``gzip`` from the file's first bytes (never from its name)."""
    with open(path, "rb") as f:
        head = f.read(18)
    if head[:2] == _GZIP_MAGIC:
        # BGZF = gzip member with the FEXTRA flag and a 'BC' extra subfield (SAM/BAM specification 4.1).
        if len(head) >= 16 and head[3] & 4 and head[12:14] == b"BC":
            return "bgzf"
        return "gzip"
    for magic, kind in _OTHER_COMPRESSION.items():
        if head.startswith(magic):
            raise FastaFormatError(
                f"{path}: {kind}-compressed; only plain, gzip and bgzip FASTA are supported "
                f"(decompress it, or recompress with `bgzip`)"
            )
    return "plain"


def _is_stale(index: Path, source: Path) -> bool:
    return not index.exists() or index.stat().st_mtime < source.stat().st_mtime


def _open_bytes(path: Path, kind: str):
    return open(path, "rb") if kind == "plain" else gzip.open(path, "rb")


def _corrupt(path: Path, kind: str, e: BaseException) -> FastaFormatError:
    what = "bgzip file" if kind == "bgzf" else "gzip stream"
    return FastaFormatError(f"{path}: {what} is truncated or corrupt ({e}); download it again")


def _head(path: Path, kind: str) -> bytes:
    """The first `_HEAD` bytes of the file's text (decompressed)."""
    try:
        with _open_bytes(path, kind) as f:
            return f.read(_HEAD)
    except (EOFError, zlib.error, gzip.BadGzipFile, struct.error) as e:
        raise _corrupt(path, kind, e) from None


def _check_encoding(path: Path, head: bytes) -> None:
    """A UTF-16/UTF-32 byte-order mark: the file is not ASCII text; say so by name."""
    for mark, encoding in _WIDE_BOMS.items():
        if head.startswith(mark):
            raise FastaFormatError(
                f"{path}: starts with a {encoding} byte-order mark ({mark.hex(' ').upper()}): the file is "
                f"{encoding.split()[0]} text, not ASCII; save it as plain text (ASCII or UTF-8)"
            )


def _head_rewrite_reason(head: bytes, complete: bool) -> str | None:
    """Why the file must be rewritten before pyfaidx can index it, judged from its first bytes: a UTF-8
    byte-order mark or CR (classic Mac OS) line endings; None when it can be read as it is."""
    reasons = []
    if head.startswith(_UTF8_BOM):
        reasons.append("a UTF-8 byte-order mark")
    body = head if complete or not head.endswith(b"\r") else head[:-1]  # the next byte may be its LF
    if body.count(b"\r") > body.count(b"\r\n"):
        reasons.append("CR (classic Mac OS) line endings")
    return " and ".join(reasons) or None


def _line_ending_counts(f) -> tuple[int, int, int]:
    """(CRLF, lone CR, lone LF) line ends in the binary stream `f`."""
    crlf = cr = lf = 0
    carry = b""
    while True:
        chunk = f.read(COPY_CHUNK)
        if not chunk:
            break
        chunk = carry + chunk
        carry = b"\r" if chunk.endswith(b"\r") else b""
        if carry:
            chunk = chunk[:-1]
        pairs = chunk.count(b"\r\n")
        crlf += pairs
        cr += chunk.count(b"\r") - pairs
        lf += chunk.count(b"\n") - pairs
    return crlf, cr + len(carry), lf


def _scan_rewrite_reason(path: Path, kind: str, shown: Path) -> str | None:
    """Read the whole file once (only when its index is built) for line endings pyfaidx cannot index: CR
    line ends, or a mix of kinds. Returns why it must be rewritten, or None."""
    try:
        with _open_bytes(path, kind) as f:
            crlf, cr, lf = _line_ending_counts(f)
    except (EOFError, zlib.error, gzip.BadGzipFile, struct.error) as e:
        raise _corrupt(shown, kind, e) from None
    kinds = [name for name, n in (("LF", lf), ("CRLF", crlf), ("CR", cr)) if n]
    if cr == 0 and len(kinds) < 2:
        return None
    counts = ", ".join(f"{n:,} {name}" for name, n in (("LF", lf), ("CRLF", crlf), ("CR", cr)) if n)
    return ("CR (classic Mac OS) line endings" if kinds == ["CR"] else f"mixed line endings ({counts})")


def _copy_location(path: Path, cache_dir: Path) -> tuple[Path, Path]:
    """(copy, stamp file) of the decompressed and/or rewritten copy of `path` in `cache_dir`."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    low = path.name.lower()
    name = path.name[:-3] if low.endswith(".gz") else path.name[:-4] if low.endswith(".bgz") else path.name
    if not low.endswith((".gz", ".bgz")) and _sniff(path) != "plain":
        name = path.name + ".fa"
    folder = cache_dir / f"{name}-{digest}"
    return folder / name, folder / "source.json"


def _fresh_copy(path: Path, cache_dir: Path, rewritten: bool) -> Path | None:
    """The cached copy of `path`, when it was made from the source as it is now (same path, size, mtime)
    and, if `rewritten`, with LF line endings and no byte-order mark (such a copy also serves as a plain
    decompressed one)."""
    target, stamp_file = _copy_location(path, cache_dir)
    try:
        stamp = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        return None  # missing or unreadable stamp: make the copy again
    st = path.stat()
    fresh = (target.exists() and isinstance(stamp, dict) and stamp.get("source") == str(path)
             and stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns
             and (not rewritten or stamp.get("rewritten") == _NORMALISED))
    return target if fresh else None


def _cached_copy(path: Path, cache_dir: Path, kind: str, rewrite: str | None) -> Path:
    """Decompressed copy of the gzip/bgzip file `path`, or, when `rewrite` says why, a copy of any file
    with LF line endings and no UTF-8 byte-order mark; made once in `cache_dir`, reused while fresh."""
    found = _fresh_copy(path, cache_dir, rewritten=rewrite is not None)
    if found is not None:
        return found
    target, stamp_file = _copy_location(path, cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / "lock"):  # ranks started together: one writes, the others wait and reuse
        if _fresh_copy(path, cache_dir, rewritten=rewrite is not None) is None:
            _write_copy(path, kind, target, stamp_file, rewrite)
    return target


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Advisory inter-process lock (POSIX); elsewhere a no-op, and the atomic rename keeps results correct."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_copy(path: Path, kind: str, target: Path, stamp_file: Path, rewrite: str | None) -> None:
    if rewrite is None:
        logger.info(
            "%s is plain gzip (not bgzip), which has no random access: decompressing it once to %s "
            "(reused by later runs; recompress with `bgzip` to skip this)", path, target,
        )
    else:
        logger.info("%s has %s: rewriting it once (LF line endings, no byte-order mark) to %s (reused by later "
                    "runs; convert the file with `dos2unix`/`mac2unix` to skip this)", path, rewrite, target)
    st = path.stat()

    def copy(tmp: Path) -> None:
        with _open_bytes(path, kind) as src, open(tmp, "wb") as dst:
            if rewrite is None:
                shutil.copyfileobj(src, dst, length=COPY_CHUNK)
            else:
                _copy_normalised(src, dst)

    try:
        durable_write_path(target, copy)
    except (EOFError, zlib.error, gzip.BadGzipFile, struct.error) as e:
        raise _corrupt(path, kind, e) from None
    stamp = {"source": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if rewrite is not None:
        stamp["rewritten"] = _NORMALISED
    durable_write_bytes(stamp_file, json.dumps(stamp).encode())


def _copy_normalised(src, dst) -> None:
    """Copy with every CRLF and lone CR turned into LF and a leading UTF-8 byte-order mark removed."""
    carry = b""
    first = True
    while True:
        chunk = src.read(COPY_CHUNK)  # a whole chunk unless the stream ends, so the mark is in the first
        if not chunk:
            break
        if first:
            chunk, first = chunk.removeprefix(_UTF8_BOM), False
        chunk = carry + chunk
        carry = b"\r" if chunk.endswith(b"\r") else b""  # its LF may open the next chunk
        if carry:
            chunk = chunk[:-1]
        dst.write(chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
    if carry:
        dst.write(b"\n")


def _check_bgzf_complete(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - len(_BGZF_EOF)))
        tail = f.read()
    if tail != _BGZF_EOF:
        raise FastaFormatError(
            f"{path}: bgzip file is truncated (no BGZF end-of-file block); download or compress it again"
        )


def _index_paths(path: Path, bgzf: bool, cache_dir: Path) -> tuple[Path, Path | None]:
    """Where the ``.fai`` (and ``.gzi``) live: next to the file, else in the cache when they must be built
    and the file's folder is read-only."""
    fai = path.with_name(path.name + ".fai")
    gzi = path.with_name(path.name + ".gzi") if bgzf else None
    fresh = not _is_stale(fai, path) and (gzi is None or not _is_stale(gzi, path))
    if fresh or _writable(path.parent):
        return fai, gzi
    folder = cache_dir / "index" / hashlib.sha1(str(path).encode()).hexdigest()[:10]
    return folder / fai.name, (folder / gzi.name if gzi else None)


def _build_index(path: Path, fai: Path, gzi: Path | None, shown: Path) -> None:
    """Write the index under temporary names and rename, so a reader never sees a partial index.

    `shown` is the file named in errors: the user's file, also when `path` is its decompressed copy.
    """
    fai.parent.mkdir(parents=True, exist_ok=True)
    try:
        with staged(fai) as tmp_fai, (staged(gzi) if gzi else contextlib.nullcontext()) as tmp_gzi:
            for tmp in (tmp_fai, tmp_gzi):  # pyfaidx would read an existing index instead of building one
                if tmp is not None:
                    tmp.unlink()
            pyfaidx.Faidx(str(path), indexname=str(tmp_fai), gzi_indexname=str(tmp_gzi) if tmp_gzi else None,
                          as_raw=True, build_index=True, rebuild=True).close()
            if tmp_gzi is not None:
                seal(tmp_gzi)
                publish(tmp_gzi, gzi)
            seal(tmp_fai)
            publish(tmp_fai, fai)
    except pyfaidx.FastaIndexingError as e:
        raise FastaFormatError(f"{shown}: not a usable FASTA file: {_own_name(str(e), path, shown)}") from None
    except UnicodeDecodeError:
        raise FastaFormatError(f"{shown}: not a FASTA file: {_first_non_text(path)}") from None
    except RuntimeError as e:  # pyfaidx's "unhandled" indexing case: several blank lines inside a record
        m = re.search(r"at entry (\S+?)Please", str(e))
        where = f"record {m.group(1)!r}" if m else "a record"
        raise FastaFormatError(
            f"{shown}: not a usable FASTA file: blank lines or uneven line lengths in {where}"
        ) from None
    except ValueError as e:  # pyfaidx reports duplicate record names as ValueError
        raise FastaFormatError(f"{shown}: {e}") from None
    except (EOFError, zlib.error, struct.error) as e:
        raise FastaFormatError(f"{shown}: compressed stream is truncated or corrupt ({e})") from None
    except OSError as e:  # pyfaidx turns any I/O error while indexing into "may not be writable"
        raise OSError(f"{shown}: could not write its index {fai} ({e}); pass a writable cache_dir") from None


class FastaFile:
    """One FASTA file with random access to every record, sequence returned as case-preserving bytes.

    Coordinates are 0-based, half-open (Python slices): ``fetch("chr1", 0, 10)`` is the first ten bases.

    Args:
        path: FASTA file (plain text, gzip or bgzip; the kind is detected from the bytes, not the name).
        policy: IUPAC and empty-record policy (see the module docstring).
        cache_dir: where a plain-gzip file is decompressed and where indexes go when the file's folder is
            read-only; default `default_cache_dir`.

    Raises:
        FileNotFoundError: `path` does not exist.
        FastaFormatError: the file is not usable FASTA; the message names it and says why.
    """

    def __init__(self, path: str | os.PathLike, policy: FastaPolicy | None = None,
                 cache_dir: str | os.PathLike | None = None) -> None:
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file():
            raise FileNotFoundError(f"FASTA file not found: {path}")
        self.policy = policy or FastaPolicy()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(self.path)
        self.kind = _sniff(self.path)
        if self.path.stat().st_size == 0:
            raise FastaFormatError(f"{self.path}: file is empty (no FASTA records)")
        if self.kind == "bgzf":
            _check_bgzf_complete(self.path)
        if self.kind == "plain" and self.path.name.lower().endswith((".gz", ".bgz")):
            raise FastaFormatError(f"{self.path}: named like a gzip file but is not gzip-compressed; rename it")
        head = _head(self.path, self.kind)
        _check_encoding(self.path, head)
        # Line endings and byte-order mark (module docstring): a file pyfaidx cannot index as it is is read
        # through a rewritten copy; one found so by an earlier full scan has its copy already.
        rewrite = _head_rewrite_reason(head, complete=len(head) < _HEAD)
        read_path = self._source_copy(rewrite)
        self._set_read_path(read_path)
        if self._index_stale():
            if read_path != _fresh_copy(self.path, self.cache_dir, rewritten=True):  # not yet rewritten: scan
                rewrite = _scan_rewrite_reason(read_path, "bgzf" if self._bgzf else "plain", self.path)
                if rewrite is not None:
                    self._set_read_path(_cached_copy(self.path, self.cache_dir, self.kind, rewrite))
            if self._index_stale():
                _build_index(self.read_path, self._fai, self._gzi, self.path)
        self._fa: pyfaidx.Faidx | None = None
        self._pid = -1
        fa = self._handle()
        self.lengths: dict[str, int] = {name: int(rec.rlen) for name, rec in fa.index.items()}
        if not self.lengths:
            raise FastaFormatError(f"{self.path}: no FASTA records (no line starts with '>')")
        self._aliases: dict[str, list[str]] = {}
        for name in self.lengths:
            self._aliases.setdefault(canonical_name(name), []).append(name)

    def _source_copy(self, rewrite: str | None) -> Path:
        """The file pyfaidx reads: the user's file, or its (decompressed and/or rewritten) copy in the cache."""
        if rewrite is not None:
            return _cached_copy(self.path, self.cache_dir, self.kind, rewrite)
        earlier = _fresh_copy(self.path, self.cache_dir, rewritten=True)
        if earlier is not None:
            return earlier
        if self.kind == "gzip" or (self.kind == "bgzf" and not self.path.name.lower().endswith((".gz", ".bgz"))):
            # pyfaidx picks its bgzip reader by file name; gzip (and oddly named bgzip) go through the cache.
            return _cached_copy(self.path, self.cache_dir, self.kind, None)
        return self.path

    def _set_read_path(self, read_path: Path) -> None:
        self.read_path = read_path
        self._bgzf = self.kind == "bgzf" and read_path == self.path
        if read_path != self.path and read_path.stat().st_size == 0:
            after = "decompression" if self.kind != "plain" else "removing its byte-order mark"
            raise FastaFormatError(f"{self.path}: file is empty after {after} (no FASTA records)")
        self._fai, self._gzi = _index_paths(read_path, self._bgzf, self.cache_dir)

    def _index_stale(self) -> bool:
        return _is_stale(self._fai, self.read_path) or (self._gzi is not None and _is_stale(self._gzi, self.read_path))

    # -- handle management: one open file per process, so forked DataLoader workers never share an offset.
    def _handle(self) -> pyfaidx.Faidx:
        if self._fa is None or self._pid != os.getpid():
            try:
                self._fa = pyfaidx.Faidx(
                    str(self.read_path), indexname=str(self._fai),
                    gzi_indexname=str(self._gzi) if self._gzi else None,
                    as_raw=True, strict_bounds=True, build_index=False, rebuild=False,
                )
            except ValueError as e:  # duplicate names are found when the index is read
                raise FastaFormatError(f"{self.path}: {e}") from None
            self._pid = os.getpid()
        return self._fa

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fa"], state["_pid"] = None, -1  # reopened lazily in the receiving process
        return state

    def close(self) -> None:
        """Close the underlying file (it reopens on the next read)."""
        if self._fa is not None and self._pid == os.getpid():
            self._fa.close()
        self._fa = None

    def __enter__(self) -> FastaFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FastaFile({str(self.path)!r}, {len(self.lengths)} records)"

    # -- names
    @property
    def names(self) -> list[str]:
        """Record names in file order (including empty records)."""
        return list(self.lengths)

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
        except RecordNotFoundError:
            return False
        return True

    def resolve(self, name: str) -> str:
        """The file's own name for `name` (exact match first, then the ``chr``/``MT`` aliases).

        Raises:
            RecordNotFoundError: no such record, or the alias matches several; lists the records.
        """
        if name in self.lengths:
            return name
        hits = self._aliases.get(canonical_name(name), [])
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise RecordNotFoundError(f"{self.path}: record name {name!r} is ambiguous: matches {hits}")
        raise RecordNotFoundError(f"{self.path}: no record {name!r}; {_describe_names(self.names)}")

    def length(self, name: str) -> int:
        """Number of bases in record `name` (aliases accepted)."""
        return self.lengths[self.resolve(name)]

    def records(self, names: Iterable[str] | None = None) -> list[str]:
        """Resolved record names, `names` or all, with empty records handled per `FastaPolicy.empty_record`."""
        # dict.fromkeys: an alias and its name listed together ("chr1", "1") count once
        resolved = list(dict.fromkeys(self.resolve(n) for n in (self.names if names is None else names)))
        empty = [n for n in resolved if self.lengths[n] == 0]
        if empty:
            msg = f"{self.path}: empty record(s) with no sequence: {empty}"
            if self.policy.empty_record == "error":
                raise FastaFormatError(msg)
            warnings.warn(msg + " (skipped: FastaPolicy.empty_record='skip')", FastaWarning, stacklevel=2)
        return [n for n in resolved if self.lengths[n] > 0]

    # -- sequence
    def fetch(self, name: str, start: int = 0, end: int | None = None) -> np.ndarray:
        """Bases ``[start, end)`` of record `name` as a new ``np.uint8`` array, case preserved.

        Raises:
            RecordNotFoundError: unknown record.
            IndexError: the interval is outside the record.
            FastaFormatError: the interval holds a byte that is not a base or IUPAC code (message gives
                file, record and 0-based position), or the compressed stream is corrupt there.
        """
        rec = self.resolve(name)
        n = self.lengths[rec]
        end = n if end is None else end
        if not 0 <= start <= end <= n:
            raise IndexError(f"{self.path}: interval [{start}, {end}) outside record {rec!r} of length {n}")
        if start == end:
            return np.zeros(0, dtype=np.uint8)
        text = self._fetch_text(rec, start, end)
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError as e:
            raise self._bad_byte(rec, start + e.start, text[e.start]) from None
        if len(raw) != end - start:  # only possible when the index no longer matches the file
            raise FastaFormatError(
                f"{self.path}: record {rec!r} [{start}, {end}) read {len(raw)} bases: its index {self._fai} does "
                f"not describe the file (the file changed after the index was written, or another tool wrote the "
                f"index for a file of mixed line endings); delete the index and open the file again"
            )
        arr = np.frombuffer(raw, dtype=np.uint8).copy()
        bad = np.flatnonzero(~_VALID[arr])
        if bad.size:
            i = int(bad[0])
            raise self._bad_byte(rec, start + i, chr(arr[i]))
        if self.policy.iupac == "to_n":
            arr = _TO_N[arr]
        return arr

    def read(self, name: str) -> np.ndarray:
        """The whole record as ``np.uint8`` (read in chunks, validated like `fetch`)."""
        rec = self.resolve(name)
        n = self.lengths[rec]
        out = np.empty(n, dtype=np.uint8)
        for s in range(0, n, _READ_CHUNK):
            e = min(n, s + _READ_CHUNK)
            out[s:e] = self.fetch(rec, s, e)
        return out

    def base_counts(self, name: str) -> dict[str, int]:
        """Composition of a record: ``ACGT``, ``acgt`` (soft-masked), ``N`` (either case), ``iupac`` (other
        ambiguity codes, either case), ``total``. Reads the whole record."""
        counts = np.zeros(256, dtype=np.int64)
        rec = self.resolve(name)
        n = self.lengths[rec]
        for s in range(0, n, _READ_CHUNK):
            counts += np.bincount(self.fetch(rec, s, min(n, s + _READ_CHUNK)), minlength=256)
        return {
            "ACGT": int(counts[list(b"ACGT")].sum()),
            "acgt": int(counts[list(b"acgt")].sum()),
            "N": int(counts[ord("N")] + counts[ord("n")]),
            "iupac": int(counts[list(IUPAC_AMBIGUOUS + IUPAC_AMBIGUOUS.lower())].sum()),
            "total": n,
        }

    def _fetch_text(self, rec: str, start: int, end: int) -> str:
        try:
            return self._handle().fetch(rec, start + 1, end)
        except UnicodeDecodeError:
            pos = self._locate_undecodable(rec, start, end)
            raise self._bad_byte(rec, pos, "a non-ASCII byte") from None
        except (EOFError, zlib.error, struct.error, OSError, ValueError, AssertionError) as e:
            raise FastaFormatError(
                f"{self.path}: could not read record {rec!r} [{start}, {end}): compressed data corrupt or "
                f"truncated ({type(e).__name__}: {e})"
            ) from None

    def _locate_undecodable(self, rec: str, start: int, end: int) -> int:
        """Bisect to the first base whose bytes pyfaidx cannot decode (a handful of small reads)."""
        fa = self._handle()
        lo, hi = start, end
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                fa.fetch(rec, lo + 1, mid)
                lo = mid
            except UnicodeDecodeError:
                hi = mid
        return lo

    def _bad_byte(self, rec: str, pos: int, what: str) -> FastaFormatError:
        shown = what if len(what) > 1 else repr(what)
        return FastaFormatError(
            f"{self.path}: record {rec!r} position {pos} (0-based): {shown} is not a DNA base or IUPAC code "
            f"(allowed: {VALID_BASES.decode()} in either case)"
        )


def _first_non_text(path: Path) -> str:
    """Where the first byte outside ASCII is (line and record), for the error message only."""
    opener = gzip.open if _sniff(path) != "plain" else open
    record, line_no = None, 0
    with opener(path, "rb") as f:
        for line_no, line in enumerate(f, start=1):  # noqa: B007 - line_no is used after the loop
            if line.startswith(b">"):
                record = line[1:].split(maxsplit=1)[0].decode("ascii", "replace") if line[1:].strip() else ""
            bad = next((i for i, b in enumerate(line) if b >= 128), None)
            if bad is not None:
                where = f"record {record!r}" if record is not None else "before the first record"
                return f"non-ASCII byte {line[bad]:#04x} at line {line_no}, column {bad + 1} ({where})"
    return "bytes that are not text"


def _own_name(message: str, path: Path, shown: Path) -> str:
    """pyfaidx names the file it indexed; name the user's file instead of a cached copy."""
    return message.replace(str(path), str(shown)) if path != shown else message


def _describe_names(names: Sequence[str]) -> str:
    if not names:
        return "the file has no records"
    shown = ", ".join(names[:_LIST_LIMIT])
    more = f", ... ({len(names) - _LIST_LIMIT} more)" if len(names) > _LIST_LIMIT else ""
    return f"available records ({len(names)}): {shown}{more}"


class Genome:
    """Several FASTA files seen as one set of records (e.g. per-chromosome ``chr1.fa.gz`` downloads).

    Args:
        paths: one path, a directory or a glob pattern (taking the files named ``.fa``, ``.fasta``, ``.fna``,
            ``.fas``, ``.fsa``, optionally with ``.gz``/``.bgz``; index files are ignored), or a list of those.
        policy: passed to every `FastaFile`.
        cache_dir: passed to every `FastaFile`.

    Raises:
        FastaError: no file matched, or two files hold records with the same (aliased) name.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], policy: FastaPolicy | None = None,
                 cache_dir: str | os.PathLike | None = None) -> None:
        self.files = [FastaFile(p, policy, cache_dir) for p in _expand_paths(paths)]
        self.policy = policy or FastaPolicy()
        self._owner: dict[str, FastaFile] = {}
        seen: dict[str, str] = {}
        for f in self.files:
            for name in f.names:
                key = canonical_name(name)
                if key in seen:
                    raise FastaError(f"record {name!r} of {f.path} clashes with {seen[key]}")
                seen[key] = f"record {name!r} of {f.path}"
                self._owner[name] = f

    def __repr__(self) -> str:
        return f"Genome({[str(f.path) for f in self.files]})"

    @property
    def names(self) -> list[str]:
        """Record names of every file, in order."""
        return list(self._owner)

    @property
    def lengths(self) -> dict[str, int]:
        """Record name -> length."""
        return {n: f.lengths[n] for n, f in self._owner.items()}

    def __contains__(self, name: str) -> bool:
        return any(name in f for f in self.files)

    def file_of(self, name: str) -> FastaFile:
        """The file that holds record `name` (aliases accepted)."""
        return self._owner[self.resolve(name)]

    def resolve(self, name: str) -> str:
        """Like `FastaFile.resolve`, over every file."""
        if len(self.files) == 1:
            return self.files[0].resolve(name)
        for f in self.files:
            if name in f:
                return f.resolve(name)
        where = ", ".join(str(f.path) for f in self.files)
        raise RecordNotFoundError(f"no record {name!r} in {where}; {_describe_names(self.names)}")

    def length(self, name: str) -> int:
        return self.file_of(name).length(name)

    def records(self, names: Iterable[str] | None = None) -> list[str]:
        """Like `FastaFile.records`, over every file."""
        if names is None:
            return [n for f in self.files for n in f.records()]
        return list(dict.fromkeys(r for n in names for r in self.file_of(n).records([n])))

    def fetch(self, name: str, start: int = 0, end: int | None = None) -> np.ndarray:
        return self.file_of(name).fetch(name, start, end)

    def read(self, name: str) -> np.ndarray:
        return self.file_of(name).read(name)

    def base_counts(self, name: str) -> dict[str, int]:
        return self.file_of(name).base_counts(name)

    def close(self) -> None:
        for f in self.files:
            f.close()


_FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".fsa")


def _expand_paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out: list[Path] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and _is_fasta_name(q.name))
            if not found:
                raise FastaError(f"{p}: directory holds no FASTA files ({', '.join(_FASTA_SUFFIXES)}, optionally .gz)")
            out += found
        elif re.search(r"[*?\[]", str(item)):
            found = sorted(Path(q) for q in glob.glob(str(p)) if _is_fasta_name(q))
            if not found:
                kinds = ", ".join(_FASTA_SUFFIXES)
                raise FastaError(f"{item}: pattern matches no FASTA file ({kinds}, optionally .gz)")
            out += found
        else:
            out.append(p)
    if not out:
        raise FastaError("no FASTA path given")
    return out


def _is_fasta_name(name: str) -> bool:
    low = name.lower()
    for z in (".gz", ".bgz"):
        if low.endswith(z):
            low = low[: -len(z)]
    return low.endswith(_FASTA_SUFFIXES)


def open_genome(paths: str | os.PathLike | Sequence[str | os.PathLike], policy: FastaPolicy | None = None,
                cache_dir: str | os.PathLike | None = None) -> Genome:
    """Open one or several FASTA files as a `Genome` (see its arguments)."""
    return Genome(paths, policy, cache_dir)
