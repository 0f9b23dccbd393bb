"""Adapter files: only the Focus tensors (safetensors) plus a small JSON config.

A directory holds ``adapter.safetensors`` and ``adapter_config.json``. The config names k, W, the
scope and the identity of the base model (its shape hash, preset name and attention blocks) and
the SHA-256 of the tensor file. Loading onto a base of another shape is refused with an error that
says which; a tensor file that does not match its recorded checksum is refused too.

Run-time ratio and window: an adapter records the k and W it was trained with, and loading it sets
them as the model's defaults, but any 1 <= k <= W can be passed at run time (``fm(tokens, k=...,
window=...)``, ``fm.stream(..., k=..., window=...)``). The Focus parameters do not depend on W: a
larger W only keeps more ordinary bases in exact attention before compressing (W >= the sequence
length is the base model itself, I1), so running at a W larger than the trained one is allowed. How
well the adapter summarises at a k or W it was not trained with is a question of fidelity, measured
by ``focus_nemo.evaluate``, not of correctness.

Files are written under a temporary name in the target directory, flushed to disk and renamed into
place (the directory entry is synced too), so a reader, or a run killed at any instant, sees either
the old file or the new one, never a partial one. One process writes a given directory at a time;
temporary files name their writer, and only those of writers that have exited are cleaned up.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from focus_nemo.focus.config import FocusConfig

ADAPTER_FORMAT = "focus-nemo-adapter/1"
TENSORS = "adapter.safetensors"
CONFIG = "adapter_config.json"


def sha256_file(path: str | Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def _default_file_mode() -> int:
    """Permission bits an ordinary new file gets under the current umask (temp files start 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(directory: Path) -> None:
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


def _writer_tag() -> str:
    """``<pid>@<host>``: the process that owns a temporary file (host names are [A-Za-z0-9.-])."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "localhost"
    return f"{os.getpid()}@{host}"


def _temp_in(directory: Path, name: str) -> str:
    """An empty temporary file next to `name` in `directory` (``.<name>.<pid>@<host>.<random>.tmp``),
    readable like any other new file."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.{_writer_tag()}.", suffix=".tmp")
    try:
        with contextlib.suppress(OSError):  # best effort: some file systems have no mode bits
            os.fchmod(fd, _default_file_mode())
    finally:
        os.close(fd)
    return tmp


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temp_files(directory: Path, names: tuple[str, ...]) -> list[Path]:
    """Delete temporary files that writes of `names` left in `directory` when their process was
    killed mid-write; returns what was removed.

    Only files whose writer (the ``<pid>@<host>`` in the name) ran on this host and has exited are
    removed: a temporary file of a live process (this one included) or of another host, or one
    without a writer in its name, is never touched, so processes sharing a directory (data-parallel
    replicas, nodes on a shared file system) cannot delete each other's files mid-write.
    """
    host = _writer_tag().partition("@")[2]
    removed = []
    for name in names:
        prefix = f".{name}."
        for stale in directory.glob(f"{glob.escape(prefix)}*.tmp"):
            owner = stale.name[len(prefix):-len(".tmp")].rpartition(".")[0]
            pid, at, owner_host = owner.partition("@")
            if not (at and pid.isdigit() and owner_host == host) or _process_alive(int(pid)):
                continue
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
                removed.append(stale)
    return removed


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> str:
    """Create or replace `path` with what ``write(file)`` writes, through a temporary file in the same
    directory that is flushed to disk and renamed (readers never see half a file); returns its SHA-256."""
    path = Path(path)
    tmp = _temp_in(path.parent, path.name)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return digest


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename (readers never see half a file)."""
    atomic_write(path, lambda f: f.write(data))


def base_identity(base) -> dict:
    cfg = base.config
    return {"shape_hash": cfg.shape_hash(), "preset": cfg.name, "hidden_size": cfg.hidden_size,
            "pattern": cfg.pattern, "attention_layers": cfg.attention_layers}


def save_adapter(model, path: str | Path, extra: dict | None = None) -> Path:
    """Write the adapter of `model` (a FocusModel) to directory `path`; returns the directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path, (TENSORS, CONFIG))
    tensors = {n: p.detach().to("cpu").contiguous() for n, p in model.focus_parameters().items()}
    tmp = _temp_in(path, TENSORS)
    try:
        save_file(tensors, tmp, metadata={"format": ADAPTER_FORMAT})  # leaves the file mode at 0600
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            with contextlib.suppress(OSError):
                os.fchmod(f.fileno(), _default_file_mode())
        digest = sha256_file(tmp)
        os.replace(tmp, path / TENSORS)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    meta = {"format": ADAPTER_FORMAT, "focus": model.config.to_dict(), "base": base_identity(model.base),
            "tensors": {n: list(t.shape) for n, t in tensors.items()}, "sha256": digest, **(extra or {})}
    atomic_write_bytes(path / CONFIG, json.dumps(meta, indent=2).encode())
    return path


def read_adapter_config(path: str | Path) -> dict:
    path = Path(path)
    cfg_path = path / CONFIG
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path}: not an adapter directory (missing {CONFIG})")
    try:
        meta = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path}: invalid JSON ({e})") from None
    if meta.get("format") != ADAPTER_FORMAT:
        raise ValueError(f"{cfg_path}: format {meta.get('format')!r}, expected {ADAPTER_FORMAT!r}")
    return meta


def load_adapter(model, path: str | Path, strict_config: bool = False) -> dict:
    """Load an adapter directory into `model` (a FocusModel) in place; returns its metadata.

    The adapter's FocusConfig (k, window, scope, ...) replaces the model's unless `strict_config`,
    in which case a difference is an error.
    """
    path = Path(path)
    meta = read_adapter_config(path)
    want, have = meta["base"], base_identity(model.base)
    if want["shape_hash"] != have["shape_hash"]:
        raise ValueError(
            f"{path}: adapter was trained for a different base model (shape hash {want['shape_hash']}, "
            f"hidden {want['hidden_size']}, pattern {want['pattern']!r}); this base has shape hash "
            f"{have['shape_hash']}, hidden {have['hidden_size']}, pattern {have['pattern']!r}")
    tensor_path = path / TENSORS
    if not tensor_path.is_file():
        raise FileNotFoundError(f"{tensor_path}: missing adapter tensors")
    digest = sha256_file(tensor_path)
    if digest != meta.get("sha256"):
        raise ValueError(f"{tensor_path}: checksum mismatch (file is {digest[:12]}..., config records "
                         f"{str(meta.get('sha256'))[:12]}...): the file is truncated or was modified")
    try:
        tensors = load_file(tensor_path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{tensor_path}: unreadable safetensors file ({e})") from None
    params = model.focus_parameters()
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(f"{tensor_path}: adapter tensors do not match the model "
                         f"(missing {missing}, unexpected {unexpected})")
    for name, p in params.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"{tensor_path}: tensor {name} has shape {tuple(t.shape)}, "
                             f"model expects {tuple(p.shape)}")
    focus_cfg = FocusConfig.from_dict(meta["focus"])
    if strict_config and focus_cfg != model.config:
        raise ValueError(f"{path}: adapter config {focus_cfg} differs from the model's {model.config}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[name].to(p.dtype))
    model.config = focus_cfg
    return meta
