"""The `Evo2Config` of a checkpoint whose file does not record it: inferred from tensor shapes
(`infer_config`), matched to a published model, checked against the rotary tables, or taken from the
``config`` argument (an `Evo2Config`, a preset name or Arc's YAML)."""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import fields

import torch

from focus_nemo.evo2.checkpoint.common import (
    DEFAULT_HEAD_DIM,
    ROTARY_RTOL,
    CheckpointError,
    Converted,
    base_from_inv_freq,
    check_state_dict,
)
from focus_nemo.evo2.config import LEGACY_NORM_FORM, PRESETS, Evo2Config
from focus_nemo.evo2.ops import rotary_inv_freq

_SHAPE_FIELDS = (
    "vocab_size", "hidden_size", "num_heads", "ffn_hidden_size", "pattern", "short_filter_length",
    "hcs_filter_length", "hcm_filter_length", "state_size", "hcs_groups", "hcm_groups", "hcl_groups",
    "short_conv_bias", "attn_out_bias",
)


# The RMSNorm form of the code that wrote each format (when the file records none).
_NATIVE_NORM_FORM = {"vortex": "arc", "savanna": "arc", "nemo2": "nemo"}


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


def check_rotary(conv: Converted, cfg: Evo2Config) -> None:
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
                f"{key}: the stored rotary inv_freq corresponds to rotary_base ~{base_from_inv_freq(table):.6g}, "
                f"but the config has rotary_base={cfg.rotary_base:g}; fix the config (or the checkpoint)"
            )


def native_norm_form(conv: Converted) -> str | None:
    """The RMSNorm form of the code the converted file comes from: the form its own config records (ours, NeMo 2),
    else that of its format's code (vortex, savanna: Arc's); None for a bare state dict in our names."""
    if conv.config is not None:
        return conv.config.norm_form
    return _NATIVE_NORM_FORM.get(conv.fmt)


def _given_norm_form(conv: Converted, config: Evo2Config) -> Evo2Config:
    """`config` with the file's RMSNorm form when the config does not choose one (`Evo2Config.norm_form_chosen`);
    a chosen form that contradicts the file's is kept, with a warning naming both."""
    native = native_norm_form(conv)
    if native is None:
        return config
    if not config.norm_form_chosen:
        return dataclasses.replace(config, norm_form=native)
    if config.norm_form != native:
        code = {"arc": "x / (rms(x) + eps), Arc's vortex and savanna",
                "nemo": "x * rsqrt(mean(x^2) + eps), NeMo's Hyena and models trained here"}
        given = config.norm_form
        warnings.warn(
            f"{conv.where}: the given config {config.name!r} sets norm_form={given!r} ({code[given]}), but the "
            f"checkpoint ({conv.fmt}) normalises in the {native!r} form ({code[native]}); using {given!r} as given. "
            f"Leave norm_form unset (or set {native!r}) to match the checkpoint's own numerics", stacklevel=4)
    return config


def resolve_config(conv: Converted, config: Evo2Config | None) -> Evo2Config:
    if config is not None:
        config = _given_norm_form(conv, config)
        if conv.config is not None and conv.config.shape_dict() != config.shape_dict():
            theirs, ours = conv.config.shape_dict(), config.shape_dict()
            diff = sorted(k for k in set(theirs) | set(ours) if k != "norm_form" and theirs.get(k) != ours.get(k))
            if diff:
                warnings.warn(f"the given config differs from the checkpoint's own in {diff}; using the given one",
                              stacklevel=3)
        return config
    if conv.config is not None:
        return conv.config
    bases = {base_from_inv_freq(t) for _, t in conv.inv_freq if not t.is_meta}
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


def finish_conversion(conv: Converted, config: Evo2Config | None) -> Evo2Config:
    """The config of a converted checkpoint (`resolve_config`), its rotary tables checked against it and
    its tensors against the model's shapes; returns the config."""
    cfg = resolve_config(conv, config)
    check_rotary(conv, cfg)
    check_state_dict(conv.state_dict, cfg, origin=conv.origin)
    return cfg
