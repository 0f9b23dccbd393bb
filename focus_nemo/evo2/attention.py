"""Attention over several key/value parts at once, on PyTorch's fused kernels, with exact gradients.

Streaming and FOCUS attention share one pattern: a query block sees some key sets completely (the
compressed memory, the earlier part of its window) and one set causally or through a small mask (its
own chunk). Concatenating the parts and building a dense [queries x keys] mask costs O(L * P) memory
and a copy of the whole memory per call; instead every part runs in a fused kernel that also returns
its log-sum-exp, and the parts are merged exactly:

    lse = logsumexp_i(lse_i),   out = sum_i exp(lse_i - lse) * out_i

The gradient of such a merge needs the gradient of each part's log-sum-exp, which the fused kernels
do not provide (their log-sum-exp output is not differentiable). `attention_parts` is therefore an
autograd function whose backward calls each kernel's own backward with the MERGED output and
log-sum-exp: for the union softmax P = exp(S - lse), dS = P * (dO V^T - rowsum(dO * out)), and each
part's kernel computes exactly its slice of that when given the merged (out, lse). This is the
identity ring attention uses across devices.

Kernels (picked by device and dtype, `kernel_for`):

* CPU: ``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward (fp32, bf16, fp16, fp64);
* CUDA: ``aten._scaled_dot_product_efficient_attention`` (memory-efficient; fp32, bf16, fp16; masks
  as an additive bias) and its backward;
* anything else: `MathKernel`, the same contract written with matmuls (O(Lq * Lk) per part).

Extra memory is O(Lq * heads) for the log-sum-exps beyond what each fused kernel needs; nothing loops
over key blocks in Python.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

CAUSAL = "causal"


class Part(NamedTuple):
    """One key/value set of an `attention_parts` call.

    Attributes:
        k, v: [B, H, Lk, hd].
        mask: None (every key visible to every query), ``"causal"`` (Lk == Lq, key j visible to
            query i iff j <= i), or a bool tensor [Lq, Lk] (True = visible), shared by batch and heads.
    """

    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor | str | None = None


def _bias(mask: torch.Tensor, dtype, align: int = 1) -> torch.Tensor:
    """Additive float mask [1, 1, Lq, Lk] (0 visible, -inf hidden); the last dimension's storage is
    padded to a multiple of `align` elements (the memory-efficient CUDA kernel wants aligned rows)."""
    lq, lk = mask.shape
    padded = -(-lk // align) * align
    bias = torch.full((lq, padded), -math.inf, dtype=dtype, device=mask.device)
    bias[:, :lk].masked_fill_(mask, 0.0)
    return bias[None, None, :, :lk]


class CpuFlashKernel:
    """PyTorch's fused flash-attention CPU kernel (forward returns the log-sum-exp)."""

    name = "cpu-flash"

    def forward(self, q, k, v, causal: bool, mask):
        bias = None if mask is None else _bias(mask, q.dtype)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, attn_mask=bias)
        return out, lse, bias

    @staticmethod
    def backward_layout(out: torch.Tensor) -> torch.Tensor:
        return out  # the CPU kernel honours any strides

    def backward(self, grad, q, k, v, out, lse, causal: bool, ctx):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad, q, k, v, out, lse, 0.0, causal, attn_mask=ctx)


def _sequence_major(t: torch.Tensor) -> torch.Tensor:
    """`t` [B, H, L, hd] with its storage laid out [B, L, H, hd] contiguous (a view when it already is)."""
    return t.transpose(1, 2).contiguous().transpose(1, 2)


class CudaEfficientKernel:
    """PyTorch's memory-efficient CUDA kernel. Its log-sum-exp may come back padded along the query
    dimension (to a multiple of 32); the merge uses the first Lq entries and the backward gets the
    merged values written into the padded layout it expects.

    The backward reads ``out`` in the layout its forward returns, [B, L, H, hd] contiguous seen as
    [B, H, L, hd]: it takes the batch and head strides from the tensor but fixes the sequence stride
    at H * hd (``o_strideM`` in PyTorch's ``mem_eff_attention/kernel_backward.h``), and for 16-bit
    dtypes it computes delta = rowsum(dO * out) itself from that read (fp32 computes delta with
    ordinary tensor ops, which honour any strides). The merged output is [B, H, L, hd] contiguous,
    so `backward_layout` re-lays it out once per backward; any other layout gives wrong q/k gradients
    in bf16/fp16 and reads past the end of ``out``.
    """

    name = "cuda-mem-efficient"
    forward_op = staticmethod(lambda *a: torch.ops.aten._scaled_dot_product_efficient_attention(*a))
    backward_op = staticmethod(lambda *a: torch.ops.aten._scaled_dot_product_efficient_attention_backward(*a))

    def forward(self, q, k, v, causal: bool, mask):
        bias = None if mask is None else _bias(mask, q.dtype, align=16).expand(q.shape[0], q.shape[1], -1, -1)
        out, lse, seed, offset = self.forward_op(q, k, v, bias, True, 0.0, causal)
        return out, lse[..., : q.shape[2]], (bias, lse, seed, offset)

    @staticmethod
    def backward_layout(out: torch.Tensor) -> torch.Tensor:
        """The merged output in the memory layout `backward` must be given (see the class docstring)."""
        return _sequence_major(out)

    def backward(self, grad, q, k, v, out, lse, causal: bool, ctx):
        bias, lse_layout, seed, offset = ctx
        full = lse_layout.clone()
        full[..., : q.shape[2]] = lse
        dq, dk, dv, _ = self.backward_op(grad.contiguous(), q, k, v, bias, out, full, seed, offset, 0.0,
                                         [True, True, True, False], causal)
        return dq, dk, dv


class MathKernel:
    """The kernel contract in plain matmuls (any device and dtype; O(Lq * Lk) memory per part)."""

    name = "math"

    @staticmethod
    def _scores(q, k, causal: bool, mask):
        s = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        if causal:
            mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
        if mask is not None:
            s = s.masked_fill(~mask, -math.inf)
        return s

    def forward(self, q, k, v, causal: bool, mask):
        s = self._scores(q, k, causal, mask)
        lse = torch.logsumexp(s, -1)
        p = torch.exp(s - lse.unsqueeze(-1)).nan_to_num(0.0)
        return (p @ v.float()).to(q.dtype), lse, mask

    @staticmethod
    def backward_layout(out: torch.Tensor) -> torch.Tensor:
        return out

    def backward(self, grad, q, k, v, out, lse, causal: bool, ctx):
        s = self._scores(q, k, causal, ctx)
        p = torch.exp(s - lse.unsqueeze(-1))
        g = grad.float()
        dv = p.transpose(-1, -2) @ g
        dp = g @ v.float().transpose(-1, -2)
        delta = (g * out.float()).sum(-1, keepdim=True)
        ds = p * (dp - delta) * q.shape[-1] ** -0.5
        return (ds @ k.float()).to(q.dtype), (ds.transpose(-1, -2) @ q.float()).to(k.dtype), dv.to(v.dtype)


_CPU, _CUDA, _MATH = CpuFlashKernel(), CudaEfficientKernel(), MathKernel()


def kernel_for(q: torch.Tensor):
    """The fused kernel this device and dtype run on (see the module docstring)."""
    if q.device.type == "cpu" and q.dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        return _CPU
    if q.device.type == "cuda" and q.dtype in (torch.float32, torch.bfloat16, torch.float16):
        return _CUDA
    return _MATH


def _split(parts):
    return [(p.k, p.v, p.mask == CAUSAL if isinstance(p.mask, str) else False,
             p.mask if isinstance(p.mask, torch.Tensor) else None) for p in parts]


def _merge(outs: list[torch.Tensor], lses: list[torch.Tensor], dtype) -> tuple[torch.Tensor, torch.Tensor]:
    lse = torch.logsumexp(torch.stack(lses), 0)
    out = sum(torch.exp(li - lse).unsqueeze(-1) * oi.float() for oi, li in zip(outs, lses, strict=True))
    return out.to(dtype), lse


class _PartsAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, specs, q, *kv):
        outs, lses, saved = [], [], []
        for i, (causal, mask) in enumerate(specs):
            k, v = kv[2 * i], kv[2 * i + 1]
            o, lse, kctx = kernel.forward(q, k, v, causal, mask)
            if mask is not None:  # a row that sees no key of this part contributes nothing
                lse = lse.masked_fill(~mask.any(-1), -math.inf)
            outs.append(o)
            lses.append(lse.float())
            saved.append(kctx)
        out, lse = _merge(outs, lses, q.dtype)
        ctx.kernel, ctx.specs, ctx.kctx = kernel, specs, saved
        ctx.save_for_backward(q, out, lse, *kv)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, out, lse, *kv = ctx.saved_tensors
        out = ctx.kernel.backward_layout(out)  # once for every part
        dq = torch.zeros_like(q, dtype=torch.float32)
        dkv = []
        for i, (causal, _) in enumerate(ctx.specs):
            k, v = kv[2 * i], kv[2 * i + 1]
            dqi, dk, dv = ctx.kernel.backward(grad, q, k, v, out, lse, causal, ctx.kctx[i])
            dq += dqi.float()
            dkv += [dk, dv]
        return (None, None, dq.to(q.dtype), *dkv)


def attention_parts(q: torch.Tensor, parts: list[Part], kernel=None) -> torch.Tensor:
    """Softmax attention of q [B, H, Lq, hd] over the union of `parts` (see `Part`), exactly.

    Parts with no keys are skipped; every query must see at least one key in some part. Gradients
    flow to q and to every part's k and v (see the module docstring). `kernel` overrides
    `kernel_for(q)` (tests run the CUDA branch's logic on the CPU with an emulating kernel).
    """
    parts = [p for p in parts if p.k is not None and p.k.shape[2] > 0]
    if not parts:
        raise ValueError("attention_parts: no keys to attend to")
    kernel = kernel or kernel_for(q)
    specs = [(c, m) for _, _, c, m in _split(parts)]
    kv = [t for p in parts for t in (p.k, p.v)]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, *kv))
    if needs_grad:
        return _PartsAttention.apply(kernel, specs, q, *kv)
    with torch.no_grad():
        return _PartsAttention.forward(_NoCtx(), kernel, specs, q, *kv)


class _NoCtx:
    """Stands in for autograd's ctx when nothing needs a gradient."""

    def save_for_backward(self, *tensors) -> None:
        pass
