"""Reading and writing Evo-2 checkpoints.

Formats, recognised from the file contents and tensor names (never from file names):

* **ours**: a directory with ``model.safetensors`` and ``config.json`` (written by `save_evo2`), the bare
  ``.safetensors`` file (its metadata carries the config), or a torch file holding an `Evo2Model` state dict.
* **vortex**: the Arc inference checkpoint (``evo2_7b.pt``), possibly split into ``<name>.pt.part0..N``
  byte ranges that are concatenated in order.
* **savanna**: the Arc training checkpoint, ``torch.load(f)["module"]`` with ``sequential.{i}.`` keys.
* **NeMo2**: a directory with ``weights/`` and ``context/`` (read by `focus_nemo.evo2.nemo2`).

Every torch file is read with ``weights_only=True``: tensors and plain containers only, plus two inert
types found in real checkpoints (`io.BytesIO` for Transformer Engine FP8 metadata, `argparse.Namespace`
for training arguments). There is no fallback to unrestricted unpickling.

Layout facts the converters rely on (reference: the vortex inference engine and NeMo's Hyena layers):

* Hyena input projection rows are grouped per hidden channel d as (gate, pre, v) = (z[3d], z[3d+1], z[3d+2]);
  vortex calls them (x2, x1, v), NeMo (x1, x2, v); the output is gate * (h * (pre * v) + D * pre * v).
  All formats store the same row order, so the projections copy across unchanged.
* Featurizer and short (S) filter taps are stored in ``F.conv1d`` orientation (last tap = current sample)
  everywhere, which is ours. Vortex runs FIR filters of length >= 128 as an FFT convolution with the taps as
  the impulse response (first tap = current sample), which is our medium (D) filter convention: no flips.
* Attention Wqkv is stored in the Megatron per-head layout [heads, (q, k, v), head_dim] in vortex, savanna and
  NeMo; ours is [Q; K; V] (vortex permutes it the same way at load time with ``column_split``).

RMSNorm form (`Evo2Config.norm_form`, DESIGN D10): that of the code a checkpoint comes from. Vortex and savanna
files are Arc's ("arc": x / (rms + eps)) unless a config says otherwise (the YAML `export_vortex` writes records
the form of the model exported); NeMo 2 files are NeMo's ("nemo": x * rsqrt(mean square + eps)); our own files
record it in their config (files written before the field existed are "nemo", `LEGACY_NORM_FORM`).

Configs Arc's files do not record (rotary scaling, eps, activation scheme) come from the ``config`` argument: an
`Evo2Config`, a preset name, or Arc's YAML (``evo2/configs/evo2-7b-262k.yml``). Without one they are taken from
the published model whose shapes the file has; where that is ambiguous (the 8k and 262k 7B models share a shape)
or no published model matches, loading is refused with an error naming what is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from focus_nemo.durable import durable_write_path
from focus_nemo.evo2.config import LEGACY_NORM_FORM, PRESETS, Evo2Config, config_to_arc_yaml
from focus_nemo.evo2.model import Evo2Model, parameter_dtype
from focus_nemo.evo2.ops import rotary_inv_freq

__all__ = [
    "CONFIG_FILE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "CheckpointError",
    "check_state_dict",
    "convert_savanna_state_dict",
    "convert_vortex_state_dict",
    "export_vortex",
    "infer_config",
    "load_evo2",
    "read_checkpoint",
    "save_evo2",
    "vortex_state_dict",
    "vortex_yaml_path",
]

FORMAT_NAME = "focus_nemo.evo2"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

# Published Evo-2 models all use 128-wide attention heads; Wqkv alone does not reveal the head count.
DEFAULT_HEAD_DIM = 128
# Vortex applies FIR filters at least this long as an FFT convolution with the taps as impulse response
# (and gives them a gated bias D); shorter ones go through F.conv1d (cross-correlation orientation).
VORTEX_FFT_FIR_MIN_LENGTH = 128
# Stored rotary tables may be bf16-rounded (relative error <= 2^-8); distinct bases such as 1e4 and 1e6 differ
# by several percent already in the second frequency.
ROTARY_RTOL = 1e-2

# Harmless types that real checkpoints pickle next to their tensors.
_TRUSTED_GLOBALS = [io.BytesIO, argparse.Namespace]
# The RMSNorm form of the code that wrote each format (when the file records none).
_NATIVE_NORM_FORM = {"vortex": "arc", "savanna": "arc", "nemo2": "nemo"}
_PART_RE = re.compile(r"^(?P<base>.+)\.part(?P<index>\d+)$")
_SHAPE_FIELDS = (
    "vocab_size", "hidden_size", "num_heads", "ffn_hidden_size", "pattern", "short_filter_length",
    "hcs_filter_length", "hcm_filter_length", "state_size", "hcs_groups", "hcm_groups", "hcl_groups",
    "short_conv_bias", "attn_out_bias",
)


class CheckpointError(ValueError):
    """A checkpoint cannot be read, is of an unknown format, or does not match the model configuration."""


# ---------------------------------------------------------------------------------------------- public API
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
    cfg = _resolve_config(conv, config)
    _check_rotary(conv, cfg)
    check_state_dict(conv.state_dict, cfg, origin=conv.origin)
    return conv.state_dict, cfg, conv.fmt


def convert_vortex_state_dict(
    state_dict: Mapping[str, object], config: Evo2Config | None = None, strict: bool = True
) -> tuple[dict[str, torch.Tensor], Evo2Config]:
    """Convert an in-memory vortex state dict (meta tensors allowed) to ours; returns (state dict, config)."""
    conv = _convert_vortex(state_dict, config, strict, "vortex state dict")
    cfg = _resolve_config(conv, config)
    _check_rotary(conv, cfg)
    check_state_dict(conv.state_dict, cfg, origin=conv.origin)
    return conv.state_dict, cfg


def convert_savanna_state_dict(
    state_dict: Mapping[str, object], config: Evo2Config | None = None, strict: bool = True
) -> tuple[dict[str, torch.Tensor], Evo2Config]:
    """Convert an in-memory savanna ``module`` state dict to ours; returns (state dict, config)."""
    conv = _convert_savanna(state_dict, config, strict, "savanna state dict")
    cfg = _resolve_config(conv, config)
    _check_rotary(conv, cfg)
    check_state_dict(conv.state_dict, cfg, origin=conv.origin)
    return conv.state_dict, cfg


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: Evo2Config, origin: Mapping[str, str] | None = None
) -> None:
    """Check names and shapes of a state dict in our names against `config`.

    The expected shapes come from an `Evo2Model` built on the meta device, so checking a 7B configuration
    allocates no parameter memory. Meta tensors are accepted in `state_dict`.

    Args:
        state_dict: tensors in `Evo2Model` names.
        config: the configuration they should fit.
        origin: our name -> name in the source file, to name both in errors.

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped tensor.
    """
    with torch.device("meta"):
        reference = Evo2Model(config, init=False)
    expected = {k: tuple(t.shape) for k, t in reference.state_dict().items()}
    origin = origin or {}

    def name(k: str) -> str:
        src = origin.get(k)
        return k if src is None or src == k else f"{k} (checkpoint key {src!r})"

    problems = [f"missing: {name(k)} {expected[k]}" for k in expected if k not in state_dict]
    problems += [f"unexpected: {name(k)}" for k in state_dict if k not in expected]
    problems += [
        f"shape mismatch: {name(k)}: checkpoint {tuple(t.shape)} vs config {expected[k]}"
        for k, t in state_dict.items()
        if k in expected and tuple(t.shape) != expected[k]
    ]
    if problems:
        shown = "\n  ".join(problems[:25]) + (f"\n  ... and {len(problems) - 25} more" if len(problems) > 25 else "")
        raise CheckpointError(
            f"checkpoint does not match Evo2Config {config.name!r} (shape hash {config.shape_hash()}):\n  {shown}"
        )


def infer_config(
    state_dict: Mapping[str, torch.Tensor],
    head_dim: int = DEFAULT_HEAD_DIM,
    rotary_base: float | None = None,
    name: str | None = None,
    norm_form: str = LEGACY_NORM_FORM,
    where: str = "the checkpoint",
) -> Evo2Config:
    """Infer an `Evo2Config` from the tensor shapes of a state dict in our names.

    Shapes fix everything but the head count (taken as hidden_size / `head_dim`), the rotary settings, eps and
    the activation scheme. When the shapes equal a published preset, its rotary base and scaling, context length
    and name are adopted (e.g. the 1M-context 7B model's position scaling of 128). A model with attention whose
    rotary settings are not determined that way is refused: shapes matching several presets that differ in them
    (the 8k and 262k 7B), or no preset and no stored rotary table.

    Args:
        state_dict: tensors in `Evo2Model` names (meta tensors allowed).
        head_dim: attention head width.
        rotary_base: rotary base implied by the checkpoint, if it stores rotary tables.
        name: config name; defaults to the matching preset or "inferred".
        norm_form: the RMSNorm form of the code the file comes from (shapes do not show it).
        where: the file, for error messages.

    Returns:
        The configuration.

    Raises:
        CheckpointError: the rotary settings cannot be determined (naming the candidates and what to pass).
    """
    if "embedding.weight" not in state_dict:
        raise CheckpointError("infer_config: no embedding.weight in the state dict")
    vocab, hidden = state_dict["embedding.weight"].shape
    indices = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))})
    if not indices or indices != list(range(len(indices))):
        raise CheckpointError(f"infer_config: block indices must be 0..N-1, found {indices}")
    pattern, found = [], {}
    for i in indices:
        p = f"blocks.{i}."
        if p + "attn.wqkv.weight" in state_dict:
            kind = "*"
        elif p + "mixer.filter.log_poles" in state_dict:
            kind = "H"
            found.setdefault("hcl_groups", state_dict[p + "mixer.filter.log_poles"].shape[0])
            found.setdefault("state_size", state_dict[p + "mixer.filter.log_poles"].shape[1])
        elif p + "mixer.filter.h" in state_dict:
            kind = "D"
            found.setdefault("hcm_groups", state_dict[p + "mixer.filter.h"].shape[0])
            found.setdefault("hcm_filter_length", state_dict[p + "mixer.filter.h"].shape[1])
        elif p + "mixer.filter.weight" in state_dict:
            kind = "S"
            found.setdefault("hcs_groups", state_dict[p + "mixer.filter.weight"].shape[0])
            found.setdefault("hcs_filter_length", state_dict[p + "mixer.filter.weight"].shape[1])
            if p + "mixer.filter.bias" in state_dict:
                found["short_conv_bias"] = True
        else:
            raise CheckpointError(f"infer_config: block {i} has neither attention nor a known Hyena filter")
        if kind != "*":
            found.setdefault("short_filter_length", state_dict[p + "mixer.featurizer"].shape[1])
        elif p + "attn.out_proj.bias" not in state_dict:
            found["attn_out_bias"] = False
        pattern.append(kind)
    pattern = "".join(pattern)
    if "*" in pattern:
        if hidden % head_dim:
            raise CheckpointError(
                f"infer_config: hidden size {hidden} is not a multiple of head_dim {head_dim}; the head count cannot "
                "be inferred from the weights, pass an explicit Evo2Config"
            )
        num_heads = hidden // head_dim
    else:
        num_heads = hidden // head_dim if hidden % head_dim == 0 else 1  # unused without attention blocks
    kwargs = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_heads": num_heads,
        "ffn_hidden_size": state_dict["blocks.0.mlp.l1.weight"].shape[0],
        "pattern": pattern,
        "short_conv_bias": False,
        "attn_out_bias": True,
        # Groups of absent block kinds only need to divide the hidden size.
        "hcs_groups": hidden,
        "hcm_groups": hidden,
        "hcl_groups": hidden,
    }
    kwargs.update({k: int(v) if not isinstance(v, bool) else v for k, v in found.items()})
    defaults = {f.name: f.default for f in fields(Evo2Config)}
    shape = {k: kwargs.get(k, defaults[k]) for k in _SHAPE_FIELDS}
    matches = [p for p, values in PRESETS.items() if {k: values.get(k, defaults[k]) for k in _SHAPE_FIELDS} == shape]

    def rotary_of(preset: str) -> tuple[float, float]:
        return (float(PRESETS[preset].get("rotary_base", defaults["rotary_base"])),
                float(PRESETS[preset].get("rotary_scaling", defaults["rotary_scaling"])))

    if rotary_base is not None:
        matches = [p for p in matches if math.isclose(rotary_of(p)[0], rotary_base, rel_tol=ROTARY_RTOL)] or matches
    if "*" in pattern and len({rotary_of(p) for p in matches}) > 1:
        options = ", ".join(f"{p} (rotary_base {rotary_of(p)[0]:g}, scaling {rotary_of(p)[1]:g})" for p in matches)
        raise CheckpointError(
            f"{where}: the rotary position scaling is not recorded in the file and its shapes match several "
            f"published models: {options}. Pass config= with Arc's YAML of the model (e.g. evo2-7b-262k.yml) or "
            "a preset name"
        )
    if matches:
        preset = PRESETS[matches[0]]
        for k in ("rotary_base", "rotary_scaling", "max_seqlen", "eps", "activation_first_layer_only", "mlp_gelu"):
            if k in preset:
                kwargs[k] = preset[k]
        kwargs["name"] = name or matches[0]
    else:
        kwargs["name"] = name or "inferred"
        if "*" in pattern:
            if rotary_base is None:
                raise CheckpointError(
                    f"{where}: rotary_base and rotary_scaling cannot be determined: the file stores no rotary table "
                    "and its shapes match no published model. Pass config= (an Evo2Config, a preset name or the "
                    "model's Arc YAML)"
                )
            warnings.warn(
                f"{where}: the shapes match no published model; rotary_base {rotary_base:g} is read from the stored "
                f"tables, rotary_scaling (not recorded) is taken as {defaults['rotary_scaling']:g}. Pass config= "
                "(e.g. the model's Arc YAML) if the model was trained with position interpolation",
                stacklevel=3,
            )
    if rotary_base is not None:
        kwargs["rotary_base"] = rotary_base
    kwargs["norm_form"] = norm_form
    return Evo2Config(**kwargs)


def vortex_state_dict(state_dict: Mapping[str, torch.Tensor], config: Evo2Config) -> dict[str, torch.Tensor]:
    """Our state dict in vortex names and layouts (meta tensors allowed).

    ``unembed.weight`` is the embedding tensor itself, so `torch.save` stores it once.
    """
    check_state_dict(state_dict, config)
    out: dict[str, torch.Tensor] = {}
    emb = state_dict["embedding.weight"]
    out["embedding_layer.weight"] = emb
    out["unembed.weight"] = emb
    out["norm.scale"] = state_dict["final_norm.weight"]
    inv_freq = rotary_inv_freq(config.head_dim, config.rotary_base)
    for i, kind in enumerate(config.pattern):
        s = d = f"blocks.{i}."
        out[d + "pre_norm.scale"] = state_dict[s + "pre_norm.weight"]
        out[d + "post_norm.scale"] = state_dict[s + "post_norm.weight"]
        for name in ("l1", "l2", "l3"):
            out[d + f"mlp.{name}.weight"] = state_dict[s + f"mlp.{name}.weight"]
        if kind == "*":
            wqkv = state_dict[s + "attn.wqkv.weight"]
            out[d + "inner_mha_cls.Wqkv.weight"] = _qkv_to_megatron(wqkv, config.head_dim)
            out[d + "inner_mha_cls.out_proj.weight"] = state_dict[s + "attn.out_proj.weight"]
            if config.attn_out_bias:
                out[d + "inner_mha_cls.out_proj.bias"] = state_dict[s + "attn.out_proj.bias"]
            out[d + "inner_mha_cls.rotary_emb.inv_freq"] = inv_freq.clone()
            continue
        m = s + "mixer."
        out[d + "projections.weight"] = state_dict[m + "projections.weight"]
        out[d + "filter.short_filter_weight"] = state_dict[m + "featurizer"].unsqueeze(1)
        out[d + "out_filter_dense.weight"] = state_dict[m + "out_proj.weight"]
        out[d + "out_filter_dense.bias"] = state_dict[m + "out_proj.bias"]
        if kind == "S":
            if config.short_conv_bias:
                raise CheckpointError("vortex has no gated bias for short (S) filters; short_conv_bias is unsupported")
            if config.hcs_filter_length >= VORTEX_FFT_FIR_MIN_LENGTH:
                raise CheckpointError(f"vortex treats filters of >= {VORTEX_FFT_FIR_MIN_LENGTH} taps as medium")
            out[d + "filter.h"] = state_dict[m + "filter.weight"].unsqueeze(1)
        elif kind == "D":
            if config.hcm_filter_length < VORTEX_FFT_FIR_MIN_LENGTH:
                raise CheckpointError(f"vortex medium filters must have length >= {VORTEX_FFT_FIR_MIN_LENGTH}")
            out[d + "filter.h"] = state_dict[m + "filter.h"].unsqueeze(1)
            out[d + "filter.D"] = state_dict[m + "filter.D"]
        else:
            out[d + "filter.log_poles"] = state_dict[m + "filter.log_poles"].unsqueeze(-1)
            out[d + "filter.residues"] = state_dict[m + "filter.residues"]
            out[d + "filter.D"] = state_dict[m + "filter.D"]
    return out


def export_vortex(model: Evo2Model, path: str | os.PathLike, part_size: int | None = None) -> list[Path]:
    """Write `model` as a vortex ``.pt`` checkpoint, usable by the Arc inference engine, and its Arc-shaped YAML.

    The YAML (`vortex_yaml_path(path)`, e.g. ``evo2_custom.yml`` beside ``evo2_custom.pt``) holds the config in
    Arc's keys plus ``norm_form``, the RMSNorm form of the model; ``load_evo2(path, config=yaml)`` reproduces the
    model exactly. Arc's code always normalises as x / (rms + eps): a model of another form ("nemo") is exported
    with a warning, since Arc's code will not reproduce its logits exactly.

    Args:
        model: the model.
        path: target file name, e.g. ``evo2_custom.pt``.
        part_size: if given, split the file into ``<path>.part0..N`` pieces of at most this many bytes (the
            layout used for large published checkpoints) instead of writing `path`.

    Returns:
        The checkpoint files written (the YAML besides). Any other checkpoint at `path` (whole or split) is replaced.
    """
    path = Path(path)
    state = {k: t.detach().to("cpu") for k, t in model.state_dict().items()}
    vsd = vortex_state_dict(state, model.config)
    if model.config.norm_form != "arc":
        warnings.warn(
            f"export_vortex: {path}: the model normalises in the {model.config.norm_form!r} form, Arc's code as "
            f"x / (rms + eps); its logits in Arc's code will differ slightly (the YAML records norm_form: "
            f"{model.config.norm_form}, which load_evo2(path, config=yaml) honours)",
            stacklevel=2,
        )
    yaml_text = config_to_arc_yaml(model.config)
    durable_write_path(vortex_yaml_path(path), lambda tmp: tmp.write_text(yaml_text))
    if part_size is None:
        durable_write_path(path, lambda tmp: torch.save(vsd, tmp))
        for stale in _list_parts(path).values():
            stale.unlink()
        return [path]
    if part_size <= 0:
        raise ValueError(f"export_vortex: part_size must be positive, got {part_size}")
    fd, joined = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    written = []
    try:
        torch.save(vsd, joined)
        with open(joined, "rb") as src:
            while chunk := src.read(part_size):
                part = path.with_name(f"{path.name}.part{len(written)}")
                durable_write_path(part, lambda tmp, data=chunk: tmp.write_bytes(data))
                written.append(part)
    finally:
        os.unlink(joined)
    for index, stale in _list_parts(path).items():
        if index >= len(written):
            stale.unlink()
    if path.is_file():
        path.unlink()  # the whole-file name would take precedence over the parts at load time
    return written


def vortex_yaml_path(path: str | os.PathLike) -> Path:
    """The YAML `export_vortex` writes beside a vortex checkpoint: ``<name>.yml`` for ``<name>.pt``."""
    path = Path(path)
    return path.with_name((path.name[:-3] if path.name.endswith(".pt") else path.name) + ".yml")


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class _Converted:
    """A checkpoint in our names, with what is needed to resolve and check its config."""

    fmt: str
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # our name -> source name
    inv_freq: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # stored rotary tables
    head_dim: int | None = None  # head width used to split Wqkv
    config: Evo2Config | None = None  # config stored with the weights
    where: str = "the checkpoint"  # the file, for messages

    def put(self, key: str, tensor: torch.Tensor, source: str) -> None:
        self.state_dict[key] = tensor
        self.origin[key] = source


class _Source:
    """Pops tensors from a source state dict, naming the file and key in errors."""

    def __init__(self, state: Mapping[str, object], where: str) -> None:
        self.rest = dict(state)
        self.where = where

    def has(self, key: str) -> bool:
        return key in self.rest

    def take(self, key: str) -> torch.Tensor:
        if key not in self.rest:
            raise CheckpointError(f"{self.where}: missing tensor {key!r}")
        value = self.rest.pop(key)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{self.where}: {key!r} is a {type(value).__name__}, not a tensor")
        return value

    def finish(self, strict: bool) -> None:
        if not self.rest:
            return
        keys = sorted(self.rest)
        msg = f"{self.where}: {len(keys)} tensor(s) not used by the Evo-2 model: {keys[:20]}"
        if strict:
            raise CheckpointError(msg + " (pass strict=False to drop them)")
        warnings.warn(msg + " (dropped)", stacklevel=3)


def _read_path(path: Path, config: Evo2Config | None, strict: bool) -> _Converted:
    if path.is_dir():
        return _read_dir(path, config, strict)
    piece = _PART_RE.match(path.name)
    if path.is_file() and piece is None:
        return _read_file(path, config, strict, str(path))
    # A split checkpoint, named by its unsplit name or by any of its pieces.
    base = path.with_name(piece["base"]) if piece else path
    parts = _parts_of(base)
    if parts:
        return _read_joined(base, parts, config, strict)
    raise CheckpointError(f"{path}: no such file or directory (nor split pieces {path.name}.part0, ...)")


def _read_dir(path: Path, config: Evo2Config | None, strict: bool) -> _Converted:
    if (path / "weights").is_dir() and (path / "context").is_dir():
        from focus_nemo.evo2.nemo2 import read_nemo2  # NeMo2 support is optional and imported on demand

        # The NeMo2 reader maps names with the given config (it needs e.g. the head count), else its own.
        state, cfg = read_nemo2(path) if config is None else read_nemo2(path, config)
        return _Converted(fmt="nemo2", state_dict=dict(state), origin={}, config=cfg, where=str(path))
    if (path / WEIGHTS_FILE).is_file():
        conv = _read_file(path / WEIGHTS_FILE, config, strict, str(path / WEIGHTS_FILE))
        if conv.fmt == "ours" and (path / CONFIG_FILE).is_file():
            conv.config = _config_from_json(path / CONFIG_FILE, conv.config)
        return conv
    # Otherwise the directory must hold exactly one checkpoint (e.g. a downloaded model repository).
    names = sorted(p.name for p in path.iterdir() if p.is_file())
    split = sorted({m["base"] for n in names if (m := _PART_RE.match(n)) and m["index"] == "0"})
    singles = [n for n in names if not _PART_RE.match(n) and _sniff(path / n) is not None]
    found = singles + [f"{b}.part*" for b in split]
    if len(found) == 1:
        return _read_path(path / (singles[0] if singles else split[0]), config, strict)
    raise CheckpointError(
        f"{path}: unrecognised checkpoint directory: expected {WEIGHTS_FILE} (+ {CONFIG_FILE}), a NeMo2 layout "
        f"(weights/ and context/), or exactly one checkpoint file; found checkpoint files {found} among "
        f"{names[:20]}"
    )


def _read_joined(base: Path, parts: list[Path], config: Evo2Config | None, strict: bool) -> _Converted:
    """Stream-concatenate split pieces into a temporary file and read it."""
    try:
        fd, joined = tempfile.mkstemp(prefix=f".{base.name}.joined-", dir=base.parent)
    except OSError:  # read-only checkpoint directory
        fd, joined = tempfile.mkstemp(prefix=f".{base.name}.joined-")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        return _read_file(Path(joined), config, strict, f"{base} (joined from {len(parts)} pieces)")
    finally:
        # Tensors read with mmap keep the data alive after the name is removed.
        with contextlib.suppress(OSError):
            os.unlink(joined)


def _read_file(path: Path, config: Evo2Config | None, strict: bool, where: str) -> _Converted:
    kind = _sniff(path)
    if kind == "safetensors":
        state, metadata = _load_safetensors(path, where)
        conv = _convert_mapping(state, config, strict, where)
        if conv.fmt == "ours":
            conv.config = _config_from_metadata(metadata, where)
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
        raise CheckpointError(_corrupt(where, "torch checkpoint", e)) from None
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
    raise CheckpointError(_corrupt(where, "torch checkpoint", error))


def _load_safetensors(path: Path, where: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, metadata  # noqa: SIM118 (safe_open is not a dict)
    except Exception as e:  # safetensors raises its own error types (and OSError, ValueError)
        raise CheckpointError(_corrupt(where, "safetensors file", e)) from None


def _corrupt(where: str, what: str, e: BaseException) -> str:
    return f"{where}: cannot read {what} (truncated or corrupt?): {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _convert_mapping(obj: object, config: Evo2Config | None, strict: bool, where: str) -> _Converted:
    """Recognise a loaded object by its keys and convert it to our names."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: unrecognised checkpoint format: holds a {type(obj).__name__}, not a dict")
    state = obj
    if isinstance(obj.get("module"), Mapping):  # DeepSpeed / savanna wrapper
        state = {str(k).removeprefix("module."): v for k, v in obj["module"].items()}
    keys = [str(k) for k in state]
    if "embedding_layer.weight" in state:
        return _convert_vortex(state, config, strict, where)
    if any(re.fullmatch(r"sequential\.\d+\.word_embeddings\.weight", k) for k in keys):
        return _convert_savanna(state, config, strict, where)
    if "embedding.weight" in state and any(k.startswith("blocks.") for k in keys):
        src = _Source(state, where)
        conv = _Converted(fmt="ours", where=where)
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


def _drop_extra_state(src: _Source) -> None:
    # Transformer Engine FP8 metadata (io.BytesIO or tensors) has no meaning outside TE.
    for k in [k for k in src.rest if k.rsplit(".", 1)[-1].startswith("_extra")]:
        del src.rest[k]


def _check_tied(unembed: torch.Tensor, embedding: torch.Tensor, key: str, where: str) -> None:
    if unembed.is_meta or embedding.is_meta:
        return
    if unembed.shape != embedding.shape or not torch.equal(unembed, embedding):
        raise CheckpointError(f"{where}: {key} differs from the input embedding; this model ties the two")


def _head_dim_from_tables(tables: list[torch.Tensor]) -> int | None:
    sizes = {t.numel() for t in tables}
    return 2 * sizes.pop() if len(sizes) == 1 else None


def _convert_vortex(state: Mapping[str, object], config: Evo2Config | None, strict: bool, where: str) -> _Converted:
    src = _Source(state, where)
    _drop_extra_state(src)
    conv = _Converted(fmt="vortex", where=where)
    tables = [t for k, t in src.rest.items() if k.endswith("rotary_emb.inv_freq") and isinstance(t, torch.Tensor)]
    head_dim = config.head_dim if config else (_head_dim_from_tables(tables) or DEFAULT_HEAD_DIM)
    conv.head_dim = head_dim

    def split_heads(t: torch.Tensor, key: str) -> torch.Tensor:
        return _qkv_from_megatron(t, head_dim, key, where)

    emb = src.take("embedding_layer.weight")
    conv.put("embedding.weight", emb, "embedding_layer.weight")
    if src.has("unembed.weight"):
        _check_tied(src.take("unembed.weight"), emb, "unembed.weight", where)
    # Vortex's RMSNorm divides by (RMS + eps) where ours (and NeMo/TE) uses sqrt(mean square + eps); the scales
    # carry over unchanged and the difference is negligible at eps = 1e-6 for activations of normal size.
    conv.put("final_norm.weight", src.take("norm.scale"), "norm.scale")
    for i in _block_indices(src.rest, r"blocks\.(\d+)\.", where):
        s, d = f"blocks.{i}.", f"blocks.{i}."

        def move(src_name: str, dst_name: str, transform: Callable | None = None, s=s, d=d) -> None:
            t = src.take(s + src_name)
            conv.put(d + dst_name, transform(t, s + src_name) if transform else t, s + src_name)

        move("pre_norm.scale", "pre_norm.weight")
        move("post_norm.scale", "post_norm.weight")
        for name in ("l1", "l2", "l3"):
            move(f"mlp.{name}.weight", f"mlp.{name}.weight")
        if src.has(s + "inner_mha_cls.Wqkv.weight"):
            move("inner_mha_cls.Wqkv.weight", "attn.wqkv.weight", split_heads)
            move("inner_mha_cls.out_proj.weight", "attn.out_proj.weight")
            if src.has(s + "inner_mha_cls.out_proj.bias"):
                move("inner_mha_cls.out_proj.bias", "attn.out_proj.bias")
            rotary = s + "inner_mha_cls.rotary_emb.inv_freq"
            if src.has(rotary):
                conv.inv_freq.append((rotary, src.take(rotary)))
            continue
        if not src.has(s + "projections.weight"):
            raise CheckpointError(f"{where}: block {i} has neither inner_mha_cls.Wqkv.weight nor projections.weight")
        move("projections.weight", "mixer.projections.weight")
        move("filter.short_filter_weight", "mixer.featurizer", lambda t, k: _taps_2d(t, k, where))
        move("out_filter_dense.weight", "mixer.out_proj.weight")
        move("out_filter_dense.bias", "mixer.out_proj.bias")
        if src.has(s + "filter.log_poles"):  # H: modal long filter
            move("filter.log_poles", "mixer.filter.log_poles", lambda t, k: _squeeze_last(t, k, where))
            move("filter.residues", "mixer.filter.residues")
            move("filter.D", "mixer.filter.D")
        elif src.has(s + "filter.h"):
            length = src.rest[s + "filter.h"].shape[-1]
            medium = src.has(s + "filter.D")
            if medium != (length >= VORTEX_FFT_FIR_MIN_LENGTH):
                # The orientation of the taps depends on the length in vortex (FFT convolution with the impulse
                # response from 128 taps on, F.conv1d below), and only the FFT path has a gated bias D.
                raise CheckpointError(
                    f"{where}: block {i}: filter.h of length {length} "
                    f"{'with' if medium else 'without'} filter.D is not a vortex short or medium filter"
                )
            if medium:  # D: impulse response, h[:, 0] multiplies the current sample (as ours)
                move("filter.h", "mixer.filter.h", lambda t, k: _taps_2d(t, k, where))
                move("filter.D", "mixer.filter.D")
            else:  # S: conv1d orientation (as ours)
                move("filter.h", "mixer.filter.weight", lambda t, k: _taps_2d(t, k, where))
        else:
            raise CheckpointError(f"{where}: block {i} has projections but no filter.h or filter.log_poles")
    src.finish(strict)
    return conv


def _convert_savanna(state: Mapping[str, object], config: Evo2Config | None, strict: bool, where: str) -> _Converted:
    src = _Source(state, where)
    _drop_extra_state(src)
    conv = _Converted(fmt="savanna", where=where)
    groups: dict[int, set[str]] = {}
    for k in src.rest:
        if m := re.fullmatch(r"sequential\.(\d+)\.(.+)", k):
            groups.setdefault(int(m.group(1)), set()).add(m.group(2))
    # Pipeline stage indices differ between savanna versions (layer i at sequential.{i+2} with the final norm at
    # {N+3}, or {i+1} and {N+1}), so the stages are identified by what they hold.
    embeddings = [i for i, g in groups.items() if "word_embeddings.weight" in g]
    if not embeddings:
        raise CheckpointError(f"{where}: no savanna embedding (sequential.N.word_embeddings.weight)")
    emb_index = min(embeddings)
    layers = sorted(i for i, g in groups.items() if "pre_mlp_layernorm.weight" in g)
    if not layers or layers != list(range(layers[0], layers[0] + len(layers))):
        raise CheckpointError(f"{where}: savanna layer stages must be consecutive, found sequential indices {layers}")
    norms = [i for i, g in groups.items() if i > layers[-1] and "norm.weight" in g]
    if not norms:
        raise CheckpointError(f"{where}: no final norm (sequential.N.norm.weight after the last layer)")
    tables = [t for k, t in src.rest.items() if k.endswith("rotary_emb.inv_freq") and isinstance(t, torch.Tensor)]
    head_dim = config.head_dim if config else (_head_dim_from_tables(tables) or DEFAULT_HEAD_DIM)
    conv.head_dim = head_dim

    def split_heads(t: torch.Tensor, key: str) -> torch.Tensor:
        return _qkv_from_megatron(t, head_dim, key, where)

    medium_length = config.hcm_filter_length if config else Evo2Config.hcm_filter_length

    emb_key = f"sequential.{emb_index}.word_embeddings.weight"
    emb = src.take(emb_key)
    conv.put("embedding.weight", emb, emb_key)
    for i, g in groups.items():  # tied copies of the embedding held by an output stage
        for name in ("word_embeddings.weight", "final_linear.weight"):
            if name in g and src.has(f"sequential.{i}.{name}"):
                _check_tied(src.take(f"sequential.{i}.{name}"), emb, f"sequential.{i}.{name}", where)
    conv.put("final_norm.weight", src.take(f"sequential.{norms[0]}.norm.weight"), f"sequential.{norms[0]}.norm.weight")

    for li, si in enumerate(layers):
        s, d = f"sequential.{si}.", f"blocks.{li}."

        def move(src_name: str, dst_name: str, transform: Callable | None = None, s=s, d=d) -> None:
            t = src.take(s + src_name)
            conv.put(d + dst_name, transform(t, s + src_name) if transform else t, s + src_name)

        move("input_layernorm.weight", "pre_norm.weight")
        move("pre_mlp_layernorm.weight", "post_norm.weight")
        # w1 is the gate (the activated half: NeMo concatenates [w1; w2] into linear_fc1 and Megatron's GLU
        # activates the first chunk), as vortex's l1.
        move("mlp.w1.weight", "mlp.l1.weight")
        move("mlp.w2.weight", "mlp.l2.weight")
        move("mlp.w3.weight", "mlp.l3.weight")
        if not src.has(s + "mixer.hyena_proj_conv.short_conv_weight"):  # attention
            move("mixer.dense_projection.weight", "attn.wqkv.weight", split_heads)
            move("mixer.dense.weight", "attn.out_proj.weight")
            if src.has(s + "mixer.dense.bias"):
                move("mixer.dense.bias", "attn.out_proj.bias")
            for k in [k for k in src.rest if k.startswith(s) and k.endswith("rotary_emb.inv_freq")]:
                conv.inv_freq.append((k, src.take(k)))
            continue
        move("mixer.dense_projection.weight", "mixer.projections.weight")
        move("mixer.hyena_proj_conv.short_conv_weight", "mixer.featurizer", lambda t, k: _taps_2d(t, k, where))
        move("mixer.dense.weight", "mixer.out_proj.weight")
        move("mixer.dense.bias", "mixer.out_proj.bias")
        f = s + "mixer.mixer."
        # The derived filter parameters are computed in float64 and rounded once to fp32.
        if src.has(f + "filter.p"):  # H: log_poles = -exp(p) * exp(gamma), residues = R
            residues = src.take(f + "filter.R")
            n = residues.shape[-1]
            p = src.take(f + "filter.p").double().reshape(-1, n)
            gamma = src.take(f + "filter.gamma").double().reshape(-1, n)
            conv.put(d + "mixer.filter.log_poles", (-torch.exp(p) * torch.exp(gamma)).float(), f + "filter.p")
            conv.put(d + "mixer.filter.residues", residues.float().reshape(-1, n), f + "filter.R")
            move("mixer.mixer.conv_bias", "mixer.filter.D")
        elif src.has(f + "filter.h"):  # D: explicit taps times a fixed decay, stored at the training length
            h = src.take(f + "filter.h")
            decay = src.take(f + "filter.decay")
            k = min(medium_length, h.shape[-1])
            conv.put(d + "mixer.filter.h", (h[..., :k].double() * decay[..., :k].double()).float(), f + "filter.h")
            move("mixer.mixer.conv_bias", "mixer.filter.D")
        elif src.has(f + "short_conv.short_conv_weight"):  # S
            move("mixer.mixer.short_conv.short_conv_weight", "mixer.filter.weight", lambda t, k: _taps_2d(t, k, where))
            if src.has(f + "conv_bias"):  # gated bias of the NVIDIA-trained variants
                move("mixer.mixer.conv_bias", "mixer.filter.bias")
        else:
            raise CheckpointError(f"{where}: sequential.{si} (layer {li}) has a Hyena projection but no known filter")
    src.finish(strict)
    return conv


def _block_indices(keys, pattern: str, where: str) -> list[int]:
    indices = sorted({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})
    if indices != list(range(len(indices))):
        raise CheckpointError(f"{where}: block indices must be 0..N-1, found {indices}")
    return indices


def _taps_2d(t: torch.Tensor, key: str, where: str) -> torch.Tensor:
    """[C, 1, K] or [C, K] filter taps -> [C, K] (orientation unchanged)."""
    if t.dim() == 3 and t.shape[1] == 1:
        return t[:, 0]
    if t.dim() == 2:
        return t
    raise CheckpointError(f"{where}: {key} has shape {tuple(t.shape)}, expected [channels, 1, taps]")


def _squeeze_last(t: torch.Tensor, key: str, where: str) -> torch.Tensor:
    if t.dim() == 3 and t.shape[-1] == 1:
        return t[..., 0]
    if t.dim() == 2:
        return t
    raise CheckpointError(f"{where}: {key} has shape {tuple(t.shape)}, expected [groups, order, 1]")


def _qkv_from_megatron(w: torch.Tensor, head_dim: int, key: str, where: str) -> torch.Tensor:
    """Megatron fused QKV rows [heads, (q, k, v), head_dim] -> [Q; K; V]."""
    rows, hidden = w.shape
    if rows != 3 * hidden or hidden % head_dim:
        raise CheckpointError(
            f"{where}: {key} has shape {tuple(w.shape)}, which does not split into q, k, v heads of width {head_dim}"
        )
    return w.reshape(hidden // head_dim, 3, head_dim, hidden).transpose(0, 1).reshape(rows, hidden)


def _qkv_to_megatron(w: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[Q; K; V] -> Megatron fused QKV rows [heads, (q, k, v), head_dim]."""
    rows, hidden = w.shape
    return w.reshape(3, hidden // head_dim, head_dim, hidden).transpose(0, 1).reshape(rows, hidden)


def _base_from_inv_freq(t: torch.Tensor) -> float:
    """Least-squares rotary base of a stored table, snapped to a power of ten when within 1 %."""
    f = t.detach().double().cpu()
    exponents = torch.arange(f.numel(), dtype=torch.float64) * 2 / (2 * f.numel())  # inv_freq_k = base^-e_k
    log_base = float(-(exponents * f.clamp_min(1e-300).log()).sum() / exponents.pow(2).sum().clamp_min(1e-300))
    decade = round(log_base / math.log(10))
    if abs(log_base - decade * math.log(10)) < math.log(1.01):
        return float(10.0**decade)
    return float(f"{math.exp(log_base):.4g}")


def _check_rotary(conv: _Converted, cfg: Evo2Config) -> None:
    """Compare stored rotary tables with the config (our model recomputes them from rotary_base)."""
    for key, table in conv.inv_freq:
        if table.numel() != cfg.head_dim // 2:
            raise CheckpointError(
                f"{key}: rotary table of {table.numel()} frequencies implies head_dim {2 * table.numel()}, but the "
                f"config has head_dim {cfg.head_dim} ({cfg.num_heads} heads)"
            )
        if table.is_meta:
            continue
        expected = rotary_inv_freq(cfg.head_dim, cfg.rotary_base)
        if not torch.allclose(table.detach().float().cpu(), expected, rtol=ROTARY_RTOL, atol=0.0):
            raise CheckpointError(
                f"{key}: the stored rotary inv_freq corresponds to rotary_base ~{_base_from_inv_freq(table):.6g}, "
                f"but the config has rotary_base={cfg.rotary_base:g}; fix the config (or the checkpoint)"
            )


def _resolve_config(conv: _Converted, config: Evo2Config | None) -> Evo2Config:
    if config is not None:
        if conv.config is not None and conv.config.shape_dict() != config.shape_dict():
            diff = sorted(k for k, v in config.shape_dict().items() if conv.config.shape_dict().get(k) != v)
            warnings.warn(f"the given config differs from the checkpoint's own in {diff}; using the given one",
                          stacklevel=3)
        return config
    if conv.config is not None:
        return conv.config
    bases = {_base_from_inv_freq(t) for _, t in conv.inv_freq if not t.is_meta}
    if len(bases) > 1:
        raise CheckpointError(f"{conv.where}: the rotary tables disagree (bases {sorted(bases)}); pass a config")
    base = bases.pop() if bases else None
    norm_form = _NATIVE_NORM_FORM.get(conv.fmt)
    if norm_form is None:  # a bare state dict in our names: no config recorded with it
        norm_form = LEGACY_NORM_FORM
        warnings.warn(f"{conv.where}: a bare state dict records no config; RMSNorm form {norm_form!r} (the "
                      "default of Evo2Config) assumed, pass config= to choose", stacklevel=3)
    try:
        cfg = infer_config(conv.state_dict, head_dim=conv.head_dim or DEFAULT_HEAD_DIM, rotary_base=base,
                           norm_form=norm_form, where=conv.where)
    except KeyError as e:
        raise CheckpointError(f"cannot infer the config: missing tensor {e}; pass an explicit Evo2Config") from None
    return Evo2Config.from_dict({**cfg.to_dict(), "extra": {**cfg.extra, "source_format": conv.fmt, "inferred": True}})


def _config_from_metadata(metadata: Mapping[str, str], where: str) -> Evo2Config | None:
    if metadata.get("format") != FORMAT_NAME or "config" not in metadata:
        return None  # a plain safetensors state dict in our names: the config is inferred
    _check_version(metadata.get("format_version"), where)
    try:
        cfg = Evo2Config.from_dict(json.loads(metadata["config"]))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: invalid config in the file metadata: {_first_line(e)}") from None
    if metadata.get("shape_hash") and cfg.shape_hash() != metadata["shape_hash"]:
        raise CheckpointError(f"{where}: the config in the file metadata does not match its shape hash (corrupt)")
    return cfg


def _config_from_json(path: Path, weights_config: Evo2Config | None) -> Evo2Config:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read config: {_first_line(e)}") from None
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


def _list_parts(base: Path) -> dict[int, Path]:
    if not base.parent.is_dir():
        return {}
    found = {}
    for name in os.listdir(base.parent):
        m = _PART_RE.match(name)
        if m and m["base"] == base.name:
            found[int(m["index"])] = base.parent / name
    return found


def _parts_of(base: Path) -> list[Path]:
    found = _list_parts(base)
    if found and sorted(found) != list(range(len(found))):
        raise CheckpointError(f"{base}: split pieces must be numbered 0..N-1 without gaps, found {sorted(found)}")
    return [found[i] for i in range(len(found))]
