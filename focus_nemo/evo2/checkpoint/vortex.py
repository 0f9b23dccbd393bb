"""Arc's vortex inference checkpoint (``evo2_7b.pt``, possibly split into ``.pt.partN`` byte ranges):
conversion to our layout (`convert_vortex_state_dict`) and back (`vortex_state_dict`, `export_vortex`)."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from focus_nemo.durable import durable_write_path, scratch_file
from focus_nemo.evo2.checkpoint.common import (
    DEFAULT_HEAD_DIM,
    VORTEX_FFT_FIR_MIN_LENGTH,
    CheckpointError,
    Converted,
    Source,
    block_indices,
    check_state_dict,
    check_tied,
    drop_extra_state,
    head_dim_from_tables,
    qkv_from_megatron,
    qkv_to_megatron,
    squeeze_last,
    taps_2d,
)
from focus_nemo.evo2.checkpoint.configs import finish_conversion
from focus_nemo.evo2.config import Evo2Config, config_to_arc_yaml
from focus_nemo.evo2.model import Evo2Model
from focus_nemo.evo2.ops import rotary_inv_freq

PART_RE = re.compile(r"^(?P<base>.+)\.part(?P<index>\d+)$")


def convert_vortex_state_dict(
    state_dict: Mapping[str, object], config: Evo2Config | None = None, strict: bool = True
) -> tuple[dict[str, torch.Tensor], Evo2Config]:
    """Convert an in-memory vortex state dict (meta tensors allowed) to ours; returns (state dict, config)."""
    conv = convert_vortex(state_dict, config, strict, "vortex state dict")
    cfg = finish_conversion(conv, config)
    return conv.state_dict, cfg


def convert_vortex(state: Mapping[str, object], config: Evo2Config | None, strict: bool, where: str) -> Converted:
    src = Source(state, where)
    drop_extra_state(src)
    conv = Converted(fmt="vortex", where=where)
    tables = [t for k, t in src.rest.items() if k.endswith("rotary_emb.inv_freq") and isinstance(t, torch.Tensor)]
    head_dim = config.head_dim if config else (head_dim_from_tables(tables) or DEFAULT_HEAD_DIM)
    conv.head_dim = head_dim

    def split_heads(t: torch.Tensor, key: str) -> torch.Tensor:
        return qkv_from_megatron(t, head_dim, key, where)

    emb = src.take("embedding_layer.weight")
    conv.put("embedding.weight", emb, "embedding_layer.weight")
    if src.has("unembed.weight"):
        check_tied(src.take("unembed.weight"), emb, "unembed.weight", where)
    # Vortex's RMSNorm divides by (RMS + eps) where ours (and NeMo/TE) uses sqrt(mean square + eps); the scales
    # carry over unchanged and the difference is negligible at eps = 1e-6 for activations of normal size.
    conv.put("final_norm.weight", src.take("norm.scale"), "norm.scale")
    for i in block_indices(src.rest, r"blocks\.(\d+)\.", where):
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
        move("filter.short_filter_weight", "mixer.featurizer", lambda t, k: taps_2d(t, k, where))
        move("out_filter_dense.weight", "mixer.out_proj.weight")
        move("out_filter_dense.bias", "mixer.out_proj.bias")
        if src.has(s + "filter.log_poles"):  # H: modal long filter
            move("filter.log_poles", "mixer.filter.log_poles", lambda t, k: squeeze_last(t, k, where))
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
                move("filter.h", "mixer.filter.h", lambda t, k: taps_2d(t, k, where))
                move("filter.D", "mixer.filter.D")
            else:  # S: conv1d orientation (as ours)
                move("filter.h", "mixer.filter.weight", lambda t, k: taps_2d(t, k, where))
        else:
            raise CheckpointError(f"{where}: block {i} has projections but no filter.h or filter.log_poles")
    src.finish(strict)
    return conv


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
            out[d + "inner_mha_cls.Wqkv.weight"] = qkv_to_megatron(wqkv, config.head_dim)
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
    written = []
    with scratch_file(f".{path.name}.", path.parent) as joined:
        torch.save(vsd, joined)
        with open(joined, "rb") as src:
            while chunk := src.read(part_size):
                part = path.with_name(f"{path.name}.part{len(written)}")
                durable_write_path(part, lambda tmp, data=chunk: tmp.write_bytes(data))
                written.append(part)
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


def _list_parts(base: Path) -> dict[int, Path]:
    if not base.parent.is_dir():
        return {}
    found = {}
    for name in os.listdir(base.parent):
        m = PART_RE.match(name)
        if m and m["base"] == base.name:
            found[int(m["index"])] = base.parent / name
    return found


def parts_of(base: Path) -> list[Path]:
    found = _list_parts(base)
    if found and sorted(found) != list(range(len(found))):
        raise CheckpointError(f"{base}: split pieces must be numbered 0..N-1 without gaps, found {sorted(found)}")
    return [found[i] for i in range(len(found))]
