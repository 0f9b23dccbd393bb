"""Build NeMo's Megatron Hyena (Evo-2) model from an `Evo2Config`, load Evo-2 weights into it at any
tensor-parallel size, and run its forward pass to full-vocabulary logits.

The same functions run in a single process (world size 1) and under ``torchrun``, where every
rank of the torchrun world becomes one tensor-parallel rank (TP = world size). On a machine
without CUDA they use gloo and the shims of `focus_nemo.nemo.cpu_shims`.

Usage (one process, or ``torchrun --nproc_per_node 2 ...`` for TP=2)::

    from focus_nemo.evo2 import Evo2Config, Evo2Model
    from focus_nemo.nemo import build

    cfg = Evo2Config.preset("tiny")
    build.init_model_parallel()
    model = build.build_hyena_model(cfg)
    build.load_evo2_weights(model, Evo2Model(cfg).state_dict(), cfg)
    logits = build.forward_logits(model, tokens)   # [B, L, vocab] fp32, the same on every rank
"""

from __future__ import annotations

import os
import re
import socket

import torch

from focus_nemo.evo2.config import Evo2Config
from focus_nemo.evo2.nemo2 import evo2_to_megatron

# Shapes that NeMo's Hyena model takes from the defaults of its internal HyenaConfig rather than
# from the model config, so a checkpoint can only have these values: Evo2Config field -> value.
NEMO_FIXED_SHAPES = {
    "short_filter_length": 3,  # HyenaConfig.short_conv_L
    "hcs_filter_length": 7,  # HyenaConfig.hyena_short_conv_len
    "hcm_filter_length": 128,  # HyenaConfig.hyena_medium_conv_len
    "state_size": 16,  # HyenaConfig.hyena_filter_order
}


def check_nemo_compatible(cfg: Evo2Config) -> None:
    """Raise ValueError if NeMo's Hyena model cannot represent `cfg` (see NEMO_FIXED_SHAPES)."""
    bad = {k: getattr(cfg, k) for k, v in NEMO_FIXED_SHAPES.items() if getattr(cfg, k) != v}
    if bad:
        raise ValueError(f"NeMo's Hyena model fixes {NEMO_FIXED_SHAPES}; this Evo2Config has {bad}")


def hyena_config_from_evo2(cfg: Evo2Config, *, seq_length: int | None = None, tensor_parallel_size: int = 1,
                           config_class=None, **overrides):
    """The NeMo `HyenaConfig` (fp32, CPU initialisation, no fusions) describing the same model as `cfg`.

    Args:
        cfg: the Evo-2 shape.
        seq_length: NeMo's `seq_length` (the long filter's cached time axis); defaults to
            `cfg.max_seqlen`. It does not limit the input length.
        tensor_parallel_size: the TP size the model will be built with.
        config_class: a HyenaConfig subclass to build instead (its own fields go in `overrides`).
        **overrides: any other HyenaConfig field (e.g. ``params_dtype=torch.bfloat16``).

    Returns:
        nemo.collections.llm.gpt.model.hyena.HyenaConfig
    """
    from megatron.core.transformer.enums import AttnBackend
    from nemo.collections.llm.gpt.model.hyena import HyenaConfig

    check_nemo_compatible(cfg)
    kwargs = dict(
        num_layers=cfg.num_layers,
        hybrid_override_pattern=cfg.pattern,
        hidden_size=cfg.hidden_size,
        ffn_hidden_size=cfg.ffn_hidden_size,
        num_attention_heads=cfg.num_heads,
        num_groups_hyena=cfg.hcl_groups,
        num_groups_hyena_medium=cfg.hcm_groups,
        num_groups_hyena_short=cfg.hcs_groups,
        seq_length=seq_length or cfg.max_seqlen,
        rotary_base=cfg.rotary_base,
        seq_len_interpolation_factor=None if cfg.rotary_scaling == 1 else cfg.rotary_scaling,
        layernorm_epsilon=cfg.eps,
        remove_activation_post_first_layer=cfg.activation_first_layer_only,
        add_attn_proj_bias=cfg.attn_out_bias,
        use_short_conv_bias=cfg.short_conv_bias,
        make_vocab_size_divisible_by=8,
        hyena_init_method="small_init",
        hyena_output_layer_init_method="wang_init",
        tensor_model_parallel_size=tensor_parallel_size,
        params_dtype=torch.float32,
        fp16=False,
        bf16=False,
        use_cpu_initialization=True,
        # Plain PyTorch everywhere: Transformer Engine, the fused kernels and activation
        # recomputation all need CUDA, and the fused GeGLU would use the tanh approximation of
        # GELU where Evo-2 uses the exact one.
        use_te=False,
        apply_rope_fusion=False,
        # The fused bias-GeGLU uses the tanh form of GELU; it matches Evo2Config.mlp_gelu == "tanh".
        bias_activation_fusion=cfg.mlp_gelu == "tanh" and not cfg.activation_first_layer_only,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        cross_entropy_loss_fusion=False,
        attention_backend=AttnBackend.local,
        recompute_granularity=None,
        recompute_method=None,
        recompute_num_layers=None,
    )
    kwargs.update(overrides)
    return (config_class or HyenaConfig)(**kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_model_parallel(seed: int = 1234) -> int:
    """Initialise torch.distributed and Megatron model parallel with TP = world size (idempotent).

    Under torchrun (``WORLD_SIZE`` set) the process group comes from the environment; otherwise a
    one-process group is created. gloo is used without CUDA, nccl with it.

    Args:
        seed: seed of Megatron's model-parallel RNG streams (weight initialisation).

    Returns:
        The tensor-parallel size.
    """
    from megatron.core import parallel_state, tensor_parallel

    from focus_nemo.nemo import cpu_shims

    cpu_shims.apply()
    dist = torch.distributed
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if "WORLD_SIZE" in os.environ:
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            dist.init_process_group(backend=backend, init_method="env://")
        else:
            dist.init_process_group(backend=backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0,
                                    world_size=1)
    world = dist.get_world_size()
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=world)
        tensor_parallel.model_parallel_cuda_manual_seed(seed)
    return parallel_state.get_tensor_model_parallel_world_size()


def teardown() -> None:
    """Destroy Megatron's parallel state and the process group (for reuse within one process)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def build_hyena_model(cfg: Evo2Config, *, seq_length: int | None = None, **config_overrides):
    """Build NeMo's Megatron `HyenaModel` for `cfg` on this rank (call `init_model_parallel` first).

    The model uses the local torch spec of `focus_nemo.nemo.spec`, is in eval mode and lives on the
    CPU (move it yourself on a GPU machine). Its weights are Megatron's random initialisation.

    Args:
        cfg: the Evo-2 shape.
        seq_length: see `hyena_config_from_evo2`.
        **config_overrides: extra HyenaConfig fields.

    Returns:
        nemo.collections.llm.gpt.model.megatron.hyena.hyena_model.HyenaModel
    """
    from megatron.core import parallel_state

    from focus_nemo.nemo.spec import hyena_stack_spec

    if not parallel_state.model_parallel_is_initialized():
        raise RuntimeError("build_hyena_model: call init_model_parallel() first")
    tp = parallel_state.get_tensor_model_parallel_world_size()
    hcfg = hyena_config_from_evo2(cfg, seq_length=seq_length, tensor_parallel_size=tp, **config_overrides)
    return megatron_hyena_model(hcfg, hyena_stack_spec(), cfg.vocab_size).eval()


def megatron_hyena_model(hcfg, stack_spec, vocab_size: int):
    """Megatron Core's HyenaModel for NeMo config `hcfg` with `stack_spec`, on this rank's pipeline
    stage: the construction of `HyenaConfig.configure_model`, with the spec chosen by the caller."""
    from megatron.core import parallel_state
    from nemo.collections.llm.gpt.model.megatron.hyena.hyena_model import HyenaModel
    from nemo.lightning import get_vocab_size

    from focus_nemo.nemo import cpu_shims

    cpu_shims.apply_portable()  # the final norm and the projection conv without TE / causal_conv1d, any device

    return HyenaModel(
        hcfg,
        hyena_stack_spec=stack_spec,
        vocab_size=get_vocab_size(hcfg, vocab_size, hcfg.make_vocab_size_divisible_by),
        max_sequence_length=hcfg.seq_length,
        num_groups_hyena=hcfg.num_groups_hyena,
        num_groups_hyena_medium=hcfg.num_groups_hyena_medium,
        num_groups_hyena_short=hcfg.num_groups_hyena_short,
        hybrid_override_pattern=hcfg.hybrid_override_pattern,
        position_embedding_type=hcfg.position_embedding_type,
        rotary_percent=hcfg.rotary_percent,
        rotary_base=hcfg.rotary_base,
        seq_len_interpolation_factor=hcfg.seq_len_interpolation_factor,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        share_embeddings_and_output_weights=hcfg.share_embeddings_and_output_weights,
        hyena_init_method=hcfg.hyena_init_method,
        hyena_output_layer_init_method=hcfg.hyena_output_layer_init_method,
        remove_activation_post_first_layer=hcfg.remove_activation_post_first_layer,
        add_attn_proj_bias=hcfg.add_attn_proj_bias,
    )


# Tensor-parallel split of each Megatron parameter, by the end of its name: the axis along which
# rank r holds the r-th of TP equal slices. Names not listed are replicated on every rank.
_TP_AXIS = {
    "embedding.word_embeddings.weight": 0,  # vocab-parallel
    "mixer.dense_projection.weight": 0,  # column-parallel: rows = (gate, pre, v) triples of channels
    "mixer.hyena_proj_conv.short_conv_weight": 0,
    "mixer.mixer.short_conv.short_conv_weight": 0,  # filter groups
    "mixer.mixer.conv_bias": 0,
    "mixer.mixer.filter.h": 0,
    "mixer.mixer.filter.decay": 0,
    "mixer.mixer.filter.gamma": 0,
    "mixer.mixer.filter.R": 0,
    "mixer.mixer.filter.p": 0,
    "mixer.dense.weight": 1,  # row-parallel (its bias is replicated)
    "self_attention.linear_qkv.weight": 0,  # rows grouped per head, so a slice = whole heads
    "self_attention.linear_proj.weight": 1,
    "mlp.linear_fc2.weight": 1,
    "output_layer.weight": 0,
}


def shard_for_rank(name: str, full: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """This rank's part of a full (TP=1 layout) Megatron tensor."""
    if size == 1:
        return full
    if name.endswith("mlp.linear_fc1.weight"):
        # The GLU input projection holds [gate; up]; each rank holds [gate_r; up_r].
        gate, up = full.chunk(2, dim=0)
        return torch.cat([gate.chunk(size, 0)[rank], up.chunk(size, 0)[rank]], dim=0)
    for suffix, axis in _TP_AXIS.items():
        if name.endswith(suffix):
            if full.shape[axis] % size:
                raise ValueError(f"{name}: axis {axis} of {tuple(full.shape)} does not split into {size} ranks")
            return full.chunk(size, dim=axis)[rank]
    return full


# Norm names of NeMo's Transformer Engine Hyena spec, which fuses each RMSNorm into the linear layer
# after it (TELayerNormColumnParallelLinear) and leaves the norm module an IdentityOp, -> the local
# spec's names (those of NeMo's Savanna importer with use_te=False). Per layer, after
# ``decoder.layers.{i}.``; every other parameter has the same name in both specs.
TE_NORM_NAMES = {
    "mixer.dense_projection.layer_norm_weight": "norm.weight",  # Hyena layer: pre-mixer norm
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",  # attention layer
    "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight",  # both layer types
}
_LAYER_KEY = re.compile(r"^(decoder\.layers\.\d+\.)(.+)$")


def local_spec_names(state_dict: dict) -> dict[str, torch.Tensor]:
    """A Megatron Hyena state dict (full, TP=1 layout) written by either layer spec -> local-spec names.

    Accepts the names of `focus_nemo.nemo.spec` and of NeMo's Transformer Engine spec (fused norms,
    see TE_NORM_NAMES), with or without NeMo's leading ``module.``. ``_extra_state`` entries (TE's
    FP8 metadata), other non-tensor entries and the rotary ``inv_freq`` buffer are dropped.

    Raises:
        ValueError: when one parameter appears under both names.
    """
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state_dict.items():
        name = key
        while name.startswith("module."):
            name = name[len("module."):]
        if name.endswith("_extra_state") or name.endswith("rotary_pos_emb.inv_freq") or not isinstance(
                value, torch.Tensor):
            continue
        m = _LAYER_KEY.match(name)
        if m and m.group(2) in TE_NORM_NAMES:
            name = m.group(1) + TE_NORM_NAMES[m.group(2)]
        if name in out:
            raise ValueError(f"local_spec_names: {key!r} and {origin[name]!r} are the same parameter {name!r}")
        out[name], origin[name] = value, key
    return out


@torch.no_grad()
def load_megatron_weights(model, state_dict: dict, *, where: str = "load_megatron_weights") -> None:
    """Copy a full (TP=1 layout) Megatron Hyena state dict into a model built by `build_hyena_model`,
    by name, at any TP size: this rank takes its shard of every tensor.

    The state dict may come from a model of the local spec or of NeMo's Transformer Engine spec
    (`local_spec_names`), e.g. the tensors of a NeMo 2 / BioNeMo checkpoint. Megatron's vocabulary
    padding may differ (the padded rows are never indexed by real tokens). A depthwise convolution
    stored as [C, 1, K] loads into a [C, K] parameter and vice versa (NeMo's fast_conv settings).

    Raises:
        KeyError: naming every parameter of the model the state dict lacks.
        ValueError: naming tensors with no place in the model, or of the wrong shape.
    """
    from megatron.core import parallel_state

    full = local_spec_names(state_dict)
    rank = parallel_state.get_tensor_model_parallel_rank()
    size = parallel_state.get_tensor_model_parallel_world_size()
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}
    missing = sorted(k for k in target if k not in full)
    if missing:
        raise KeyError(f"{where}: no weight for Megatron parameter(s) {missing}")
    tied = full.pop("output_layer.weight", None)
    if tied is not None and "output_layer.weight" not in target:
        if not torch.equal(tied, full["embedding.word_embeddings.weight"]):
            raise ValueError(f"{where}: output_layer.weight differs from the embedding, which this model ties "
                             "to the output layer")
    elif tied is not None:
        full["output_layer.weight"] = tied
    unexpected = sorted(set(full) - set(target))
    if unexpected:
        raise ValueError(f"{where}: tensor(s) with no place in this model (another pattern or spec?): "
                         f"{unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
    for name, dst in target.items():
        src = full[name]
        if name.endswith(("embedding.word_embeddings.weight", "output_layer.weight")):
            # Megatron pads the vocabulary to a multiple of make_vocab_size_divisible_by * TP before
            # splitting it across ranks.
            rows = dst.shape[0] * size
            src = src[:rows] if src.shape[0] >= rows else torch.cat(
                [src, src.new_zeros(rows - src.shape[0], *src.shape[1:])])
        src = shard_for_rank(name, src, rank, size)
        if _unit_axis_1(src.shape) == _unit_axis_1(dst.shape):
            src = src.reshape(dst.shape)  # depthwise convolution weights: [C, 1, K] <-> [C, K]
        if src.shape != dst.shape:
            raise ValueError(f"{where}: {name} has shape {tuple(dst.shape)}, the state dict gives "
                             f"{tuple(src.shape)} for rank {rank}/{size}")
        dst.copy_(src.to(dst.dtype))


def _unit_axis_1(shape: torch.Size) -> tuple[int, ...]:
    """`shape` without a unit axis 1 ([C, 1, K] -> (C, K)); other shapes unchanged."""
    return (shape[0], *shape[2:]) if len(shape) == 3 and shape[1] == 1 else tuple(shape)


def load_evo2_weights(model, evo2_state_dict: dict, cfg: Evo2Config) -> None:
    """Copy Evo2Model weights into a Megatron HyenaModel built by `build_hyena_model`, at any TP size.

    Raises:
        KeyError / ValueError: if a parameter is missing or has the wrong shape.
    """
    load_megatron_weights(model, evo2_to_megatron(evo2_state_dict, cfg), where="load_evo2_weights")


@torch.no_grad()
def forward_logits(model, tokens: torch.Tensor, vocab_size: int | None = None) -> torch.Tensor:
    """Run the Megatron HyenaModel on token ids [B, L]; full-vocabulary fp32 logits [B, L, V].

    Tensor-parallel logit shards are gathered, so every rank returns the same tensor. Megatron's
    vocabulary padding is cut off at `vocab_size` when given.

    Note: NeMo's medium (D) filter runs a 128-tap filter through an FFT of size 2L without padding
    it, so for inputs of L <= 126 tokens its output wraps around (circular convolution); from
    L = 127 on it is the causal convolution Evo2Model computes.
    """
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    position_ids = torch.arange(tokens.shape[1], device=device).unsqueeze(0).expand_as(tokens)
    logits = model(tokens, position_ids, attention_mask=None, runtime_gather_output=True)
    if vocab_size is not None:
        logits = logits[..., :vocab_size]
    return logits.float()
