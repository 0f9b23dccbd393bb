"""Our own format: a directory with ``model.safetensors`` and ``config.json`` (`save_evo2`), or the bare
safetensors file whose metadata carries the config."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

from safetensors.torch import save_file

from focus_nemo.durable import durable_write_path
from focus_nemo.evo2.checkpoint.common import (
    CONFIG_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    CheckpointError,
    check_state_dict,
    first_line,
)
from focus_nemo.evo2.config import Evo2Config
from focus_nemo.evo2.model import Evo2Model


def save_evo2(model: Evo2Model, directory: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into `directory` (created if needed).

    Each file is written to a temporary name and renamed into place, so a reader never sees a partial
    file. The weights' metadata repeats the config and its shape hash, which makes the ``.safetensors`` file
    self-describing and lets `load_evo2` detect a config.json that belongs to other weights.

    Args:
        model: the model to save (any device; tensors are copied to the CPU).
        directory: target directory.

    Returns:
        The directory.
    """
    cfg = model.config
    state = model.state_dict()
    check_state_dict(state, cfg)
    if any(t.is_meta for t in state.values()):
        raise CheckpointError("save_evo2: the model has parameters on the meta device (no data to save)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: t.detach().to("cpu").contiguous() for k, t in state.items()}
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "shape_hash": cfg.shape_hash()}
    metadata = {k: str(v) for k, v in header.items()}
    metadata["config"] = json.dumps(cfg.to_dict(), sort_keys=True)
    # Weights first: an interrupted save leaves new weights beside an old config.json, which the shape-hash
    # comparison at load time reports.
    durable_write_path(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    text = json.dumps({**header, **cfg.to_dict()}, indent=2) + "\n"
    durable_write_path(directory / CONFIG_FILE, lambda tmp: tmp.write_text(text))
    return directory


def config_from_metadata(metadata: Mapping[str, str], where: str) -> Evo2Config | None:
    if metadata.get("format") != FORMAT_NAME or "config" not in metadata:
        return None  # a plain safetensors state dict in our names: the config is inferred
    _check_version(metadata.get("format_version"), where)
    try:
        cfg = Evo2Config.from_dict(json.loads(metadata["config"]))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: invalid config in the file metadata: {first_line(e)}") from None
    if metadata.get("shape_hash") and cfg.shape_hash() != metadata["shape_hash"]:
        raise CheckpointError(f"{where}: the config in the file metadata does not match its shape hash (corrupt)")
    return cfg


def config_from_json(path: Path, weights_config: Evo2Config | None) -> Evo2Config:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read config: {first_line(e)}") from None
    if doc.pop("format", None) != FORMAT_NAME:
        raise CheckpointError(f"{path}: not a {FORMAT_NAME} config (missing 'format': {FORMAT_NAME!r})")
    _check_version(doc.pop("format_version", None), str(path))
    stored_hash = doc.pop("shape_hash", None)
    try:
        cfg = Evo2Config.from_dict(doc)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid config: {e}") from None
    if weights_config is not None and stored_hash is not None and stored_hash != weights_config.shape_hash():
        raise CheckpointError(
            f"{path}: written for other weights (shape hash {stored_hash}, weights {weights_config.shape_hash()}); "
            "an interrupted save or mixed files"
        )
    if stored_hash is not None and cfg.shape_hash() != stored_hash:
        warnings.warn(f"{path}: edited after saving (shape hash changed); using it as it is", stacklevel=4)
    return cfg


def _check_version(version: object, where: str) -> None:
    try:
        v = int(version)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: missing or invalid format_version {version!r}") from None
    if v > FORMAT_VERSION:
        raise CheckpointError(f"{where}: format_version {v} is newer than this reader ({FORMAT_VERSION})")
