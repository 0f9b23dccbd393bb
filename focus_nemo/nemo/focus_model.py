"""FOCUS on NeMo's Megatron Hyena (Evo-2) model, tensor parallel (DESIGN I6).

`NemoFocusModel` wraps the Megatron Core `HyenaModel` that `focus_nemo.nemo.build` constructs and
adds the FOCUS adapter with the semantics of the single-device `focus_nemo.focus.FocusModel`:

* one replicated Focus embedding vector, initialised from the embedding row of
  ``FocusConfig.init_token``;
* per attention layer, Focus q/k/v (a `ColumnParallelLinear` shaped and partitioned like the base
  ``linear_qkv``: whole heads per rank) and Focus o (a `RowParallelLinear` like ``linear_proj``, bias
  included), initialised as copies of the base shards;
* every base parameter frozen.

`NemoFocusModel.forward` is the one-pass forward of DESIGN D7, computed exactly as
`FocusModel.forward`: two streams in Megatron's [sequence, batch, hidden] layout, the ordinary bases
and the Focus tokens. Hyena layers mix the ordinary stream only (D2; their norm, mixer and residual
are called piecewise instead of `HyenaLayer.forward`), norms and MLPs run on both streams, and each
attention layer evaluates the D3 mask window-batched (queries of window j against the Focus tokens of
earlier windows plus window j), with this rank's heads. Rotary embeddings use Megatron's own
frequencies (``rotary_pos_emb.inv_freq`` and ``seq_len_interpolation_factor``) at absolute positions;
a Focus token takes the position of its block's last base (D5).

`NemoFocusModel.stream` / `forward_chunk` is the bounded-memory inference path of
`FocusModel.stream`: window by window, only Focus keys/values kept across windows, and each Hyena
layer carrying its exact state (featurizer and filter FIR tails, modal state) for this rank's channels.

Adapter tensors move between the two implementations by `focus_state_dict` (full, un-sharded, in
`FocusModel.focus_parameters()` names, layouts and global block indices) and `load_focus_state_dict`
(shards per rank), so `save_adapter` writes the `focus_nemo.focus.adapter` format.

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

from focus_nemo.evo2.tokenizer import check_tokens
from focus_nemo.focus.attention import attend as _attend
from focus_nemo.focus.attention import windowed_focus_attention
from focus_nemo.focus.config import FocusConfig
from focus_nemo.focus.layout import Layout, Tokens, focus_tokens, ordinary_tokens, visible
from focus_nemo.focus.model import FrozenBaseAdapter


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


def _add(out_with_bias, residual: torch.Tensor) -> torch.Tensor:
    """residual + out (+ bias): Megatron's bias-dropout-add without dropout (the base is in eval mode)."""
    out, bias = out_with_bias if isinstance(out_with_bias, tuple) else (out_with_bias, None)
    if bias is not None:
        out = out + bias
    return residual + out


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


class NemoFocusModel(FrozenBaseAdapter):
    """A frozen Megatron `HyenaModel` plus the FOCUS adapter (see the module docstring).

    Args:
        mcore_model: the model from `build.build_hyena_model` (weights already loaded), TP any size,
            no pipeline or context parallelism, no sequence parallelism.
        config: the FOCUS configuration.
        vocab_size: cut Megatron's padded vocabulary to this many logits (None keeps the padding).
    """

    def __init__(self, mcore_model, config: FocusConfig | None = None, vocab_size: int | None = None) -> None:
        super().__init__()
        self.config = config or FocusConfig()
        self.base = mcore_model
        self.vocab_size = vocab_size
        tcfg = mcore_model.config
        if getattr(tcfg, "sequence_parallel", False) or getattr(tcfg, "context_parallel_size", 1) > 1:
            raise ValueError("NemoFocusModel: sequence / context parallelism is not supported")
        if not (mcore_model.pre_process and mcore_model.post_process):
            raise ValueError("NemoFocusModel: pipeline parallelism is not supported")
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.base.eval()
        self.num_heads = tcfg.num_attention_heads
        self.head_dim = tcfg.kv_channels
        self.hidden_size = tcfg.hidden_size
        with torch.no_grad():
            tok = torch.tensor([[self.config.init_token]], device=self._device())
            emb = self.base.embedding(input_ids=tok, position_ids=None)  # [1, 1, D], vocab-parallel summed
        self.focus_embedding = nn.Parameter(emb.reshape(-1).detach().clone())
        self.focus_proj = nn.ModuleDict(
            {str(self._global_index(layer)): NemoFocusProjections(layer.self_attention)
             for layer in self.base.decoder.layers if _is_attention(layer)})

    # ------------------------------------------------------------------ plumbing
    def _device(self) -> torch.device:
        return next(self.base.parameters()).device

    @staticmethod
    def _global_index(layer) -> int:
        # Megatron numbers layers from 1 over the whole model (pipeline offsets included); the
        # adapter names blocks by their position in the layer pattern, from 0.
        return layer.layer_number - 1

    def _rotary(self, t: torch.Tensor, positions: torch.Tensor, config) -> torch.Tensor:
        """Megatron's rotary embedding of t [N, B, h, hd] at absolute positions [N]."""
        from megatron.core.models.common.embeddings.rope_utils import apply_rotary_pos_emb

        rope = self.base.rotary_pos_emb
        inv_freq = rope.inv_freq.to(t.device)
        seq = positions.to(inv_freq.dtype)
        if rope.seq_len_interpolation_factor is not None:
            seq = seq * (1 / rope.seq_len_interpolation_factor)  # RotaryEmbedding's own expression
        freqs = torch.outer(seq, inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)[:, None, None, :]
        return apply_rotary_pos_emb(t, emb, config)

    def _qkv(self, linear, attention, h: torch.Tensor, positions: torch.Tensor):
        """h [N, B, D] -> this rank's q, k, v [B, h_local, N, hd] (q and k rotated)."""
        mixed, _ = linear(h)
        N, B = mixed.shape[:2]
        hl = attention.num_attention_heads_per_partition
        # Megatron's fused layout: per head, [q; k; v] of head_dim rows each.
        q, k, v = mixed.view(N, B, hl, 3 * self.head_dim).split(self.head_dim, dim=-1)
        q, k = self._rotary(q, positions, attention.config), self._rotary(k, positions, attention.config)
        return tuple(t.permute(1, 2, 0, 3) for t in (q, k, v))

    @staticmethod
    def _merge(o: torch.Tensor) -> torch.Tensor:
        B, H, N, hd = o.shape
        return o.permute(2, 0, 1, 3).reshape(N, B, H * hd)

    @staticmethod
    def _mlp_residual(layer, x: torch.Tensor) -> torch.Tensor:
        return _add(layer.mlp(_norm(layer.pre_mlp_layernorm, x)), x)

    # ------------------------------------------------------------------ one-pass forward
    def forward(self, tokens: torch.Tensor, k: int | None = None, window: int | None = None,
                loss: bool = False) -> torch.Tensor:
        """One-pass masked forward over a multi-window sample: tokens [B, n] -> fp32 logits [B, n, V].

        Logits are gathered over TP ranks, so every rank returns the same tensor. With ``loss=True``
        `tokens` are raw byte ids [B, n+1] (case preserved) and the result is the FOCUS objective of
        `focus_nemo.focus.loss.focus_loss` as a tensor [loss, ce, kl] (kl = 0 without distillation).
        """
        if loss:
            from focus_nemo.focus.loss import focus_loss

            terms = focus_loss(self, tokens, k=k, window=window)
            zero = terms["loss"].new_zeros(())
            return torch.stack([terms["loss"], terms["ce"], terms.get("kl", zero)])
        check_tokens(tokens, self.vocab_size or self.base.vocab_size)
        k, window = self._ratio(k, window)
        B, n = tokens.shape
        dev = self._device()
        tokens = tokens.to(dev)
        lay = Layout(n, k, window)
        ordn, foc = lay.ordinary(dev), lay.focus(dev)
        x = self.base.embedding(input_ids=tokens, position_ids=ordn.pos[None].expand(B, -1))  # [n, B, D]
        f = self.focus_embedding.to(x.dtype).expand(len(foc), B, -1)
        for layer in self.base.decoder.layers:
            if _is_attention(layer):
                x, f = self._attention_onepass(layer, x, f, lay, ordn, foc)
            else:
                x = _add(layer.mixer(_norm(layer.norm, x)), x)
            x = self._mlp_residual(layer, x)
            if len(foc):
                f = self._mlp_residual(layer, f)
        return self._head(x)

    @torch.no_grad()
    def base_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The frozen Megatron base's full-context fp32 logits [B, L, V] (gathered over TP ranks)."""
        from focus_nemo.nemo.build import forward_logits

        return forward_logits(self.base, tokens, self.vocab_size)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        dec = self.base.decoder
        if dec.post_layer_norm:
            x = _norm(dec.final_norm, x)
        weight = self.base.shared_embedding_or_output_weight() if self.base.share_embeddings_and_output_weights \
            else None
        logits, _ = self.base.output_layer(x, weight=weight, runtime_gather_output=True)
        logits = logits.transpose(0, 1)
        if self.vocab_size is not None:
            logits = logits[..., : self.vocab_size]
        return logits.float()

    def _attention_onepass(self, layer, x, f, lay: Layout, ordn: Tokens, foc: Tokens):
        sa, fp = layer.self_attention, self.focus_proj[str(self._global_index(layer))]
        q, kk, v = self._qkv(sa.linear_qkv, sa, _norm(layer.input_layernorm, x), ordn.pos)
        fq = fk = fv = None
        if len(foc):
            fq, fk, fv = self._qkv(fp.linear_qkv, sa, _norm(layer.input_layernorm, f), foc.pos)
        o_ord, o_f = windowed_focus_attention(q, kk, v, fq, fk, fv, lay, foc, self.config.scope)
        x = _add(sa.linear_proj(self._merge(o_ord)), x)
        if o_f is not None:
            f = _add(fp.linear_proj(self._merge(o_f)), f)
        return x, f

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch_size: int = 1, k: int | None = None, window: int | None = None):
        """Empty streaming state (a `focus_nemo.focus.model.FocusState` holding this rank's shards)."""
        from focus_nemo.evo2.model import KVCache
        from focus_nemo.focus.model import FocusState

        k, window = self._ratio(k, window)
        st = FocusState(k=k, window=window, memory_tokens=Tokens.empty(self._device()))
        for layer in self.base.decoder.layers:
            i = self._global_index(layer)
            if _is_attention(layer):
                st.memory[i], st.window_kv[i] = KVCache(), KVCache()
            else:
                st.hyena[i] = {"featurizer": None, "filter": None}  # None = zeros, the start of a sequence
        return st

    def forward_chunk(self, tokens: torch.Tensor, state):
        """Consume the next bases [B, c] (any c >= 1); returns their fp32 logits [B, c, V] and the state.

        As `FocusModel.forward_chunk`: the chunk is cut at window boundaries and a completed window's
        Focus tokens are run and kept as memory while its ordinary keys/values are dropped. Hyena
        layers carry their exact state (featurizer and filter FIR tails, modal state) for this rank's
        channels.
        """
        check_tokens(tokens, self.vocab_size or self.base.vocab_size)
        if tokens.shape[1] == 0:
            raise ValueError("forward_chunk: empty chunk")
        tokens = tokens.to(self._device())
        return self._consume(tokens, state)

    @staticmethod
    def _hyena_chunk(layer, h: torch.Tensor, state: dict):
        """A Megatron Hyena mixer on a chunk h [c, B, D] with carried state; ((out, bias), new state).

        NeMo's own inference path steps one token at a time after a prefill, so the chunked form is
        computed here from the layer's weights with the exact streaming kernels of `evo2.ops`. Every
        tensor is this rank's channel shard (the fused projection, featurizer and filters split by
        channel, groups intact), and the row-parallel output projection sums the ranks.
        """
        from focus_nemo.evo2.ops import causal_fir, modal_iir

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

    def _window_piece(self, tokens: torch.Tensor, st) -> torch.Tensor:
        a, c = st.offset, tokens.shape[1]
        dev = tokens.device
        q_desc = ordinary_tokens(a, a + c, st.k, st.window, dev)
        x = self.base.embedding(input_ids=tokens, position_ids=None)  # [c, B, D]
        for layer in self.base.decoder.layers:
            i = self._global_index(layer)
            if _is_attention(layer):
                sa = layer.self_attention
                q, kk, v = self._qkv(sa.linear_qkv, sa, _norm(layer.input_layernorm, x), q_desc.pos)
                wk, wv = st.window_kv[i].append(kk, v)
                mem = st.memory[i]
                w_desc = ordinary_tokens(a - st.window_kv[i].length + c, a + c, st.k, st.window, dev)
                if mem.length:
                    ks = torch.cat([mem.k[:, :, : mem.length], wk], 2)
                    vs = torch.cat([mem.v[:, :, : mem.length], wv], 2)
                    k_desc = Tokens.cat([st.memory_tokens, w_desc])
                else:
                    ks, vs, k_desc = wk, wv, w_desc
                mask = visible(q_desc, k_desc, self.config.scope)
                x = _add(sa.linear_proj(self._merge(_attend(q, ks, vs, mask))), x)
            else:
                out, st.hyena[i] = self._hyena_chunk(layer, _norm(layer.norm, x), st.hyena[i])
                x = _add(out, x)
            x = self._mlp_residual(layer, x)
        st.offset += c
        return self._head(x)

    def _compress_window(self, st, batch: int) -> None:
        """Run the completed window's Focus tokens through every layer; keep only their K/V."""
        from focus_nemo.evo2.model import KVCache

        j = st.offset // st.window - 1
        dev = self._device()
        f_desc = focus_tokens([j], st.k, st.window, dev)
        w_desc = ordinary_tokens(j * st.window, (j + 1) * st.window, st.k, st.window, dev)
        f = self.focus_embedding.to(self.base.embedding.word_embeddings.weight.dtype).expand(len(f_desc), batch, -1)
        for layer in self.base.decoder.layers:
            i = self._global_index(layer)
            if _is_attention(layer):
                sa, fp, mem, win = layer.self_attention, self.focus_proj[str(i)], st.memory[i], st.window_kv[i]
                fq, fk, fv = self._qkv(fp.linear_qkv, sa, _norm(layer.input_layernorm, f), f_desc.pos)
                parts_k = [mem.k[:, :, : mem.length]] if mem.length else []
                parts_v = [mem.v[:, :, : mem.length]] if mem.length else []
                ks = torch.cat([*parts_k, win.k[:, :, : win.length], fk], 2)
                vs = torch.cat([*parts_v, win.v[:, :, : win.length], fv], 2)
                k_desc = Tokens.cat([st.memory_tokens, w_desc, f_desc])
                mask = visible(f_desc, k_desc, self.config.scope)
                f = _add(fp.linear_proj(self._merge(_attend(fq, ks, vs, mask))), f)
                mem.append(fk, fv)
                st.window_kv[i] = KVCache()
            f = self._mlp_residual(layer, f)
        st.memory_tokens = Tokens.cat([st.memory_tokens, f_desc])

    # ------------------------------------------------------------------ adapter tensors
    def focus_state_dict(self, grads: bool = False) -> dict[str, torch.Tensor]:
        """Full (un-sharded) adapter tensors with `FocusModel.focus_parameters()` names and layouts.

        Collective over the TP group: every rank must call it; every rank gets the full tensors.

        Args:
            grads: return the parameters' gradients (zeros where there is none) instead of their values.
        """
        def value(p: torch.Tensor) -> torch.Tensor:
            if not grads:
                return p.detach()
            return p.grad.detach() if p.grad is not None else torch.zeros_like(p)

        D, H, hd = self.hidden_size, self.num_heads, self.head_dim
        out = {"focus_embedding": value(self.focus_embedding).clone()}
        for i, fp in self.focus_proj.items():
            qkv = _gather(value(fp.linear_qkv.weight), 0)  # rows [H, (q, k, v), hd]
            out[f"focus_proj.{i}.wqkv"] = qkv.reshape(H, 3, hd, D).transpose(0, 1).reshape(3 * H * hd, D)
            out[f"focus_proj.{i}.out_proj.weight"] = _gather(value(fp.linear_proj.weight), 1)
            if fp.linear_proj.bias is not None:
                out[f"focus_proj.{i}.out_proj.bias"] = value(fp.linear_proj.bias).clone()
        return out

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

    def _full_shapes(self) -> dict[str, tuple[int, ...]]:
        D, Hhd = self.hidden_size, self.num_heads * self.head_dim
        shapes = {"focus_embedding": (D,)}
        for i, fp in self.focus_proj.items():
            shapes[f"focus_proj.{i}.wqkv"] = (3 * Hhd, D)
            shapes[f"focus_proj.{i}.out_proj.weight"] = (D, Hhd)
            if fp.linear_proj.bias is not None:
                shapes[f"focus_proj.{i}.out_proj.bias"] = (D,)
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

        holder = _FullTensorView(self._full_shapes(), self.config, evo2_config)
        meta = load_adapter(holder, path)
        self.load_focus_state_dict(holder.tensors)
        self.config = holder.config
        return meta


class _FullTensorView:
    """Stands in for a FocusModel in `focus.adapter.load_adapter`: full-shape tensors to fill, config, base."""

    def __init__(self, shapes: dict, config: FocusConfig, evo2_config) -> None:
        self.tensors = {n: torch.empty(s) for n, s in shapes.items()}
        self.config = config
        self.base = SimpleNamespace(config=evo2_config)

    def focus_parameters(self) -> dict[str, torch.Tensor]:
        return self.tensors
