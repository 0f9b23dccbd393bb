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

Level-2 queries (``level2_query.<block>``, DESIGN D12) are optional: an adapter without them loads
with zeros (mean pooling), and one with them gives a model that has none its own.

Files are written with `focus_nemo.durable` (temporary file, fsync, rename, checksum), so a reader, or a
run killed at any instant, sees either the old file or the new one, never a partial one. One process
writes a given directory at a time; temporary files name their writer, and only those of writers that
have exited are cleaned up.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from focus_nemo.durable import durable_write_bytes, durable_write_path, remove_stale_temp_files, sha256_file
from focus_nemo.focus.config import FocusConfig

log = logging.getLogger(__name__)

ADAPTER_FORMAT = "focus-nemo-adapter/1"
TENSORS = "adapter.safetensors"
CONFIG = "adapter_config.json"
LEVEL2_PREFIX = "level2_query."  # the trained level-2 queries (FocusConfig.level2_pool "trained"): optional


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
    digest = durable_write_path(path / TENSORS,
                                lambda tmp: save_file(tensors, str(tmp), metadata={"format": ADAPTER_FORMAT}))
    meta = {"format": ADAPTER_FORMAT, "focus": model.config.to_dict(), "base": base_identity(model.base),
            "tensors": {n: list(t.shape) for n, t in tensors.items()}, "sha256": digest, **(extra or {})}
    durable_write_bytes(path / CONFIG, json.dumps(meta, indent=2).encode())
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
    if want.get("preset") and have.get("preset") and want["preset"] != have["preset"]:
        # Same shapes, other weights (e.g. a continued pretraining of the same model): the adapter loads,
        # but its Focus tokens were trained against the other model's activations.
        log.warning("%s: adapter was trained on base model %r; this base is %r (same shapes, so it loads)",
                    path, want["preset"], have["preset"])
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
    if any(n.startswith(LEVEL2_PREFIX) for n in set(tensors) - set(params)) and hasattr(model, "add_level2_queries"):
        model.add_level2_queries()  # an adapter with trained level-2 queries gives the model its own
        params = model.focus_parameters()
    # Adapters written before the second level existed have no level-2 queries: those load as zero (mean pooling).
    defaults = {n for n in set(params) - set(tensors) if n.startswith(LEVEL2_PREFIX)}
    missing, unexpected = sorted(set(params) - set(tensors) - defaults), sorted(set(tensors) - set(params))
    if missing or unexpected:
        raise ValueError(f"{tensor_path}: adapter tensors do not match the model "
                         f"(missing {missing}, unexpected {unexpected})")
    for name, p in params.items():
        if name in defaults:
            continue
        t = tensors[name]
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"{tensor_path}: tensor {name} has shape {tuple(t.shape)}, "
                             f"model expects {tuple(p.shape)}")
    focus_cfg = FocusConfig.from_dict(meta["focus"])
    if strict_config and focus_cfg != model.config:
        raise ValueError(f"{path}: adapter config {focus_cfg} differs from the model's {model.config}")
    with torch.no_grad():
        for name, p in params.items():
            if name in defaults:
                p.zero_()
            else:
                p.copy_(tensors[name].to(p.dtype))
    model.config = focus_cfg
    return meta
