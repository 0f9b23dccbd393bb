"""Durable file writes: the one way this package creates or replaces a file that must never be seen half
written.

A write goes to a temporary file in the target's directory (``.<name>.<pid>@<host>.<random>.tmp``, with
the mode an ordinary new file gets), is flushed to disk (fsync), hashed (SHA-256) and renamed over the
target; the directory entry is then synced too. A reader, or a process killed at any instant, sees the
old file or the new one, never a partial one. Temporary files name their writer, so only those of
writers that have exited are ever cleaned up (`remove_stale_temp_files`).

* `durable_write(path, write)`: ``write(binary file)`` fills the file; returns its SHA-256.
* `durable_write_bytes(path, data)`: the same for bytes in memory.
* `durable_write_path(path, write)`: ``write(temporary path)`` for writers that want a path (safetensors,
  zip archives, index builders).
* `staged(path)` / `seal` / `publish`: the three steps apart, for several files committed together.
* `scratch_file(prefix, directory)`: a private temporary file, deleted on exit.
* `durable_write_dir(path, write)`: a whole directory, written beside its place and renamed into it (an
  existing one is replaced only once the new one is complete).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")


def sha256_file(path: str | Path, bufsize: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def default_file_mode() -> int:
    """Permission bits an ordinary new file gets under the current umask (temporary files start 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(directory: str | Path) -> None:
    """Make renames inside `directory` durable (best effort: some file systems refuse it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def writer_tag() -> str:
    """``<pid>@<host>``: the process that owns a temporary file (host names are [A-Za-z0-9.-])."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"
    return f"{os.getpid()}@{host}"


def temp_beside(path: str | Path) -> Path:
    """An empty temporary file next to `path` (``.<name>.<pid>@<host>.<random>.tmp``), readable like any
    other new file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{writer_tag()}.", suffix=".tmp")
    try:
        with contextlib.suppress(OSError):  # best effort: some file systems have no mode bits
            os.fchmod(fd, default_file_mode())
    finally:
        os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def staged(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; it is removed on exit unless it was published."""
    tmp = temp_beside(path)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def seal(tmp: str | Path) -> str:
    """Give a written temporary file the mode of an ordinary new file (writers that create their own file,
    like safetensors, leave 0600) and flush it to disk; returns its SHA-256."""
    with open(tmp, "rb+") as f:
        with contextlib.suppress(OSError):  # best effort: some file systems have no mode bits
            os.fchmod(f.fileno(), default_file_mode())
        os.fsync(f.fileno())
    return sha256_file(tmp)


def publish(tmp: str | Path, path: str | Path) -> None:
    """Rename a sealed temporary file over `path` and make the rename durable."""
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


def durable_write_path(path: str | Path, write: Callable[[Path], object]) -> str:
    """Create or replace `path` with what ``write(temporary path)`` writes; returns the SHA-256."""
    with staged(path) as tmp:
        write(tmp)
        digest = seal(tmp)
        publish(tmp, path)
    return digest


def durable_write(path: str | Path, write: Callable[[BinaryIO], object]) -> str:
    """Create or replace `path` with what ``write(binary file)`` writes; returns the SHA-256."""

    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)

    return durable_write_path(path, fill)


def durable_write_bytes(path: str | Path, data: bytes) -> str:
    """Create or replace `path` with `data`; returns the SHA-256."""
    return durable_write(path, lambda f: f.write(data))


@contextlib.contextmanager
def scratch_file(prefix: str, directory: str | Path | None = None) -> Iterator[Path]:
    """A private temporary file (not a durable output: nothing is renamed into place) named ``<prefix>...``
    in `directory`, or in the system's temporary directory when `directory` is None or read-only; deleted
    on exit (data still mapped by a reader stays alive until it is released)."""
    try:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=directory)
    except OSError:
        if directory is None:
            raise
        fd, name = tempfile.mkstemp(prefix=prefix)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def durable_write_dir(path: str | Path, write: Callable[[Path], T]) -> T:
    """Create or replace the directory `path` with what ``write(temporary directory path)`` writes there
    (``<name>.tmp-<pid>`` beside it, not yet created); returns what `write` returns. An existing `path` is
    moved aside (``<name>.old-<pid>``) only once the new directory is complete, and put back if the rename
    fails; leftovers of a killed run of this process id are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f"{path.name}.old-{os.getpid()}")
    for stale in (tmp, old):
        _remove(stale)
    try:
        result = write(tmp)
        replacing = path.exists() or path.is_symlink()
        if replacing:
            os.replace(path, old)  # a directory cannot be renamed over a non-empty one
        try:
            os.replace(tmp, path)
        except OSError:
            if replacing:
                os.replace(old, path)
            raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            _remove(tmp)
    with contextlib.suppress(FileNotFoundError):
        _remove(old)
    fsync_dir(path.parent)
    return result


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temp_files(directory: str | Path, names: tuple[str, ...]) -> list[Path]:
    """Delete temporary files that writes of `names` left in `directory` when their process was
    killed mid-write; returns what was removed.

    Only files whose writer (the ``<pid>@<host>`` in the name) ran on this host and has exited are
    removed: a temporary file of a live process (this one included) or of another host, or one
    without a writer in its name, is never touched, so processes sharing a directory (data-parallel
    replicas, nodes on a shared file system) cannot delete each other's files mid-write.
    """
    host = writer_tag().partition("@")[2]
    removed = []
    for name in names:
        prefix = f".{name}."
        for stale in Path(directory).glob(f"{glob.escape(prefix)}*.tmp"):
            owner = stale.name[len(prefix):-len(".tmp")].rpartition(".")[0]
            pid, at, owner_host = owner.partition("@")
            if not (at and pid.isdigit() and owner_host == host) or _process_alive(int(pid)):
                continue
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
                removed.append(stale)
    return removed
