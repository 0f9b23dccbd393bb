"""FOCUS on NeMo's Megatron Hyena (Evo-2) model, tensor parallel: a backbone of the one FOCUS core.

`MegatronBackbone` exposes the Megatron Core `HyenaModel` that `focus_nemo.nemo.build` constructs
through the interface of `focus_nemo.focus.backbone`, in Megatron's [sequence, batch, hidden]
layout, with this rank's heads and Hyena channels; `NemoFocusModel` is `focus_nemo.focus.FocusCore`
over it, so the one-pass forward, the dense reference, streaming and generation are the single-device
model's code (DESIGN D13, I6). What is Megatron's own lives here:

* the Focus projections: per attention layer, Focus q/k/v (a `ColumnParallelLinear` shaped and
  partitioned like the base ``linear_qkv``: whole heads per rank) and Focus o (a `RowParallelLinear`
  like ``linear_proj``, bias included), initialised as copies of the base shards; the Focus
  embedding is the (vocabulary-parallel, summed) embedding of ``FocusConfig.init_token``; the
  level-2 queries (``FocusConfig.level2``) are per local head, [this rank's heads, hd];
* rotary embeddings from Megatron's own frequencies (``rotary_pos_emb.inv_freq`` and
  ``seq_len_interpolation_factor``), angles exact at any absolute position;
* the chunked Hyena mixer with carried state (featurizer and filter FIR tails, modal state) for this
  rank's channels, computed from the layer's weights with the exact kernels of `focus_nemo.evo2.ops`;
* adapter exchange: `focus_state_dict` (full, un-sharded tensors in `FocusModel.focus_parameters()`
  names and layouts) and `load_focus_state_dict` (shards per rank), so `save_adapter` writes the
  `focus_nemo.focus.adapter` format and any TP size loads any adapter.

Usage (after ``build.init_model_parallel()`` and ``build.load_evo2_weights(...)``)::

    fm = NemoFocusModel(mcore_model, FocusConfig(k=100, window=1024), vocab_size=cfg.vocab_size)
    logits = fm(tokens)                    # [B, L, V] fp32, the same on every TP rank
    sd = fm.focus_state_dict()             # collective: call on every rank
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn

from focus_nemo.evo2.attention import CAUSAL, Part, attention_parts
from focus_nemo.evo2.ops import apply_rotary, causal_fir, modal_iir
from focus_nemo.focus.config import FocusConfig
from focus_nemo.focus.model import FocusCore


def _no_init(weight: torch.Tensor) -> None:
    # Focus projections are overwritten with the base shards right after construction; skipping
    # Megatron's initialiser also leaves its RNG streams untouched.
    return None


def _tp_group():
    from megatron.core import parallel_state

    return parallel_state.get_tensor_model_parallel_group()


def _tp_rank_size() -> tuple[int, int]:
    from megatron.core import parallel_state

    return parallel_state.get_tensor_model_parallel_rank(), parallel_state.get_tensor_model_parallel_world_size()


def _gather(shard: torch.Tensor, dim: int) -> torch.Tensor:
    """Concatenate every TP rank's shard along `dim` (collective; identity at TP=1)."""
    _, size = _tp_rank_size()
    if size == 1:
        return shard.detach().clone()
    parts = [torch.empty_like(shard) for _ in range(size)]
    torch.distributed.all_gather(parts, shard.detach().contiguous(), group=_tp_group())
    return torch.cat(parts, dim)


def _norm(norm, x: torch.Tensor) -> torch.Tensor:
    """Apply a Megatron norm as its layers do: the input cast to the parameters' dtype (the residual
    stream may be fp32 under ``fp32_residual_connection`` while the weights are bf16)."""
    return norm(x.to(norm.weight.dtype))


def _is_attention(layer) -> bool:
    return hasattr(layer, "self_attention")


class NemoFocusProjections(nn.Module):
    """Focus q/k/v/o of one Megatron attention layer: this rank's shards, copies of the base's."""

    def __init__(self, attention) -> None:
        super().__init__()
        from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear

        qkv, proj = attention.linear_qkv, attention.linear_proj
        if getattr(qkv, "bias", None) is not None:
            raise ValueError("NemoFocusProjections: a q/k/v bias is not supported (Evo-2 has none)")
        if attention.num_query_groups_per_partition != attention.num_attention_heads_per_partition:
            raise ValueError("NemoFocusProjections: grouped-query attention is not supported (Evo-2 uses MHA)")
        self.linear_qkv = ColumnParallelLinear(
            qkv.input_size, qkv.output_size, config=qkv.config, init_method=_no_init, bias=False,
            gather_output=False, skip_bias_add=False, is_expert=False, tp_group=qkv.tp_group)
        has_bias = getattr(proj, "bias", None) is not None
        self.linear_proj = RowParallelLinear(
            proj.input_size, proj.output_size, config=proj.config, init_method=_no_init, bias=has_bias,
            input_is_parallel=True, skip_bias_add=True, is_expert=False, tp_group=proj.tp_group)
        with torch.no_grad():
            self.linear_qkv.weight.copy_(qkv.weight)
            self.linear_proj.weight.copy_(proj.weight)
            if has_bias:
                self.linear_proj.bias.copy_(proj.bias)
        self.to(qkv.weight.device)


class MegatronBackbone:
    """Megatron Core's `HyenaModel` (NeMo 2, local spec) as a FOCUS backbone ([L, B, D] layout).

    Each tensor-parallel rank holds its heads and Hyena channels; the row-parallel output projections
    and the vocabulary-parallel head reduce over the ranks inside Megatron's own layers.
    """

    seq_dim = 0

    def __init__(self, mcore_model, vocab_size: int | None = None) -> None:
        tcfg = mcore_model.config
        if getattr(tcfg, "sequence_parallel", False) or getattr(tcfg, "context_parallel_size", 1) > 1:
            raise ValueError("NemoFocusModel: sequence / context parallelism is not supported")
        if not (mcore_model.pre_process and mcore_model.post_process):
            raise ValueError("NemoFocusModel: pipeline parallelism is not supported")
        self.module = mcore_model
        self._vocab = vocab_size
        self.head_dim = tcfg.kv_channels
        # Megatron numbers layers from 1 over the whole model; the adapter names blocks by their
        # position in the layer pattern, from 0.
        self.layers = {layer.layer_number - 1: layer for layer in mcore_model.decoder.layers}

    @property
    def vocab_size(self) -> int:
        return self._vocab or self.module.vocab_size

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def block_ids(self) -> list[int]:
        return list(self.layers)

    def is_attention(self, i: int) -> bool:
        return _is_attention(self.layers[i])

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.module.embedding(input_ids=tokens, position_ids=None)  # [L, B, D]

    def focus_input(self, vec: torch.Tensor, n: int, batch: int) -> torch.Tensor:
        return vec.to(self.module.embedding.word_embeddings.weight.dtype).expand(n, batch, -1)

    def pre_norm(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer = self.layers[i]
        return _norm(layer.input_layernorm if _is_attention(layer) else layer.norm, x)

    def _rotate(self, t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotary embedding of t [B, h, L, hd] at absolute int64 positions, with Megatron's own
        frequencies, angles exact at any position (`rotary_angles`)."""
        rope = self.module.rotary_pos_emb
        cos, sin = rotary_angles(positions, rope.inv_freq, rope.seq_len_interpolation_factor)
        return apply_rotary(t, cos, sin)

    def qkv(self, i: int, h: torch.Tensor, positions: torch.Tensor, proj=None):
        sa = self.layers[i].self_attention
        mixed, _ = (sa.linear_qkv if proj is None else proj.linear_qkv)(h)
        N, B = mixed.shape[:2]
        # Megatron's fused layout: per head, [q; k; v] of head_dim rows each.
        q, k, v = mixed.view(N, B, sa.num_attention_heads_per_partition, 3 * self.head_dim).split(self.head_dim, -1)
        q, k, v = (t.permute(1, 2, 0, 3) for t in (q, k, v))
        return self._rotate(q, positions), self._rotate(k, positions), v

    def attention_heads(self, i: int) -> tuple[int, int]:
        return self.layers[i].self_attention.num_attention_heads_per_partition, self.head_dim

    def rotate(self, i: int, t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self._rotate(t, positions)

    def attn_out(self, i: int, o: torch.Tensor, proj=None) -> torch.Tensor:
        sa = self.layers[i].self_attention
        B, H, N, hd = o.shape
        return _with_bias((sa.linear_proj if proj is None else proj.linear_proj)(o.permute(2, 0, 1, 3)
                                                                                 .reshape(N, B, H * hd)))

    def mixer(self, i: int, h: torch.Tensor, state=None, need_state: bool = False):
        layer = self.layers[i]
        if state is None and not need_state:
            return _with_bias(layer.mixer(h)), None
        out, new_state = _hyena_chunk(layer, h, state or {"featurizer": None, "filter": None})
        return _with_bias(out), new_state

    def init_mixer_state(self, i: int, batch: int) -> dict:
        return {"featurizer": None, "filter": None}  # None = zeros, the start of a sequence

    def mlp_residual(self, i: int, x: torch.Tensor) -> torch.Tensor:
        layer = self.layers[i]
        return x + _with_bias(layer.mlp(_norm(layer.pre_mlp_layernorm, x)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        base, dec = self.module, self.module.decoder
        if dec.post_layer_norm:
            x = _norm(dec.final_norm, x)
        weight = base.shared_embedding_or_output_weight() if base.share_embeddings_and_output_weights else None
        logits, _ = base.output_layer(x, weight=weight, runtime_gather_output=True)
        logits = logits.transpose(0, 1)
        if self._vocab is not None:
            logits = logits[..., : self._vocab]
        return logits.float()

    @torch.no_grad()
    def base_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The frozen base's full-context fp32 logits [B, L, V] (the distillation teacher).

        The base's own layers, except that attention runs through the fused kernels of
        `attention_parts` (one causal part) instead of Megatron's local ``DotProductAttention``, which
        materialises [B x heads, L, L] scores and their fp32 softmax per layer (tens of GB at 16 kb).
        Equal to `build.forward_logits` to rounding (tests/nemo/test_teacher_memory.py).
        """
        tokens = tokens.to(self.device)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(tokens)
        for i in self.block_ids():
            h = self.pre_norm(i, x)
            if self.is_attention(i):
                q, k, v = self.qkv(i, h, positions)
                x = x + self.attn_out(i, attention_parts(q, [Part(k, v, CAUSAL)]))
            else:
                x = x + self.mixer(i, h)[0]
            x = self.mlp_residual(i, x)
        return self.head(x)

    def make_focus_projections(self, i: int) -> nn.Module:
        return NemoFocusProjections(self.layers[i].self_attention)

    def focus_embedding_init(self, token: int) -> torch.Tensor:
        with torch.no_grad():
            tok = torch.tensor([[token]], device=self.device)
            emb = self.module.embedding(input_ids=tok, position_ids=None)  # [1, 1, D], vocab-parallel summed
        return emb.reshape(-1).detach().clone()


def rotary_angles(positions: torch.Tensor, inv_freq: torch.Tensor, interpolation: float | None):
    """cos/sin tables [L, 2 * len(inv_freq)] (fp32) at absolute positions, the angles computed in
    float64 so that they stay exact at any position a chromosome reaches (DESIGN D5)."""
    pos = positions.to(torch.float64)
    if interpolation is not None:
        pos = pos / interpolation
    freqs = pos[:, None] * inv_freq.to(device=positions.device, dtype=torch.float64)[None]
    emb = torch.cat([freqs, freqs], -1)
    return emb.cos().float(), emb.sin().float()


def _master(p: torch.Tensor) -> torch.Tensor:
    """`p`'s fp32 master copy where Megatron's mixed-precision optimizer keeps one (``main_param``), else `p`:
    a bf16 model's adapter is saved with the updates its 16-bit copy rounds away."""
    main = getattr(p, "main_param", None)
    return p if main is None else main


def _with_bias(out_with_bias) -> torch.Tensor:
    """out (+ bias) of a Megatron layer that returns (output, bias)."""
    out, bias = out_with_bias if isinstance(out_with_bias, tuple) else (out_with_bias, None)
    return out if bias is None else out + bias


def _hyena_chunk(layer, h: torch.Tensor, state: dict):
    """A Megatron Hyena mixer on a chunk h [c, B, D] with carried state; ((out, bias), new state).

    NeMo's own inference path steps one token at a time after a prefill, so the chunked form is
    computed here from the layer's weights with the exact streaming kernels of `evo2.ops`. Every
    tensor is this rank's channel shard (the fused projection, featurizer and filters split by
    channel, groups intact), and the row-parallel output projection sums the ranks.
    """
    mx = layer.mixer
    z, _ = mx.dense_projection(h)  # [c, B, 3 D_local], rows (gate, pre, v) per channel
    z = z.permute(1, 2, 0)
    feat = mx.hyena_proj_conv.short_conv_weight
    z, feat_tail = causal_fir(z, feat.reshape(feat.shape[0], -1), state["featurizer"])
    gate, pre, v = z[:, 0::3], z[:, 1::3], z[:, 2::3]
    u = pre * v
    op, width = mx.mixer, u.shape[1]

    def expand(t):  # per-group -> per-channel
        return t.repeat_interleave(width // t.shape[0], dim=0)

    if mx.operator_type == "hyena_short_conv":
        w = op.short_conv.short_conv_weight
        y, filt = causal_fir(u, expand(w.reshape(w.shape[0], -1)), state["filter"])
        if op.use_conv_bias:
            y = y + expand(op.conv_bias)[:, None].to(u.dtype) * u
    elif mx.operator_type == "hyena_medium_conv":
        K = op.kernel_size
        taps = expand(op.filter.h[:, :K].float() * op.filter.decay[:, :K].float()).flip(-1).to(u.dtype)
        y, filt = causal_fir(u, taps, state["filter"])
        y = y + op.conv_bias[:, None].to(u.dtype) * u
    elif mx.operator_type == "hyena":
        y, filt = modal_iir(u, expand(op.filter.get_logp()), expand(op.filter.R), state["filter"], True)
        y = (y + op.conv_bias[:, None].float() * u.float()).to(u.dtype)
    else:
        raise ValueError(f"streaming: unknown Hyena operator {mx.operator_type!r}")
    y = (gate * y).permute(2, 0, 1).contiguous()  # [c, B, D_local]
    return mx.dense(y), {"featurizer": feat_tail, "filter": filt}


class NemoFocusModel(FocusCore):
    """A frozen Megatron `HyenaModel` plus the FOCUS adapter: `FocusCore` over `MegatronBackbone`.

    Args:
        mcore_model: the model from `build.build_hyena_model` (weights already loaded), TP any size,
            no pipeline or context parallelism, no sequence parallelism.
        config: the FOCUS configuration.
        vocab_size: cut Megatron's padded vocabulary to this many logits (None keeps the padding).
    """

    def __init__(self, mcore_model, config: FocusConfig | None = None, vocab_size: int | None = None) -> None:
        super().__init__(MegatronBackbone(mcore_model, vocab_size), config)
        tcfg = mcore_model.config
        self.vocab_size = vocab_size
        self.num_heads = tcfg.num_attention_heads
        self.head_dim = tcfg.kv_channels
        self.hidden_size = tcfg.hidden_size

    def forward(self, tokens: torch.Tensor, k: int | None = None, window: int | None = None,
                memory: bool = True, loss: bool = False) -> torch.Tensor:
        """`FocusCore.forward` (fp32 logits gathered over TP ranks: every rank returns the same tensor).

        With ``loss=True`` `tokens` are raw byte ids [B, n+1] (case preserved) and the result is the
        FOCUS objective of `focus_nemo.focus.loss.focus_loss` as a tensor [loss, ce, kl] (kl = 0
        without distillation): the form Megatron's forward-backward schedule calls.
        """
        if loss:
            from focus_nemo.focus.loss import focus_loss

            terms = focus_loss(self, tokens, k=k, window=window)
            zero = terms["loss"].new_zeros(())
            return torch.stack([terms["loss"], terms["ce"], terms.get("kl", zero)])
        return super().forward(tokens, k, window, memory)

    # ------------------------------------------------------------------ adapter tensors
    def focus_state_dict(self, grads: bool = False) -> dict[str, torch.Tensor]:
        """Full (un-sharded) adapter tensors with `FocusModel.focus_parameters()` names and layouts.

        Collective over the TP group: every rank must call it; every rank gets the full tensors.

        Args:
            grads: return the parameters' gradients (zeros where there is none) instead of their values.
        """
        def value(p: torch.Tensor) -> torch.Tensor:
            if not grads:  # a 16-bit model's fp32 master copy where Megatron's optimizer keeps one (D10)
                return _master(p).detach()
            return p.grad.detach() if p.grad is not None else torch.zeros_like(p)

        D, H, hd = self.hidden_size, self.num_heads, self.head_dim
        out = {"focus_embedding": value(self.focus_embedding).clone()}
        for i, fp in self.focus_proj.items():
            qkv = _gather(value(fp.linear_qkv.weight), 0)  # rows [H, (q, k, v), hd]
            out[f"focus_proj.{i}.wqkv"] = qkv.reshape(H, 3, hd, D).transpose(0, 1).reshape(3 * H * hd, D)
            out[f"focus_proj.{i}.out_proj.weight"] = _gather(value(fp.linear_proj.weight), 1)
            if fp.linear_proj.bias is not None:
                out[f"focus_proj.{i}.out_proj.bias"] = value(fp.linear_proj.bias).clone()
        for i, q2 in self._level2_queries().items():  # [heads, hd], this rank's heads
            out[f"level2_query.{i}"] = _gather(value(q2), 0)
        return out

    def _level2_queries(self) -> dict:
        return dict(self.level2_query.items()) if "level2_query" in self._modules else {}

    @torch.no_grad()
    def load_focus_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        """Copy full adapter tensors (`focus_state_dict` / `FocusModel.focus_parameters()` form) into
        this rank's shards.

        Raises:
            ValueError: if names or shapes do not match this model.
        """
        rank, size = _tp_rank_size()
        D, H, hd = self.hidden_size, self.num_heads, self.head_dim
        want = {"focus_embedding": (self.focus_embedding, lambda t: t)}
        for i, fp in self.focus_proj.items():
            want[f"focus_proj.{i}.wqkv"] = (fp.linear_qkv.weight, lambda t: t.reshape(3, H, hd, D).transpose(0, 1)
                                            .reshape(3 * H * hd, D).chunk(size, 0)[rank])
            want[f"focus_proj.{i}.out_proj.weight"] = (fp.linear_proj.weight, lambda t: t.chunk(size, 1)[rank])
            if fp.linear_proj.bias is not None:
                want[f"focus_proj.{i}.out_proj.bias"] = (fp.linear_proj.bias, lambda t: t)
        for i, q2 in self._level2_queries().items():
            want[f"level2_query.{i}"] = (q2, lambda t: t.chunk(size, 0)[rank])
        missing, unexpected = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
        if missing or unexpected:
            raise ValueError(f"load_focus_state_dict: tensors do not match the model (missing {missing}, "
                             f"unexpected {unexpected})")
        full_shapes = self._full_shapes()
        for name, (param, shard) in want.items():
            t = sd[name]
            if tuple(t.shape) != full_shapes[name]:
                raise ValueError(f"load_focus_state_dict: {name} has shape {tuple(t.shape)}, "
                                 f"expected {full_shapes[name]}")
            param.copy_(shard(t.to(param.device, param.dtype)))
            if getattr(param, "main_param", None) is not None:  # the optimizer's fp32 master copy
                param.main_param.copy_(shard(t.to(param.device, param.main_param.dtype)))

    def _full_shapes(self) -> dict[str, tuple[int, ...]]:
        D, Hhd = self.hidden_size, self.num_heads * self.head_dim
        shapes = {"focus_embedding": (D,)}
        for i, fp in self.focus_proj.items():
            shapes[f"focus_proj.{i}.wqkv"] = (3 * Hhd, D)
            shapes[f"focus_proj.{i}.out_proj.weight"] = (D, Hhd)
            if fp.linear_proj.bias is not None:
                shapes[f"focus_proj.{i}.out_proj.bias"] = (D,)
        for i in self._level2_queries():
            shapes[f"level2_query.{i}"] = (self.num_heads, self.head_dim)
        return shapes

    # ------------------------------------------------------------------ adapter files
    def save_adapter(self, path: str | Path, evo2_config, extra: dict | None = None) -> Path | None:
        """Write the adapter in the `focus_nemo.focus.adapter` format (loadable by `FocusModel`).

        Collective (gathers the shards); TP rank 0 writes and returns the directory, others None.

        Args:
            evo2_config: the `Evo2Config` of the base, recorded as the adapter's base identity.
        """
        from focus_nemo.focus.adapter import save_adapter

        sd = self.focus_state_dict()
        if _tp_rank_size()[0] != 0:
            return None
        view = SimpleNamespace(focus_parameters=lambda: sd, config=self.config,
                               base=SimpleNamespace(config=evo2_config))
        return save_adapter(view, path, extra=extra)

    def load_adapter(self, path: str | Path, evo2_config) -> dict:
        """Load an adapter directory written by `FocusModel.save_adapter` or `save_adapter` (every rank).

        The adapter's FocusConfig replaces this model's, as in `FocusModel.load_adapter`.
        """
        from focus_nemo.focus.adapter import load_adapter

        holder = _FullTensorView(self._full_shapes(), self.config, evo2_config,
                                 {str(i): (self.num_heads, self.head_dim) for i in self.focus_proj})
        meta = load_adapter(holder, path)
        if any(n.startswith("level2_query.") for n in holder.tensors):
            self.add_level2_queries()
        self.load_focus_state_dict(holder.tensors)
        self.config = holder.config
        return meta


class _FullTensorView:
    """Stands in for a FocusModel in `focus.adapter.load_adapter`: full-shape tensors to fill, config, base."""

    def __init__(self, shapes: dict, config: FocusConfig, evo2_config, level2_shapes: dict) -> None:
        self.tensors = {n: torch.empty(s) for n, s in shapes.items()}
        self.config = config
        self.base = SimpleNamespace(config=evo2_config)
        self._level2_shapes = level2_shapes  # block -> full (heads, hd) of a level-2 query

    def add_level2_queries(self) -> None:
        for i, shape in self._level2_shapes.items():
            self.tensors.setdefault(f"level2_query.{i}", torch.zeros(shape))

    def focus_parameters(self) -> dict[str, torch.Tensor]:
        return self.tensors
