"""Single-device Evo-2 (StripedHyena 2) with exact chunked streaming.

Blocks (pre-norm residual, then a gated MLP), by the layer pattern of `Evo2Config`:

* Hyena blocks (S, D, H): ``z = W_in RMSNorm(u)`` (D -> 3D), a length-3 depthwise causal
  "featurizer" FIR on the 3D channels, channels regrouped per hidden channel d as
  (gate, pre, v) = (z[3d], z[3d+1], z[3d+2]), then ``y = gate * (h * (pre * v) + D * (pre * v))``
  with the block's filter h, and ``u += W_out y + b``. S: explicit length-7 filter; D: explicit
  length-128 filter; H: implicit modal filter as long as the input.
* Attention blocks (*): multi-head causal self attention with rotary embeddings at absolute
  positions (optionally linearly scaled), fused Wqkv without bias, output projection with bias.

Streaming: `init_state()` returns an `Evo2State`; `forward_chunk(tokens, state)` consumes the next
chunk and returns its logits and the new state. Hyena state is constant-size (FIR tails and the
modal state), attention keeps a plain KV cache (post-rotary keys at absolute positions).
`init_state(offset=P)` starts a stream at absolute position P (rotary angles are exact at any
position, so the logits do not depend on P: DESIGN I7).

Precision policy (DESIGN D10), defined here once and applied by every loader and by
``Module.to()`` / ``.half()`` / ``.bfloat16()``: matmul weights take the compute dtype; the Hyena
poles, residues and medium filter taps (`FP32_PARAMETER_SUFFIXES`) stay fp32 under a 16-bit dtype;
rotary tables, Hyena streaming states and logits are fp32.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from focus_nemo.evo2.config import Evo2Config
from focus_nemo.evo2.ops import (
    apply_rotary,
    attend_past_and_chunk,
    causal_fir,
    modal_iir,
    modal_powers,
    rotary_cos_sin,
    sliding_window_attention,
)
from focus_nemo.evo2.tokenizer import check_tokens

POWERS_CACHE = 1 << 22  # elements of one kept `modal_powers` table (16 MiB); larger tables are recomputed per chunk

# Parameters that stay fp32 when the model is put in a 16-bit dtype (DESIGN D10), as Arc's inference code keeps
# them: the modal poles set decay rates over up to 1M steps, where a bf16 rounding of log_poles (relative error
# 2^-9) changes the filter visibly; the medium filter taps are applied as an fp32 FFT convolution.
FP32_PARAMETER_SUFFIXES = ("mixer.filter.log_poles", "mixer.filter.residues", "mixer.filter.h")


def parameter_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype floating parameter `name` takes when the model is put in floating `dtype` (DESIGN D10)."""
    if name.endswith(FP32_PARAMETER_SUFFIXES) and torch.finfo(dtype).bits < 32:
        return torch.float32
    return dtype


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """Streaming states are kept in fp32 (or wider, for a float64 model)."""
    return torch.promote_types(dtype, torch.float32)


class RMSNorm(nn.Module):
    """RMSNorm in the form of the code the weights come from (`Evo2Config.norm_form`), computed in fp32.

    * ``"arc"``: x / (sqrt(mean(x^2)) + eps) * weight (Arc's vortex and savanna);
    * ``"nemo"``: x * rsqrt(mean(x^2) + eps) * weight (NeMo / Megatron / Transformer Engine).
    """

    def __init__(self, dim: int, eps: float, form: str = "nemo") -> None:
        super().__init__()
        if form not in ("arc", "nemo"):
            raise ValueError(f"RMSNorm: form {form!r} is not 'arc' or 'nemo'")
        self.eps = eps
        self.form = form
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        ms = xf.pow(2).mean(-1, keepdim=True)
        y = xf / (ms.sqrt() + self.eps) if self.form == "arc" else xf * torch.rsqrt(ms + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class GatedMLP(nn.Module):
    """l3(act(l1 x) * l2 x); act is GELU in layer 0 and the identity after it in Evo-2."""

    def __init__(self, cfg: Evo2Config, use_activation: bool) -> None:
        super().__init__()
        self.l1 = nn.Linear(cfg.hidden_size, cfg.ffn_hidden_size, bias=False)
        self.l2 = nn.Linear(cfg.hidden_size, cfg.ffn_hidden_size, bias=False)
        self.l3 = nn.Linear(cfg.ffn_hidden_size, cfg.hidden_size, bias=False)
        self.use_activation = use_activation
        self.gelu_approximate = "tanh" if cfg.mlp_gelu == "tanh" else "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.l1(x)
        if self.use_activation:
            g = F.gelu(g, approximate=self.gelu_approximate)
        return self.l3(g * self.l2(x))


class HyenaFilter(nn.Module):
    """The sequence filter of one Hyena block, with streaming state.

    Parameters by kind (channel d uses group d // (D / groups) for the grouped explicit filters):
      S: ``weight`` [G, K] (F.conv1d orientation: last tap = current sample), optional ``bias`` [G].
      D: ``h`` [G, K] impulse response (h[:, 0] multiplies the current sample), ``D`` [D].
      H: ``log_poles`` [D, N], ``residues`` [D, N], ``D`` [D]; h[t] = sum_n R exp(logp t).
    """

    def __init__(self, cfg: Evo2Config, kind: str) -> None:
        super().__init__()
        self.kind = kind
        D = cfg.hidden_size
        if kind == "S":
            self.groups = cfg.hcs_groups
            self.weight = nn.Parameter(torch.empty(cfg.hcs_groups, cfg.hcs_filter_length))
            self.bias = nn.Parameter(torch.zeros(cfg.hcs_groups)) if cfg.short_conv_bias else None
        elif kind == "D":
            self.groups = cfg.hcm_groups
            self.h = nn.Parameter(torch.empty(cfg.hcm_groups, cfg.hcm_filter_length))
            self.D = nn.Parameter(torch.empty(D))
        elif kind == "H":
            self.groups = cfg.hcl_groups
            self.log_poles = nn.Parameter(torch.empty(cfg.hcl_groups, cfg.state_size))
            self.residues = nn.Parameter(torch.empty(cfg.hcl_groups, cfg.state_size))
            self.D = nn.Parameter(torch.empty(D))
        else:
            raise ValueError(f"unknown Hyena filter kind {kind!r}")
        self.group_dim = D // self.groups
        self._cfg = cfg

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        cfg = self._cfg
        if self.kind == "S":
            b = 1 / math.sqrt(cfg.hcs_filter_length)
            self.weight.uniform_(-b, b, generator=generator)
        elif self.kind == "D":
            # Explicit filter with a fixed exponential decay per group (NeMo "weak" decay preset);
            # the decay is baked into h, as in the published inference checkpoints.
            K = cfg.hcm_filter_length
            h = torch.randn(self.groups, K, generator=generator) / math.sqrt(K)
            rates = torch.logspace(-2, 2, self.groups)[:, None]
            self.h.copy_(h * torch.exp(-rates * torch.linspace(0, 1, K)[None]))
            b = 1 / math.sqrt(K)
            self.D.uniform_(-b, b, generator=generator)
        else:
            gamma = torch.rand(self.groups, cfg.state_size, generator=generator)
            gamma = gamma * (cfg.modal_gamma_max - cfg.modal_gamma_min) + cfg.modal_gamma_min
            self.log_poles.copy_(-gamma)  # NeMo's logp = -exp(p) * gamma with p = 0
            self.residues.copy_(0.1 * torch.randn(self.groups, cfg.state_size, generator=generator)
                                / math.sqrt(cfg.state_size))
            self.D.uniform_(-0.1, 0.1, generator=generator)

    def _powers(self, lp: torch.Tensor, length: int) -> torch.Tensor | None:
        """`modal_powers` of the (frozen) poles for chunks of `length`, kept for the few chunk lengths a
        stream repeats; None (computed inside `modal_iir`) while the poles train or when the table is large."""
        if (self.log_poles.requires_grad and torch.is_grad_enabled()) or lp.numel() * (length + 1) > POWERS_CACHE:
            return None
        poles = self.log_poles
        # Inference tensors (a model loaded under torch.inference_mode) have no version counter: key them on
        # their values instead, so an in-place change of the poles still misses the cache.
        version = (float(poles.detach().double().sum()), float(poles.detach().double().square().sum())) \
            if poles.is_inference() else poles._version
        key = (length, version, poles.data_ptr(), lp.device, lp.dtype)
        cache = self.__dict__.setdefault("_powers_cache", {})
        if key not in cache:
            if len(cache) >= 4:
                cache.clear()
            cache[key] = modal_powers(lp, length)
        return cache[key]

    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(self.group_dim, dim=0) if self.group_dim > 1 else t

    def init_state(self, batch_size: int, device, dtype) -> dict:
        D = self._cfg.hidden_size
        if self.kind == "H":
            return {"modal": torch.zeros(batch_size, D, self._cfg.state_size, device=device, dtype=torch.float32)}
        K = self.weight.shape[-1] if self.kind == "S" else self.h.shape[-1]
        return {"fir": torch.zeros(batch_size, D, K - 1, device=device, dtype=state_dtype(dtype))}

    def forward(self, z: torch.Tensor, state: dict | None, need_state: bool) -> tuple[torch.Tensor, dict | None]:
        """z = pre * v [B, D, L] -> h * z + D * z (the gate is applied by the caller)."""
        if self.kind == "S":
            y, tail = causal_fir(z, self._expand(self.weight), None if state is None else state["fir"])
            if self.bias is not None:
                y = y + self._expand(self.bias)[:, None].to(z.dtype) * z
            return y, ({"fir": tail} if need_state else None)
        if self.kind == "D":
            taps = self._expand(self.h).flip(-1)  # impulse response -> conv1d orientation
            y, tail = causal_fir(z, taps, None if state is None else state["fir"])
            return y + self.D[:, None].to(z.dtype) * z, ({"fir": tail} if need_state else None)
        lp, r = self._expand(self.log_poles.clamp(max=0.0)), self._expand(self.residues)
        y, s = modal_iir(z, lp, r, None if state is None else state["modal"], need_state,
                         powers=self._powers(lp, z.shape[-1]))
        y = (y + self.D[:, None].float() * z.float()).to(z.dtype)
        return y, ({"modal": s} if need_state else None)


class HyenaMixer(nn.Module):
    """Input projection, featurizer FIR, gating and filter, output projection."""

    def __init__(self, cfg: Evo2Config, kind: str) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.projections = nn.Linear(D, 3 * D, bias=False)
        self.featurizer = nn.Parameter(torch.empty(3 * D, cfg.short_filter_length))  # conv1d orientation
        self.filter = HyenaFilter(cfg, kind)
        self.out_proj = nn.Linear(D, D, bias=True)

    def init_state(self, batch_size: int, device, dtype) -> dict:
        D3, K = self.featurizer.shape
        return {"featurizer": torch.zeros(batch_size, D3, K - 1, device=device, dtype=state_dtype(dtype)),
                "filter": self.filter.init_state(batch_size, device, dtype)}

    def forward(self, x: torch.Tensor, state: dict | None = None, need_state: bool = False):
        """x: normed input [B, L, D] -> (mixer output [B, L, D], new state or None)."""
        z = self.projections(x).transpose(1, 2)  # [B, 3D, L]
        z, feat_tail = causal_fir(z, self.featurizer, None if state is None else state["featurizer"])
        gate, pre, v = z[:, 0::3], z[:, 1::3], z[:, 2::3]
        y, filt_state = self.filter(pre * v, None if state is None else state["filter"], need_state)
        y = (gate * y).transpose(1, 2)
        new_state = {"featurizer": feat_tail, "filter": filt_state} if need_state else None
        return self.out_proj(y), new_state


class KVCache:
    """Key/value store [B, H, T, hd]: append at the end with amortised O(1) growth, drop the oldest
    entries (`drop_oldest`) without moving data. The live entries are ``k[:, :, start: start + length]``;
    when an append finds no room at the end and at most half the buffer would be live, they are moved
    to the front in place (compaction), so a cache that drops as much as it appends (a sliding memory)
    keeps one buffer and copies each entry O(1) times."""

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.start = 0
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = k.shape[2]
        s, end = self.start, self.start + self.length
        live = self.length + n
        if torch.is_grad_enabled() and (k.requires_grad or v.requires_grad):
            # Training through the cache (window-by-window backprop): stay functional, since
            # autograd must keep every earlier version of the entries it saved.
            self.k = k if self.k is None else torch.cat([self.k[:, :, s: end], k], 2)
            self.v = v if self.v is None else torch.cat([self.v[:, :, s: end], v], 2)
            self.start, self.length = 0, live
            return self.k, self.v
        if self.k is None or end + n > self.k.shape[2]:
            if self.k is not None and 2 * live <= self.k.shape[2]:
                # Compaction: here start > capacity - live >= live, so source and target do not overlap.
                self.k[:, :, : self.length] = self.k[:, :, s: end]
                self.v[:, :, : self.length] = self.v[:, :, s: end]
            else:
                cap = max(2 * live, 2 * self.capacity, 256)
                newk = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
                newv = v.new_empty(newk.shape)
                if self.length:
                    newk[:, :, : self.length] = self.k[:, :, s: end]
                    newv[:, :, : self.length] = self.v[:, :, s: end]
                self.k, self.v = newk, newv
            s, end = 0, self.length
        self.k[:, :, end: end + n] = k
        self.v[:, :, end: end + n] = v
        self.start, self.length = s, live
        return self.k[:, :, s: s + live], self.v[:, :, s: s + live]

    def drop_oldest(self, n: int) -> None:
        """Forget the `n` oldest entries (0 <= n <= length); nothing is copied or freed."""
        if not 0 <= n <= self.length:
            raise ValueError(f"KVCache.drop_oldest: n must be in [0, {self.length}], got {n}")
        self.start, self.length = self.start + n, self.length - n
        if self.length == 0:
            self.start = 0

    @property
    def capacity(self) -> int:
        """Entries the buffers hold room for (live, dropped and spare)."""
        return 0 if self.k is None else self.k.shape[2]

    def view(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The live entries (k, v), each [B, H, length, hd]."""
        return self.k[:, :, self.start: self.start + self.length], self.v[:, :, self.start: self.start + self.length]

    @staticmethod
    def concat(caches: list[KVCache]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Live entries of several caches, concatenated in order (None when all are empty)."""
        views = [c.view() for c in caches if c.length]
        if not views:
            return None, None
        if len(views) == 1:
            return views[0]
        return torch.cat([k for k, _ in views], 2), torch.cat([v for _, v in views], 2)

    def nbytes(self) -> int:
        """Bytes held by live entries (not the spare capacity)."""
        if self.k is None:
            return 0
        return 2 * self.length * self.k.shape[0] * self.k.shape[1] * self.k.shape[3] * self.k.element_size()


class Attention(nn.Module):
    """Multi-head self attention, fused Wqkv rows ordered [Q; K; V], rotary on the full head."""

    def __init__(self, cfg: Evo2Config) -> None:
        super().__init__()
        D = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.rotary_base = cfg.rotary_base
        self.rotary_scaling = cfg.rotary_scaling
        self.wqkv = nn.Linear(D, 3 * D, bias=False)
        self.out_proj = nn.Linear(D, D, bias=cfg.attn_out_bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)

    def qkv(self, x: torch.Tensor, positions: torch.Tensor, wqkv: torch.Tensor | None = None):
        """Project and rotate: x [B, L, D] at positions [L] (or [B, L]) -> q, k, v [B, H, L, hd]."""
        q, k, v = F.linear(x, self.wqkv.weight if wqkv is None else wqkv).chunk(3, dim=-1)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        cos, sin = rotary_cos_sin(positions, self.head_dim, self.rotary_base, self.rotary_scaling)
        if cos.dim() == 3:  # per-batch positions
            cos, sin = cos[:, None], sin[:, None]
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def merge_heads(self, o: torch.Tensor) -> torch.Tensor:
        B, H, L, hd = o.shape
        return o.transpose(1, 2).reshape(B, L, H * hd)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None = None,
                span: int | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x, positions)
        if span is not None:
            if cache is not None:
                raise ValueError("Attention: span (sliding-window attention) applies to the full forward only")
            o = sliding_window_attention(q, k, v, span)
        elif cache is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            past = cache.length
            k_all, v_all = cache.append(k, v)
            o = attend_past_and_chunk(q, k_all[:, :, :past], v_all[:, :, :past], k, v)
        return self.out_proj(self.merge_heads(o))


class Evo2Block(nn.Module):
    """One block of the hybrid: pre-norm mixer (Hyena or attention) + pre-norm gated MLP."""

    def __init__(self, cfg: Evo2Config, index: int) -> None:
        super().__init__()
        self.kind = cfg.pattern[index]
        self.pre_norm = RMSNorm(cfg.hidden_size, cfg.eps, cfg.norm_form)
        self.post_norm = RMSNorm(cfg.hidden_size, cfg.eps, cfg.norm_form)
        if self.kind == "*":
            self.attn = Attention(cfg)
        else:
            self.mixer = HyenaMixer(cfg, self.kind)
        self.mlp = GatedMLP(cfg, use_activation=(index == 0 or not cfg.activation_first_layer_only))

    @property
    def is_attention(self) -> bool:
        return self.kind == "*"

    def mlp_residual(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.post_norm(x))

    def forward(self, x, positions, state=None, need_state=False, span=None):
        if self.is_attention:
            x = x + self.attn(self.pre_norm(x), positions, state, span)
            return self.mlp_residual(x), state
        y, new_state = self.mixer(self.pre_norm(x), state, need_state)
        return self.mlp_residual(x + y), new_state


def check_offset(offset) -> int:
    """A stream's absolute starting position: a non-negative integer (positions are int64)."""
    if isinstance(offset, bool):
        raise TypeError("offset: must be an integer, got bool")
    try:
        offset = operator.index(offset)
    except TypeError:
        raise TypeError(f"offset: must be an integer, got {type(offset).__name__}") from None
    if not 0 <= offset < 2**62:
        raise ValueError(f"offset: must be a non-negative integer below 2^62, got {offset}")
    return offset


def tensor_nbytes(obj) -> int:
    """Bytes of every tensor in a (nested) dict / list / tuple of tensors."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_nbytes(v) for v in obj)
    return 0


@dataclass
class Evo2State:
    """Streaming state: per block, a Hyena state dict or a KVCache; `offset` = bases consumed."""

    blocks: list = field(default_factory=list)
    offset: int = 0

    def hyena_nbytes(self) -> int:
        return sum(tensor_nbytes(s) for s in self.blocks if isinstance(s, dict))

    def kv_nbytes(self) -> int:
        return sum(s.nbytes() for s in self.blocks if isinstance(s, KVCache))


class Evo2Model(nn.Module):
    """Evo-2 language model over byte tokens. ``model(tokens [B, L]) -> logits [B, L, vocab]``."""

    def __init__(self, cfg: Evo2Config, init: bool = True) -> None:
        super().__init__()
        self.config = cfg
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.blocks = nn.ModuleList(Evo2Block(cfg, i) for i in range(cfg.num_layers))
        self.final_norm = RMSNorm(cfg.hidden_size, cfg.eps, cfg.norm_form)
        if init and not any(p.is_meta for p in self.parameters()):
            self.reset_parameters()

    def _apply(self, fn, recurse: bool = True):
        """Module.to() / half() / bfloat16() / cuda() keep the fp32 parameters of the precision policy fp32."""
        keep = {n: p.data for n, p in self.named_parameters() if n.endswith(FP32_PARAMETER_SUFFIXES)}
        super()._apply(fn, recurse)
        for n, p in self.named_parameters():
            old = keep.get(n)
            if old is None or p.is_meta or old.is_meta or not p.is_floating_point():
                continue
            want = parameter_dtype(n, p.dtype)
            if want != p.dtype:
                p.data = old.to(device=p.device, dtype=want)
        return self

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        std = self.config.init_std
        out_std = std / math.sqrt(2 * self.config.num_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith(("out_proj.weight", "mlp.l3.weight")):
                p.copy_(torch.randn(p.shape, generator=g) * out_std)
            elif name.endswith("featurizer"):
                b = 1 / math.sqrt(self.config.short_filter_length)
                p.uniform_(-b, b, generator=g)
            elif p.dim() == 2 and ".filter." not in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)
        for block in self.blocks:
            if not block.is_attention:
                block.mixer.filter.reset_parameters(g)

    # ------------------------------------------------------------------ forward
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm + tied unembedding; logits in fp32 whatever the compute dtype (DESIGN D10)."""
        return F.linear(self.final_norm(x), self.embedding.weight).float()

    def forward(self, tokens: torch.Tensor, attention_span: int | None = None) -> torch.Tensor:
        """Full-sequence (parallel) forward: tokens [B, L] -> logits [B, L, vocab].

        `attention_span` (default None: full causal attention) restricts every attention query to the
        `attention_span` most recent positions, itself included (sliding-window attention; Hyena
        blocks still read the whole sequence).
        """
        check_tokens(tokens, self.config.vocab_size)
        x = self.embed(tokens)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        for block in self.blocks:
            x, _ = block(x, positions, span=attention_span)
        return self.head(x)

    # ------------------------------------------------------------------ streaming
    def init_state(self, batch_size: int = 1, device=None, dtype=None, offset: int = 0) -> Evo2State:
        """An empty streaming state whose first base sits at absolute position `offset` (>= 0).

        A stream started at `offset` computes what a stream started at 0 computes for the same bases (DESIGN I7):
        only attention sees positions, and rotary angles are exact at any integer position.
        """
        p = self.embedding.weight
        device = p.device if device is None else device
        dtype = p.dtype if dtype is None else dtype
        blocks = [KVCache() if b.is_attention else b.mixer.init_state(batch_size, device, dtype) for b in self.blocks]
        return Evo2State(blocks=blocks, offset=check_offset(offset))

    def forward_chunk(self, tokens: torch.Tensor, state: Evo2State) -> tuple[torch.Tensor, Evo2State]:
        """Consume the next chunk [B, C]; returns (logits [B, C, vocab], new state).

        Hyena states are replaced (not mutated); attention caches grow in place.
        """
        if tokens.shape[1] == 0:
            raise ValueError("forward_chunk: empty chunk")
        check_tokens(tokens, self.config.vocab_size)
        x = self.embed(tokens)
        positions = torch.arange(state.offset, state.offset + tokens.shape[1], device=tokens.device)
        new_blocks = []
        for block, s in zip(self.blocks, state.blocks, strict=True):
            x, s = block(x, positions, s, need_state=True)
            new_blocks.append(s)
        return self.head(x), Evo2State(blocks=new_blocks, offset=state.offset + tokens.shape[1])

    def stream(self, tokens: torch.Tensor, chunk_size: int):
        """Generator over logits of consecutive chunks of `tokens` [B, L]."""
        state = self.init_state(tokens.shape[0])
        for start in range(0, tokens.shape[1], chunk_size):
            logits, state = self.forward_chunk(tokens[:, start: start + chunk_size], state)
            yield logits

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
