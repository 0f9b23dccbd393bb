"""Arc's savanna training checkpoint (``torch.load(f)["module"]`` with ``sequential.{i}.`` keys):
conversion to our layout (`convert_savanna_state_dict`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from focus_nemo.evo2.checkpoint.common import (
    DEFAULT_HEAD_DIM,
    CheckpointError,
    Converted,
    Source,
    check_tied,
    drop_extra_state,
    head_dim_from_tables,
    qkv_from_megatron,
    taps_2d,
)
from focus_nemo.evo2.checkpoint.configs import finish_conversion
from focus_nemo.evo2.config import Evo2Config


def convert_savanna_state_dict(
    state_dict: Mapping[str, object], config: Evo2Config | None = None, strict: bool = True
) -> tuple[dict[str, torch.Tensor], Evo2Config]:
    """Convert an in-memory savanna ``module`` state dict to ours; returns (state dict, config)."""
    conv = convert_savanna(state_dict, config, strict, "savanna state dict")
    cfg = finish_conversion(conv, config)
    return conv.state_dict, cfg


def convert_savanna(state: Mapping[str, object], config: Evo2Config | None, strict: bool, where: str) -> Converted:
    src = Source(state, where)
    drop_extra_state(src)
    conv = Converted(fmt="savanna", where=where)
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
    head_dim = config.head_dim if config else (head_dim_from_tables(tables) or DEFAULT_HEAD_DIM)
    conv.head_dim = head_dim

    def split_heads(t: torch.Tensor, key: str) -> torch.Tensor:
        return qkv_from_megatron(t, head_dim, key, where)

    medium_length = config.hcm_filter_length if config else Evo2Config.hcm_filter_length

    emb_key = f"sequential.{emb_index}.word_embeddings.weight"
    emb = src.take(emb_key)
    conv.put("embedding.weight", emb, emb_key)
    for i, g in groups.items():  # tied copies of the embedding held by an output stage
        for name in ("word_embeddings.weight", "final_linear.weight"):
            if name in g and src.has(f"sequential.{i}.{name}"):
                check_tied(src.take(f"sequential.{i}.{name}"), emb, f"sequential.{i}.{name}", where)
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
        move("mixer.hyena_proj_conv.short_conv_weight", "mixer.featurizer", lambda t, k: taps_2d(t, k, where))
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
            move("mixer.mixer.short_conv.short_conv_weight", "mixer.filter.weight", lambda t, k: taps_2d(t, k, where))
            if src.has(f + "conv_bias"):  # gated bias of the NVIDIA-trained variants
                move("mixer.mixer.conv_bias", "mixer.filter.bias")
        else:
            raise CheckpointError(f"{where}: sequential.{si} (layer {li}) has a Hyena projection but no known filter")
    src.finish(strict)
    return conv
