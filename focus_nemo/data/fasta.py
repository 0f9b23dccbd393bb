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

import glob
import logging
import os
import re
import struct
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyfaidx

from focus_nemo.data.fasta_errors import FastaError, FastaFormatError, FastaWarning, RecordNotFoundError
from focus_nemo.data.fasta_io import (
    HEAD_BYTES,
    build_index,
    cached_copy,
    check_bgzf_complete,
    check_encoding,
    default_cache_dir,
    fresh_copy,
    head_rewrite_reason,
    index_paths,
    is_stale,
    read_head,
    scan_rewrite_reason,
    sniff,
)

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


_READ_CHUNK = 1 << 24  # bases per pyfaidx call when reading a whole record: bounds the temporary strings


_LIST_LIMIT = 40  # record names shown in an error message


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
        self.kind = sniff(self.path)
        if self.path.stat().st_size == 0:
            raise FastaFormatError(f"{self.path}: file is empty (no FASTA records)")
        if self.kind == "bgzf":
            check_bgzf_complete(self.path)
        if self.kind == "plain" and self.path.name.lower().endswith((".gz", ".bgz")):
            raise FastaFormatError(f"{self.path}: named like a gzip file but is not gzip-compressed; rename it")
        head = read_head(self.path, self.kind)
        check_encoding(self.path, head)
        # Line endings and byte-order mark (module docstring): a file pyfaidx cannot index as it is is read
        # through a rewritten copy; one found so by an earlier full scan has its copy already.
        rewrite = head_rewrite_reason(head, complete=len(head) < HEAD_BYTES)
        read_path = self._source_copy(rewrite)
        self._set_read_path(read_path)
        if self._index_stale():
            if read_path != fresh_copy(self.path, self.cache_dir, rewritten=True):  # not yet rewritten: scan
                rewrite = scan_rewrite_reason(read_path, "bgzf" if self._bgzf else "plain", self.path)
                if rewrite is not None:
                    self._set_read_path(cached_copy(self.path, self.cache_dir, self.kind, rewrite))
            if self._index_stale():
                build_index(self.read_path, self._fai, self._gzi, self.path)
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
            return cached_copy(self.path, self.cache_dir, self.kind, rewrite)
        earlier = fresh_copy(self.path, self.cache_dir, rewritten=True)
        if earlier is not None:
            return earlier
        if self.kind == "gzip" or (self.kind == "bgzf" and not self.path.name.lower().endswith((".gz", ".bgz"))):
            # pyfaidx picks its bgzip reader by file name; gzip (and oddly named bgzip) go through the cache.
            return cached_copy(self.path, self.cache_dir, self.kind, None)
        return self.path

    def _set_read_path(self, read_path: Path) -> None:
        self.read_path = read_path
        self._bgzf = self.kind == "bgzf" and read_path == self.path
        if read_path != self.path and read_path.stat().st_size == 0:
            after = "decompression" if self.kind != "plain" else "removing its byte-order mark"
            raise FastaFormatError(f"{self.path}: file is empty after {after} (no FASTA records)")
        self._fai, self._gzi = index_paths(read_path, self._bgzf, self.cache_dir)

    def _index_stale(self) -> bool:
        return is_stale(self._fai, self.read_path) or (self._gzi is not None and is_stale(self._gzi, self.read_path))

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


__all__ = ["IUPAC_AMBIGUOUS", "VALID_BASES", "FastaError", "FastaFile", "FastaFormatError", "FastaPolicy",
           "FastaWarning", "Genome", "RecordNotFoundError", "canonical_name", "default_cache_dir", "open_genome"]
