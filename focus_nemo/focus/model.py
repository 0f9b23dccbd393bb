"""FocusModel: a frozen Evo-2 plus the FOCUS adapter.

Three forward paths compute the same ordinary-base logits (DESIGN I1, I2, D7):

* `forward` (training, one pass): ordinary bases and Focus tokens are kept as two streams. Hyena
  mixers run on the ordinary stream only (Focus tokens bypass them, D2), so the Hyena part is the
  base model's exact full-sequence computation; norms and MLPs run on both streams. Attention runs
  window-batched: the queries of window j (its bases and its Focus tokens) against the memory (all
  Focus tokens, masked to windows < j) plus window j itself. That is the D3 block mask evaluated
  block-sparsely: O(n (n/k + W)) work instead of the dense O(n^2).
* `forward_dense` (reference): the literal interleaved sequence with the dense boolean mask.
* `stream` / `forward_chunk` (inference): window by window with Hyena state carried exactly and
  only Focus keys/values kept across windows; each window's Focus tokens are computed when the
  window completes and appended to the memory (bounded memory, I4).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from focus_nemo.evo2.model import Evo2Model, KVCache, tensor_nbytes
from focus_nemo.evo2.ops import attend_past_and_chunk
from focus_nemo.evo2.tokenizer import check_tokens
from focus_nemo.focus.attention import attend as _attend
from focus_nemo.focus.attention import windowed_focus_attention
from focus_nemo.focus.config import FocusConfig, check_k_window
from focus_nemo.focus.layout import Layout, Tokens, check_stream_offset, focus_tokens, ordinary_tokens, visible


class FocusProjections(nn.Module):
    """Focus q/k/v/o of one attention block: the base shapes, initialised as copies (D6)."""

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


@dataclass
class FocusState:
    """Streaming state: Hyena states, and per attention block the Focus memory (K/V of every Focus
    token of completed windows) and the current window's ordinary K/V."""

    hyena: dict = field(default_factory=dict)  # block index -> Hyena state dict
    memory: dict = field(default_factory=dict)  # block index -> KVCache of Focus entries
    window_kv: dict = field(default_factory=dict)  # block index -> KVCache of this window's bases
    memory_tokens: Tokens | None = None
    offset: int = 0  # bases consumed
    k: int = 0
    window: int = 0

    def memory_entries(self) -> dict[int, int]:
        return {i: c.length for i, c in self.memory.items()}

    def window_entries(self) -> dict[int, int]:
        return {i: c.length for i, c in self.window_kv.items()}

    def nbytes(self) -> dict[str, int]:
        return {"hyena": tensor_nbytes(self.hyena), "focus_memory": sum(c.nbytes() for c in self.memory.values()),
                "window": sum(c.nbytes() for c in self.window_kv.values())}


class FrozenBaseAdapter(nn.Module):
    """What every FOCUS model shares: a frozen ``self.base`` and a FocusConfig ``self.config``."""

    def train(self, mode: bool = True):
        super().train(mode)
        self.base.eval()  # the base stays frozen (no dropout or other train-mode behaviour)
        return self

    def base_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The frozen base model's full-context logits [B, L, V] (the distillation teacher)."""
        return self.base(tokens)

    def focus_parameters(self) -> dict[str, torch.Tensor]:
        """The adapter's tensors (this process's shards for tensor-parallel models), by name."""
        return {n: p for n, p in self.named_parameters() if not n.startswith("base.")}

    def _ratio(self, k: int | None, window: int | None) -> tuple[int, int]:
        k = self.config.k if k is None else k
        window = self.config.window if window is None else window
        check_k_window(k, window)
        return k, window

    def stream(self, tokens: torch.Tensor, chunk_size: int | None = None, k: int | None = None,
               window: int | None = None, state=None):
        """Yield logits for consecutive chunks of tokens [B, L] with bounded attention memory."""
        if state is None:
            state = self.init_state(tokens.shape[0], k, window)
        chunk_size = chunk_size or state.window
        if chunk_size < 1:
            raise ValueError(f"stream: chunk_size must be >= 1, got {chunk_size}")
        for s in range(0, tokens.shape[1], chunk_size):
            logits, state = self.forward_chunk(tokens[:, s: s + chunk_size], state)
            yield logits

    def _consume(self, tokens: torch.Tensor, state):
        """Feed bases piece by piece, cut at window boundaries (`_window_piece`), and compress each
        window as it completes (`_compress_window`); returns (logits [B, c, V], state)."""
        out, start = [], 0
        while start < tokens.shape[1]:
            room = state.window - state.offset % state.window
            piece = tokens[:, start: start + room]
            out.append(self._window_piece(piece, state))
            start += piece.shape[1]
            if state.offset % state.window == 0:
                self._compress_window(state, tokens.shape[0])
        return torch.cat(out, 1), state


class FocusModel(FrozenBaseAdapter):
    """Frozen Evo-2 base + trainable Focus embedding and per-attention-block Focus projections."""

    def __init__(self, base: Evo2Model, config: FocusConfig | None = None) -> None:
        super().__init__()
        self.config = config or FocusConfig()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.base.eval()
        emb = base.embedding.weight
        self.focus_embedding = nn.Parameter(emb[self.config.init_token].detach().clone())
        self.focus_proj = nn.ModuleDict(
            {str(i): FocusProjections(b.attn) for i, b in enumerate(base.blocks) if b.is_attention}
        )

    # ------------------------------------------------------------------ parameters
    def _focus_input(self, n: int, batch: int, dtype) -> torch.Tensor:
        return self.focus_embedding.to(dtype).expand(batch, n, -1)

    # ------------------------------------------------------------------ one-pass forward
    def forward(self, tokens: torch.Tensor, k: int | None = None, window: int | None = None,
                memory: bool = True) -> torch.Tensor:
        """One-pass masked forward over a multi-window sample: tokens [B, n] -> logits [B, n, V].

        With ``memory=False`` no Focus tokens are used: attention sees only the current window (the
        fixed-window truncation baseline at the same window; Hyena still reads the whole sample).
        """
        check_tokens(tokens, self.base.config.vocab_size)
        k, window = self._ratio(k, window)
        B, n = tokens.shape
        lay = Layout(n, k, window)
        dev = tokens.device
        ordn, foc = lay.ordinary(dev), (lay.focus(dev) if memory else Tokens.empty(dev))
        x = self.base.embed(tokens)
        f = self._focus_input(len(foc), B, x.dtype)
        for i, block in enumerate(self.base.blocks):
            if block.is_attention:
                x, f = self._attention_onepass(i, block, x, f, lay, ordn, foc)
            else:
                y, _ = block.mixer(block.pre_norm(x))
                x = x + y
            x = block.mlp_residual(x)
            if len(foc):
                f = block.mlp_residual(f)
        return self.base.head(x)

    def _attention_onepass(self, i, block, x, f, lay: Layout, ordn: Tokens, foc: Tokens):
        attn, fp = block.attn, self.focus_proj[str(i)]
        q, kk, v = attn.qkv(block.pre_norm(x), ordn.pos)
        fq = fk = fv = None
        if len(foc):
            fq, fk, fv = attn.qkv(block.pre_norm(f), foc.pos, wqkv=fp.wqkv)
        o_ord, o_f = windowed_focus_attention(q, kk, v, fq, fk, fv, lay, foc, self.config.scope)
        x = x + attn.out_proj(attn.merge_heads(o_ord))
        if o_f is not None:
            f = f + fp.out_proj(attn.merge_heads(o_f))
        return x, f

    # ------------------------------------------------------------------ dense reference
    def forward_dense(self, tokens: torch.Tensor, k: int | None = None, window: int | None = None) -> torch.Tensor:
        """Reference: the interleaved sequence with the dense D3 mask (O(n^2) memory; tests only)."""
        check_tokens(tokens, self.base.config.vocab_size)
        k, window = self._ratio(k, window)
        B, n = tokens.shape
        lay = Layout(n, k, window)
        toks, src = lay.interleaved(tokens.device)
        is_f = toks.is_focus
        ord_idx = torch.nonzero(~is_f).squeeze(1)
        emb = self.base.embed(tokens.clamp(min=0))
        x = torch.where(is_f[None, :, None], self.focus_embedding.to(emb.dtype),
                        emb[:, src.clamp(min=0)])
        mask = visible(toks, toks, self.config.scope)
        for i, block in enumerate(self.base.blocks):
            h = block.pre_norm(x)
            if block.is_attention:
                attn, fp = block.attn, self.focus_proj[str(i)]
                q, kk, v = attn.qkv(h, toks.pos)
                fq, fk, fv = attn.qkv(h, toks.pos, wqkv=fp.wqkv)
                sel = is_f[None, None, :, None]
                q, kk, v = torch.where(sel, fq, q), torch.where(sel, fk, kk), torch.where(sel, fv, v)
                o = attn.merge_heads(_attend(q, kk, v, mask[None, None]))
                x = x + torch.where(is_f[None, :, None], fp.out_proj(o), attn.out_proj(o))
            else:
                y, _ = block.mixer(h[:, ord_idx])
                x = x.index_add(1, ord_idx, y)
            x = block.mlp_residual(x)
        return self.base.head(x[:, ord_idx])

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch_size: int = 1, k: int | None = None, window: int | None = None,
                   offset: int = 0) -> FocusState:
        """An empty streaming state whose first base sits at absolute position `offset` (a multiple of the
        window; DESIGN I7: the logits do not depend on it)."""
        k, window = self._ratio(k, window)
        p = self.base.embedding.weight
        st = FocusState(k=k, window=window, memory_tokens=Tokens.empty(p.device),
                        offset=check_stream_offset(offset, window))
        for i, b in enumerate(self.base.blocks):
            if b.is_attention:
                st.memory[i], st.window_kv[i] = KVCache(), KVCache()
            else:
                st.hyena[i] = b.mixer.init_state(batch_size, p.device, p.dtype)
        return st

    def forward_chunk(self, tokens: torch.Tensor, state: FocusState) -> tuple[torch.Tensor, FocusState]:
        """Consume the next bases [B, c] (any c >= 1); returns their logits [B, c, V] and the state.

        The chunk is cut at window boundaries; when a window completes, its Focus tokens are run and
        appended to the memory and the window's ordinary keys/values are dropped.
        """
        check_tokens(tokens, self.base.config.vocab_size)
        if tokens.shape[1] == 0:
            raise ValueError("forward_chunk: empty chunk")
        return self._consume(tokens, state)

    def _window_piece(self, tokens: torch.Tensor, st: FocusState) -> torch.Tensor:
        a, c = st.offset, tokens.shape[1]
        q_desc = ordinary_tokens(a, a + c, st.k, st.window, tokens.device)
        x = self.base.embed(tokens)
        for i, block in enumerate(self.base.blocks):
            h = block.pre_norm(x)
            if block.is_attention:
                attn = block.attn
                q, kk, v = attn.qkv(h, q_desc.pos)
                mem, win = st.memory[i], st.window_kv[i]
                # An ordinary base sees the whole memory and its window's earlier bases (all
                # visible) and this chunk causally (DESIGN D3; the scope concerns Focus queries only).
                past_k, past_v = KVCache.concat([mem, win])
                o = attend_past_and_chunk(q, past_k, past_v, kk, v)
                win.append(kk, v)
                x = x + attn.out_proj(attn.merge_heads(o))
            else:
                y, st.hyena[i] = block.mixer(h, st.hyena[i], need_state=True)
                x = x + y
            x = block.mlp_residual(x)
        st.offset += c
        return self.base.head(x)

    def _compress_window(self, st: FocusState, batch: int) -> None:
        """Run the completed window's Focus tokens through every block; keep only their K/V."""
        j = st.offset // st.window - 1
        dev = self.focus_embedding.device
        f_desc = focus_tokens([j], st.k, st.window, dev)
        w_desc = ordinary_tokens(j * st.window, (j + 1) * st.window, st.k, st.window, dev)
        f = self._focus_input(len(f_desc), batch, self.base.embedding.weight.dtype)
        for i, block in enumerate(self.base.blocks):
            if block.is_attention:
                attn, fp, mem, win = block.attn, self.focus_proj[str(i)], st.memory[i], st.window_kv[i]
                fq, fk, fv = attn.qkv(block.pre_norm(f), f_desc.pos, wqkv=fp.wqkv)
                past_k, past_v = KVCache.concat([mem, win])
                ks, vs = torch.cat([past_k, fk], 2), torch.cat([past_v, fv], 2)
                k_desc = Tokens.cat([st.memory_tokens, w_desc, f_desc])
                mask = visible(f_desc, k_desc, self.config.scope)
                f = f + fp.out_proj(attn.merge_heads(_attend(fq, ks, vs, mask)))
                mem.append(fk, fv)
                st.window_kv[i] = KVCache()
            f = block.mlp_residual(f)
        st.memory_tokens = Tokens.cat([st.memory_tokens, f_desc])

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = 4, generator: torch.Generator | None = None,
                 allowed: tuple[int, ...] | None = (65, 67, 71, 84), state: FocusState | None = None,
                 ) -> tuple[torch.Tensor, FocusState]:
        """Sample continuation bases token by token with the compressed cache.

        Args:
            prompt: [B, P] byte ids (P >= 1).
            allowed: restrict sampling to these ids (default A, C, G, T); None for the whole vocabulary.

        Returns:
            ([B, max_new_tokens] sampled ids, the streaming state after the last fed token).
        """
        state = state or self.init_state(prompt.shape[0])
        logits, state = self.forward_chunk(prompt, state)
        last = logits[:, -1].float()
        out = []
        for step in range(max_new_tokens):
            if allowed is not None:
                keep = torch.full_like(last, -math.inf)
                keep[:, list(allowed)] = 0
                last = last + keep
            if temperature <= 0:
                nxt = last.argmax(-1)
            else:
                scores = last / temperature
                if top_k:
                    kth = scores.topk(min(top_k, scores.shape[-1]), -1).values[:, -1:]
                    scores = scores.masked_fill(scores < kth, -math.inf)
                nxt = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)
            out.append(nxt)
            if step + 1 < max_new_tokens:
                logits, state = self.forward_chunk(nxt[:, None], state)
                last = logits[:, -1].float()
        return torch.stack(out, 1), state

    # ------------------------------------------------------------------ adapter files
    def save_adapter(self, path: str | Path, extra: dict | None = None) -> Path:
        from focus_nemo.focus.adapter import save_adapter

        return save_adapter(self, path, extra=extra)

    def load_adapter(self, path: str | Path) -> FocusModel:
        from focus_nemo.focus.adapter import load_adapter

        load_adapter(self, path)
        return self

    def describe(self) -> str:
        n = sum(p.numel() for p in self.focus_parameters().values())
        return json.dumps({"focus_params": n, "base_params": self.base.num_parameters(), **self.config.to_dict()})
