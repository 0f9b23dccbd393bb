"""Reading any checkpoint: the format is recognised from the contents, torch files are loaded with
``weights_only=True``, and the tensors are converted to the `Evo2Model` layout (`read_checkpoint`,
`load_evo2`)."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from focus_nemo.durable import scratch_file
from focus_nemo.evo2.checkpoint.common import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    Converted,
    Source,
    corrupt_file_error,
)
from focus_nemo.evo2.checkpoint.configs import finish_conversion
from focus_nemo.evo2.checkpoint.ours import config_from_json, config_from_metadata
from focus_nemo.evo2.checkpoint.savanna import convert_savanna
from focus_nemo.evo2.checkpoint.vortex import PART_RE, convert_vortex, parts_of
from focus_nemo.evo2.config import Evo2Config
from focus_nemo.evo2.model import Evo2Model, parameter_dtype
from focus_nemo.evo2.poles import warn_non_decaying_poles

# Harmless types that real checkpoints pickle next to their tensors.
_TRUSTED_GLOBALS = [io.BytesIO, argparse.Namespace]


def load_evo2(
    path: str | os.PathLike,
    config: Evo2Config | str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    strict: bool = True,
) -> Evo2Model:
    """Load an Evo-2 model from a checkpoint of any supported format.

    Args:
        path: our directory or ``.safetensors`` file, a vortex ``.pt`` (or its ``.pt.partN`` pieces, given as
            the unsplit name or any piece), a savanna ``.pt``, a NeMo2 directory, or a directory holding exactly
            one checkpoint file.
        config: the model configuration: an `Evo2Config`, a preset name (``"7b-262k"``), Arc's YAML
            (``"evo2-7b-262k.yml"``) or our ``config.json``. When given, every tensor shape is checked against it;
            otherwise it is read from the checkpoint (ours, NeMo2) or inferred from the tensor shapes (vortex,
            savanna; see `infer_config`). Vortex and savanna files do not record the rotary position scaling,
            eps or the activation scheme: a file whose shapes match several published models (the 8k and the
            262k 7B) or none is refused without a config.
        device: where the weights go.
        dtype: floating dtype of the weights; None keeps the checkpoint's (that of its embedding). The precision
            policy applies (`focus_nemo.evo2.model.parameter_dtype`: the modal filter parameters and the medium
            filter taps stay fp32 under a 16-bit dtype).
        strict: raise on tensors the converter does not use (otherwise warn and drop them).

    Returns:
        The model, its parameters holding the checkpoint tensors (no separate random initialisation).
    """
    state, cfg, _ = read_checkpoint(path, config=config, strict=strict)
    if torch.device(device).type != "meta" and any(t.is_meta for t in state.values()):
        raise CheckpointError(f"{path}: the checkpoint holds meta tensors (shapes only); load it with device='meta'")
    if dtype is None:
        dtype = state["embedding.weight"].dtype
    if not dtype.is_floating_point:
        raise CheckpointError(f"load_evo2: dtype must be a floating point type, got {dtype}")
    state = {k: t.to(device=device, dtype=parameter_dtype(k, dtype) if t.is_floating_point() else t.dtype)
             for k, t in state.items()}
    with torch.device("meta"):
        model = Evo2Model(cfg, init=False)
    # assign=True adopts the checkpoint tensors as parameters instead of copying them into freshly allocated
    # ones, so a 7B load needs one copy of the weights (none for memory-mapped files in the stored dtype).
    model.load_state_dict(state, strict=True, assign=True)
    return model


def read_checkpoint(
    path: str | os.PathLike, config: Evo2Config | None = None, strict: bool = True
) -> tuple[dict[str, torch.Tensor], Evo2Config, str]:
    """Read any supported checkpoint into our parameter names without building a model.

    Args:
        path: see `load_evo2`.
        config: see `load_evo2`.
        strict: see `load_evo2`.

    Returns:
        (state dict in `Evo2Model` names, its config, format name: "ours", "vortex", "savanna" or "nemo2").
    """
    config = Evo2Config.resolve(config)
    conv = _read_path(Path(path), config, strict)
    cfg = finish_conversion(conv, config)
    warn_non_decaying_poles(conv.state_dict, str(path))  # once per checkpoint read, whoever reads it
    return conv.state_dict, cfg, conv.fmt


def _read_path(path: Path, config: Evo2Config | None, strict: bool) -> Converted:
    if path.is_dir():
        return _read_dir(path, config, strict)
    piece = PART_RE.match(path.name)
    if path.is_file() and piece is None:
        return _read_file(path, config, strict, str(path))
    # A split checkpoint, named by its unsplit name or by any of its pieces.
    base = path.with_name(piece["base"]) if piece else path
    parts = parts_of(base)
    if parts:
        return _read_joined(base, parts, config, strict)
    raise CheckpointError(f"{path}: no such file or directory (nor split pieces {path.name}.part0, ...)")


def _read_dir(path: Path, config: Evo2Config | None, strict: bool) -> Converted:
    if (path / "weights").is_dir() and (path / "context").is_dir():
        from focus_nemo.evo2.nemo2 import read_nemo2  # NeMo2 support is optional and imported on demand

        # The NeMo2 reader maps names with the given config (it needs e.g. the head count), else its own.
        state, cfg = read_nemo2(path) if config is None else read_nemo2(path, config)
        return Converted(fmt="nemo2", state_dict=dict(state), origin={}, config=cfg, where=str(path))
    if (path / WEIGHTS_FILE).is_file():
        conv = _read_file(path / WEIGHTS_FILE, config, strict, str(path / WEIGHTS_FILE))
        if conv.fmt == "ours" and (path / CONFIG_FILE).is_file():
            conv.config = config_from_json(path / CONFIG_FILE, conv.config)
        return conv
    # Otherwise the directory must hold exactly one checkpoint (e.g. a downloaded model repository).
    names = sorted(p.name for p in path.iterdir() if p.is_file())
    split = sorted({m["base"] for n in names if (m := PART_RE.match(n)) and m["index"] == "0"})
    singles = [n for n in names if not PART_RE.match(n) and _sniff(path / n) is not None]
    found = singles + [f"{b}.part*" for b in split]
    if len(found) == 1:
        return _read_path(path / (singles[0] if singles else split[0]), config, strict)
    raise CheckpointError(
        f"{path}: unrecognised checkpoint directory: expected {WEIGHTS_FILE} (+ {CONFIG_FILE}), a NeMo2 layout "
        f"(weights/ and context/), or exactly one checkpoint file; found checkpoint files {found} among "
        f"{names[:20]}"
    )


def _read_joined(base: Path, parts: list[Path], config: Evo2Config | None, strict: bool) -> Converted:
    """Stream-concatenate split pieces into a temporary file and read it."""
    # beside the pieces, or in the system's temporary directory when theirs is read-only; tensors read with
    # mmap keep the data alive after the name is removed
    with scratch_file(f".{base.name}.joined-", base.parent) as joined:
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        return _read_file(joined, config, strict, f"{base} (joined from {len(parts)} pieces)")


def _read_file(path: Path, config: Evo2Config | None, strict: bool, where: str) -> Converted:
    kind = _sniff(path)
    if kind == "safetensors":
        state, metadata = _load_safetensors(path, where)
        conv = _convert_mapping(state, config, strict, where)
        if conv.fmt == "ours":
            conv.config = config_from_metadata(metadata, where)
        return conv
    if kind in ("torch-zip", "torch-legacy"):
        obj = _torch_load(path, where, mmap=kind == "torch-zip")
        return _convert_mapping(obj, config, strict, where)
    size = path.stat().st_size
    raise CheckpointError(
        f"{where}: unrecognised checkpoint format: not a safetensors or torch file ({size} bytes)"
    )


def _sniff(path: Path) -> str | None:
    """File type from the first bytes: "safetensors", "torch-zip", "torch-legacy" or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return None
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:  # pickle protocol 2-5
        return "torch-legacy"
    # safetensors: little-endian u64 header length, then the JSON header. A truncated file whose header is
    # cut still counts, so that the reader reports the truncation.
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 32):
        return "safetensors"
    return None


def _torch_load(path: Path, where: str, mmap: bool):
    try:
        with torch.serialization.safe_globals(_TRUSTED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        error = e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(corrupt_file_error(where, "torch checkpoint", e)) from None
    # The weights-only unpickler refused something: name the offending types if that is the reason.
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 (a corrupt file can fail in many ways; reported below)
        found = []
    trusted = {f"{t.__module__}.{t.__qualname__}" for t in _TRUSTED_GLOBALS} | {"_io.BytesIO"}
    unsafe = [g for g in found if g not in trusted]
    if unsafe:
        raise CheckpointError(
            f"{where}: holds pickled objects other than tensors ({unsafe}); only weights-only loading is supported. "
            "Re-save the tensors alone, e.g. torch.save(state_dict, path), in a trusted environment."
        )
    raise CheckpointError(corrupt_file_error(where, "torch checkpoint", error))


def _load_safetensors(path: Path, where: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, metadata  # noqa: SIM118 (safe_open is not a dict)
    except Exception as e:  # safetensors raises its own error types (and OSError, ValueError)
        raise CheckpointError(corrupt_file_error(where, "safetensors file", e)) from None


def _convert_mapping(obj: object, config: Evo2Config | None, strict: bool, where: str) -> Converted:
    """Recognise a loaded object by its keys and convert it to our names."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: unrecognised checkpoint format: holds a {type(obj).__name__}, not a dict")
    state = obj
    if isinstance(obj.get("module"), Mapping):  # DeepSpeed / savanna wrapper
        state = {str(k).removeprefix("module."): v for k, v in obj["module"].items()}
    keys = [str(k) for k in state]
    if "embedding_layer.weight" in state:
        return convert_vortex(state, config, strict, where)
    if any(re.fullmatch(r"sequential\.\d+\.word_embeddings\.weight", k) for k in keys):
        return convert_savanna(state, config, strict, where)
    if "embedding.weight" in state and any(k.startswith("blocks.") for k in keys):
        src = Source(state, where)
        conv = Converted(fmt="ours", where=where)
        for k in keys:
            if isinstance(state[k], torch.Tensor):
                conv.put(k, src.take(k), k)
        src.finish(strict)
        return conv
    megatron = any(k.startswith(("decoder.layers.", "module.decoder.layers.")) for k in keys)
    hint = " The keys look like NeMo2/Megatron names: load the NeMo2 checkpoint directory instead." if megatron else ""
    raise CheckpointError(
        f"{where}: unrecognised checkpoint format ({len(keys)} keys, e.g. {sorted(keys)[:10]}). Expected one of: "
        "ours (embedding.weight, blocks.N...), vortex (embedding_layer.weight, blocks.N...), savanna "
        "(sequential.0.word_embeddings.weight, usually under 'module'), or a NeMo2 directory (weights/ + context/)."
        + hint
    )
