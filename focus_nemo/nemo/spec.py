"""A Hyena stack spec for NeMo's Megatron Hyena model built from plain Megatron Core layers only.

NeMo's own spec either fuses each norm into a Transformer Engine linear (`use_te=True`) or, without
TE, still asks for `TENorm` and leaves the Hyena layers without a pre-mixer norm. This spec uses
Megatron's tensor-parallel `ColumnParallelLinear` / `RowParallelLinear`, `MLP`, `SelfAttention` with
`DotProductAttention`, and `WrappedTorchNorm` (torch RMSNorm) for every norm, so it runs on a CPU
with gloo and at any tensor-parallel size. It is the spec of every model this package builds, on GPUs
too and also where Transformer Engine is installed; checkpoints written by NeMo's TE spec load into it
by name (`focus_nemo.nemo.build.load_megatron_weights`). The parameter names it produces are those
NeMo's Savanna importer writes with `use_te=False`:

* Hyena layer i: ``decoder.layers.{i}.norm.weight``, ``mixer.dense_projection.weight``,
  ``mixer.hyena_proj_conv.short_conv_weight``, ``mixer.mixer.*`` (filter), ``mixer.dense.{weight,bias}``,
  ``pre_mlp_layernorm.weight``, ``mlp.linear_fc1.weight``, ``mlp.linear_fc2.weight``;
* attention layer i: ``input_layernorm.weight``, ``self_attention.linear_qkv.weight``,
  ``self_attention.linear_proj.{weight,bias}``, ``pre_mlp_layernorm.weight``, ``mlp.*``.
"""

from __future__ import annotations


def hyena_stack_spec():
    """The `ModuleSpec` of a `HyenaStack` made of non-TE Megatron layers (see the module docstring)."""
    from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.mlp import MLP, MLPSubmodules
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.torch_norm import WrappedTorchNorm
    from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules
    from nemo.collections.llm.gpt.model.megatron.hyena.hyena_block import HyenaStack, HyenaStackSubmodules
    from nemo.collections.llm.gpt.model.megatron.hyena.hyena_layer import HyenaLayer, HyenaLayerSubmodules
    from nemo.collections.llm.gpt.model.megatron.hyena.hyena_mixer import HyenaMixer, HyenaMixerSubmodules

    # Both layer types share the gated MLP (fc1 holds [gate; up], split per TP rank by Megatron).
    mlp = ModuleSpec(
        module=MLP, submodules=MLPSubmodules(linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear)
    )
    hyena_layer = ModuleSpec(
        module=HyenaLayer,
        submodules=HyenaLayerSubmodules(
            norm=WrappedTorchNorm,
            mixer=ModuleSpec(
                module=HyenaMixer,
                submodules=HyenaMixerSubmodules(dense_projection=ColumnParallelLinear, dense=RowParallelLinear),
            ),
            hyena_bda=get_bias_dropout_add,
            pre_mlp_layernorm=WrappedTorchNorm,
            mlp=mlp,
            mlp_bda=get_bias_dropout_add,
        ),
    )
    attention_layer = ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=WrappedTorchNorm,
            self_attention=ModuleSpec(
                module=SelfAttention,
                params={"attn_mask_type": AttnMaskType.causal},
                submodules=SelfAttentionSubmodules(
                    linear_qkv=ColumnParallelLinear,
                    core_attention=DotProductAttention,
                    linear_proj=RowParallelLinear,
                ),
            ),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=WrappedTorchNorm,
            mlp=mlp,
            mlp_bda=get_bias_dropout_add,
        ),
    )
    return ModuleSpec(
        module=HyenaStack,
        submodules=HyenaStackSubmodules(hyena_layer=hyena_layer, attention_layer=attention_layer),
    )
