"""Adapter files: only the Focus tensors (safetensors) plus a small JSON config.

A directory holds ``adapter.safetensors`` and ``adapter_config.json``. The config names k, W, the
scope and the identity of the base model (its shape hash, preset name and attention blocks) and
the SHA-256 of the tensor file. Loading onto a base of another shape is refused with an error that
says which; a tensor file that does not match its recorded checksum is refused too.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename (readers never see half a file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def base_identity(base) -> dict:
    cfg = base.config
    return {"shape_hash": cfg.shape_hash(), "preset": cfg.name, "hidden_size": cfg.hidden_size,
            "pattern": cfg.pattern, "attention_layers": cfg.attention_layers}


def save_adapter(model, path: str | Path, extra: dict | None = None) -> Path:
    """Write the adapter of `model` (a FocusModel) to directory `path`; returns the directory."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().to("cpu").contiguous() for n, p in model.focus_parameters().items()}
    fd, tmp = tempfile.mkstemp(dir=path, prefix=f".{TENSORS}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": ADAPTER_FORMAT})
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
