"""The backbone interface FOCUS is written against (DESIGN D13), and the single-device backbone.

A backbone exposes a frozen Evo-2-style hybrid one block at a time, in its own tensor layout
(``seq_dim``: 1 for [B, L, D], 0 for Megatron's [L, B, D]). `focus_nemo.focus.model.FocusCore` runs
the one-pass forward, the dense reference, streaming and generation through these calls only:

==================================  =============================================================
``module``                          the base nn.Module (registered as ``FocusCore.base``, frozen)
``block_ids()``                     block indices in order (the adapter's block names)
``is_attention(i)``                 attention block (compressed) or Hyena block (exact state)
``embed(tokens)``                   byte ids [B, L] -> hidden states in the layout
``focus_input(vec, n, batch)``      the Focus embedding vector as n hidden states
``pre_norm(i, x)``                  the block's pre-mixer norm
``qkv(i, h, positions, proj)``      q, k, v [B, H_local, L, hd], rotated at absolute ``positions``
                                    (int64); ``proj`` = the block's Focus projections or None
``attention_heads(i)``              (heads of this process, head dim) of attention block i
``rotate(i, t, positions)``         block i's rotary embedding of t [B, H_local, L, hd] at ``positions``
``attn_out(i, o, proj)``            output projection (+ bias) of o [B, H_local, L, hd] -> layout
``mixer(i, h, state, need_state)``  Hyena mixer output (+ bias) and the new streaming state
``init_mixer_state(i, batch)``      the empty streaming state of a Hyena block
``mlp_residual(i, x)``              x + MLP(post-norm(x))
``head(x)``                         final norm + unembedding -> fp32 logits [B, L, V]
``base_logits(tokens)``             the frozen base's own full-context fp32 logits
``make_focus_projections(i)``       a new module with the block's Focus q/k/v/o, copies of the base's
``focus_embedding_init(token)``     the base's embedding row of ``token`` [D] (the Focus init, D6)
``vocab_size``, ``device``          for input checks and state allocation
==================================  =============================================================

Tensor parallelism stays inside a backbone: its q/k/v hold this rank's heads and its output
projections reduce over ranks, so the core never sees a collective.

A third backbone (BioNeMo's Megatron-Bridge ``evo2_megatron`` recipe, whose MCore ``HyenaModel`` has
the same layer objects as NeMo 2's) takes one file implementing these calls over its layers, plus a
PEFT-style transform that wraps its model in a `FocusCore` and marks the Focus parameters trainable.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class FocusProjections(nn.Module):
    """Focus q/k/v/o of one single-device attention block: the base shapes, initialised as copies (D6)."""

    def __init__(self, attn) -> None:
        super().__init__()
        self.wqkv = nn.Parameter(attn.wqkv.weight.detach().clone())
        self.out_proj = nn.Linear(attn.out_proj.in_features, attn.out_proj.out_features,
                                  bias=attn.out_proj.bias is not None)
        with torch.no_grad():
            self.out_proj.weight.copy_(attn.out_proj.weight)
            if attn.out_proj.bias is not None:
                self.out_proj.bias.copy_(attn.out_proj.bias)
        self.to(attn.wqkv.weight.device, attn.wqkv.weight.dtype)


class Evo2Backbone:
    """`focus_nemo.evo2.Evo2Model` as a FOCUS backbone ([B, L, D] layout)."""

    seq_dim = 1

    def __init__(self, model) -> None:
        self.module = model

    @property
    def vocab_size(self) -> int:
        return self.module.config.vocab_size

    @property
    def device(self) -> torch.device:
        return self.module.embedding.weight.device

    def block_ids(self) -> list[int]:
        return list(range(len(self.module.blocks)))

    def is_attention(self, i: int) -> bool:
        return self.module.blocks[i].is_attention

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.module.embed(tokens)

    def focus_input(self, vec: torch.Tensor, n: int, batch: int) -> torch.Tensor:
        return vec.to(self.module.embedding.weight.dtype).expand(batch, n, -1)

    def pre_norm(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.module.blocks[i].pre_norm(x)

    def qkv(self, i: int, h: torch.Tensor, positions: torch.Tensor, proj=None):
        return self.module.blocks[i].attn.qkv(h, positions, wqkv=None if proj is None else proj.wqkv)

    def attention_heads(self, i: int) -> tuple[int, int]:
        attn = self.module.blocks[i].attn
        return attn.num_heads, attn.head_dim

    def rotate(self, i: int, t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        from focus_nemo.evo2.ops import apply_rotary, rotary_cos_sin

        attn = self.module.blocks[i].attn
        cos, sin = rotary_cos_sin(positions, attn.head_dim, attn.rotary_base, attn.rotary_scaling)
        return apply_rotary(t, cos, sin)

    def attn_out(self, i: int, o: torch.Tensor, proj=None) -> torch.Tensor:
        attn = self.module.blocks[i].attn
        return (attn.out_proj if proj is None else proj.out_proj)(attn.merge_heads(o))

    def mixer(self, i: int, h: torch.Tensor, state=None, need_state: bool = False):
        return self.module.blocks[i].mixer(h, state, need_state)

    def init_mixer_state(self, i: int, batch: int):
        p = self.module.embedding.weight
        return self.module.blocks[i].mixer.init_state(batch, p.device, p.dtype)

    def mlp_residual(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.module.blocks[i].mlp_residual(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.head(x).float()

    def base_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.module(tokens).float()

    def make_focus_projections(self, i: int) -> nn.Module:
        return FocusProjections(self.module.blocks[i].attn)

    def focus_embedding_init(self, token: int) -> torch.Tensor:
        return self.module.embedding.weight[token].detach().clone()


def seq_take(x: torch.Tensor, dim: int, idx: torch.Tensor) -> torch.Tensor:
    """x's entries at sequence indices `idx` along `dim`."""
    return x.index_select(dim, idx)


def seq_mask(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """A [L] bool mask shaped to broadcast over a 3-d hidden-state tensor with sequence dim `dim`."""
    return mask[None, :, None] if dim == 1 else mask[:, None, None]

