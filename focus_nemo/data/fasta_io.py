"""How a FASTA file on disk becomes readable (see `focus_nemo.data.fasta` for the policies): its compression
is sniffed (`sniff`), its encoding and line endings checked (`check_encoding`, `head_rewrite_reason`,
`scan_rewrite_reason`), a plain-gzip file or one that needs rewriting is copied once into the cache
directory (`cached_copy`, under a file lock, written durably), and the ``.fai`` / ``.gzi`` index is built
next to the file or in the cache (`index_paths`, `build_index`)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyfaidx

from focus_nemo.data.fasta_errors import FastaFormatError
from focus_nemo.durable import durable_write_bytes, durable_write_path, publish, seal, staged

logger = logging.getLogger("focus_nemo.data.fasta")  # one logger for FASTA reading


_GZIP_MAGIC = b"\x1f\x8b"


# The 28-byte empty block that ends every complete BGZF file (SAM/BAM specification, section 4.1.2).
_BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


_OTHER_COMPRESSION = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"PK\x03\x04": "zip", b"\x28\xb5\x2f\xfd": "zstd"}


_UTF8_BOM = b"\xef\xbb\xbf"


_WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32 (little-endian)", b"\x00\x00\xfe\xff": "UTF-32 (big-endian)",
              b"\xff\xfe": "UTF-16 (little-endian)", b"\xfe\xff": "UTF-16 (big-endian)"}


HEAD_BYTES = 1 << 16  # bytes read when a file is opened to see its line endings and byte-order mark


COPY_CHUNK = 1 << 22  # bytes per read when decompressing, scanning or rewriting a file


_NORMALISED = "lf-1"  # stamp of a copy rewritten with LF line endings and no byte-order mark


def writable(folder: Path) -> bool:
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
    if writable(folder):
        return folder / "focus_nemo_cache"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "focus_nemo"


def sniff(path: Path) -> str:
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


def is_stale(index: Path, source: Path) -> bool:
    return not index.exists() or index.stat().st_mtime < source.stat().st_mtime


def _open_bytes(path: Path, kind: str):
    return open(path, "rb") if kind == "plain" else gzip.open(path, "rb")


def _corrupt(path: Path, kind: str, e: BaseException) -> FastaFormatError:
    what = "bgzip file" if kind == "bgzf" else "gzip stream"
    return FastaFormatError(f"{path}: {what} is truncated or corrupt ({e}); download it again")


def read_head(path: Path, kind: str) -> bytes:
    """The first `HEAD_BYTES` bytes of the file's text (decompressed)."""
    try:
        with _open_bytes(path, kind) as f:
            return f.read(HEAD_BYTES)
    except (EOFError, zlib.error, gzip.BadGzipFile, struct.error) as e:
        raise _corrupt(path, kind, e) from None


def check_encoding(path: Path, head: bytes) -> None:
    """A UTF-16/UTF-32 byte-order mark: the file is not ASCII text; say so by name."""
    for mark, encoding in _WIDE_BOMS.items():
        if head.startswith(mark):
            raise FastaFormatError(
                f"{path}: starts with a {encoding} byte-order mark ({mark.hex(' ').upper()}): the file is "
                f"{encoding.split()[0]} text, not ASCII; save it as plain text (ASCII or UTF-8)"
            )


def head_rewrite_reason(head: bytes, complete: bool) -> str | None:
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


def scan_rewrite_reason(path: Path, kind: str, shown: Path) -> str | None:
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
    if not low.endswith((".gz", ".bgz")) and sniff(path) != "plain":
        name = path.name + ".fa"
    folder = cache_dir / f"{name}-{digest}"
    return folder / name, folder / "source.json"


def fresh_copy(path: Path, cache_dir: Path, rewritten: bool) -> Path | None:
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


def cached_copy(path: Path, cache_dir: Path, kind: str, rewrite: str | None) -> Path:
    """Decompressed copy of the gzip/bgzip file `path`, or, when `rewrite` says why, a copy of any file
    with LF line endings and no UTF-8 byte-order mark; made once in `cache_dir`, reused while fresh."""
    found = fresh_copy(path, cache_dir, rewritten=rewrite is not None)
    if found is not None:
        return found
    target, stamp_file = _copy_location(path, cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / "lock"):  # ranks started together: one writes, the others wait and reuse
        if fresh_copy(path, cache_dir, rewritten=rewrite is not None) is None:
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


def check_bgzf_complete(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - len(_BGZF_EOF)))
        tail = f.read()
    if tail != _BGZF_EOF:
        raise FastaFormatError(
            f"{path}: bgzip file is truncated (no BGZF end-of-file block); download or compress it again"
        )


def index_paths(path: Path, bgzf: bool, cache_dir: Path) -> tuple[Path, Path | None]:
    """Where the ``.fai`` (and ``.gzi``) live: next to the file, else in the cache when they must be built
    and the file's folder is read-only."""
    fai = path.with_name(path.name + ".fai")
    gzi = path.with_name(path.name + ".gzi") if bgzf else None
    fresh = not is_stale(fai, path) and (gzi is None or not is_stale(gzi, path))
    if fresh or writable(path.parent):
        return fai, gzi
    folder = cache_dir / "index" / hashlib.sha1(str(path).encode()).hexdigest()[:10]
    return folder / fai.name, (folder / gzi.name if gzi else None)


def build_index(path: Path, fai: Path, gzi: Path | None, shown: Path) -> None:
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


def _first_non_text(path: Path) -> str:
    """Where the first byte outside ASCII is (line and record), for the error message only."""
    opener = gzip.open if sniff(path) != "plain" else open
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
