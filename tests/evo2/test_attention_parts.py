"""attention_parts: several key sets in fused kernels, merged by log-sum-exp, with exact gradients.

The dense reference is PyTorch's SDPA over the concatenated keys with the concatenated boolean
mask; outputs and the gradients of q and of every part's k and v must agree. The CUDA branch's
logic (padded log-sum-exp, aligned additive bias, backward fed the merged output and log-sum-exp)
runs here on the CPU through an emulation of the memory-efficient kernel's contract.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from focus_nemo.evo2.attention import (
    CAUSAL,
    CpuFlashKernel,
    CudaEfficientKernel,
    MathKernel,
    Part,
    attention_parts,
    kernel_for,
)
from focus_nemo.evo2.ops import attend_past_and_chunk


def _emulated_efficient_forward(q, k, v, bias, compute_lse, dropout, causal):
    """aten._scaled_dot_product_efficient_attention's contract, on the CPU: log-sum-exp padded to a
    multiple of 32 query rows (garbage in the padding), bias an additive float mask, and the output
    [B, H, L, hd] laid out [B, L, H, hd] contiguous (the kernel writes BMHK and returns its transpose)."""
    assert compute_lse and dropout == 0.0
    if bias is not None:
        assert bias.dtype == q.dtype and bias.dim() == 4
        # rows of the bias storage must be 16-element aligned, as the CUDA kernel requires
        assert bias.stride(-2) % 16 == 0
    s = (q.float() @ k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        s = s.masked_fill(~torch.ones(s.shape[-2:], dtype=torch.bool).tril(), -math.inf)
    if bias is not None:
        s = s + bias.float()
    lse = torch.logsumexp(s, -1)
    out = (torch.exp(s - lse[..., None]).nan_to_num(0.0) @ v.float()).to(q.dtype)
    out = out.transpose(1, 2).contiguous().transpose(1, 2)
    lq = q.shape[2]
    padded = torch.full((*lse.shape[:-1], -(-lq // 32) * 32), 123.0)
    padded[..., :lq] = lse
    return out, padded, torch.tensor(0), torch.tensor(0)


def kernel_read_of_out(out: torch.Tensor) -> torch.Tensor:
    """`out` [B, H, M, Kv] as the memory-efficient backward kernel reads it.

    `_scaled_dot_product_efficient_attention_backward` hands the kernel out.transpose(1, 2) (BMHK),
    which takes the batch and head strides from that tensor but a FIXED sequence stride
    H * Kv (``o_strideM()`` in ``mem_eff_attention/kernel_backward.h``) and a contiguous last dimension.
    A read that would leave the tensor's storage (the CUDA kernel reads whatever lies there) fails here.
    """
    B, H, M, Kv = out.shape
    strides = (out.stride(0), H * Kv, out.stride(1), 1)  # BMHK: batch, sequence (fixed), head, channel
    last = out.storage_offset() + sum((n - 1) * st for n, st in zip((B, M, H, Kv), strides, strict=True))
    available = out.untyped_storage().nbytes() // out.element_size()
    assert last < available, (f"the kernel would read `out` up to element {last} of a storage of {available} "
                              f"(strides {tuple(out.stride())}, not the [B, L, H, hd] layout it assumes)")
    return torch.as_strided(out, (B, M, H, Kv), strides, out.storage_offset()).transpose(1, 2)


def _emulated_efficient_backward(grad, q, k, v, bias, out, lse, seed, offset, dropout, mask4, causal):
    """The backward's contract: padded log-sum-exp, and delta = rowsum(dO * out) computed from
    `out` as the kernel reads it for 16-bit dtypes (`kernel_read_of_out`), with ordinary tensor ops
    (any strides) for fp32, as ``_efficient_attention_backward`` does."""
    lq = q.shape[2]
    assert lse.shape[-1] % 32 == 0 and lse.shape[-1] >= lq  # the padded layout the kernel expects
    read = kernel_read_of_out(out) if q.dtype in (torch.float16, torch.bfloat16) else out
    g = grad.float()
    delta = (g * read.float()).sum(-1, keepdim=True)
    m = None if bias is None else torch.isfinite(bias[0, 0])
    s = MathKernel._scores(q, k, causal, m)
    p = torch.exp(s - lse[..., :lq, None])
    dv = p.transpose(-1, -2) @ g
    ds = p * (g @ v.float().transpose(-1, -2) - delta) * q.shape[-1] ** -0.5
    return (ds @ k.float()).to(q.dtype), (ds.transpose(-1, -2) @ q.float()).to(k.dtype), dv.to(v.dtype), None


class EmulatedCudaKernel(CudaEfficientKernel):
    forward_op = staticmethod(_emulated_efficient_forward)
    backward_op = staticmethod(_emulated_efficient_backward)


def _case(seed=0, dtype=torch.float32, shape=(2, 3, 37, 45, 20, 16)):
    g = torch.Generator().manual_seed(seed)
    B, H, L, P, W, hd = shape

    def t(*s):
        return torch.randn(*s, generator=g).to(dtype).requires_grad_()

    q = t(B, H, L, hd)
    kp, vp, kw, vw, kn, vn = (t(B, H, n, hd) for n in (P, P, W, W, L, L))
    mask = torch.rand(L, W, generator=g) > 0.5
    mask[:5] = False  # rows that see nothing of this part
    parts = [Part(kp, vp), Part(kw, vw, mask), Part(kn, vn, CAUSAL)]
    full_mask = torch.cat([torch.ones(L, P, dtype=torch.bool), mask, torch.ones(L, L, dtype=torch.bool).tril()], 1)
    return q, parts, full_mask


def _dense(q, parts, full_mask):
    k = torch.cat([p.k for p in parts], 2)
    v = torch.cat([p.v for p in parts], 2)
    return F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=full_mask)


@pytest.mark.parametrize("kernel", [None, MathKernel(), EmulatedCudaKernel()], ids=["cpu-flash", "math", "cuda-logic"])
def test_parts_equal_dense_attention_and_gradients(kernel):
    q, parts, full_mask = _case()
    tensors = [q] + [t for p in parts for t in (p.k, p.v)]
    ref = _dense(q, parts, full_mask)
    out = attention_parts(q, parts, kernel=kernel)
    assert out.dtype == q.dtype
    assert (out.double() - ref).abs().max() < 1e-5
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want = torch.autograd.grad((ref * g).sum(), tensors)
    got = torch.autograd.grad((out.double() * g).sum(), tensors)
    for name, a, b in zip(["q", "k_mem", "v_mem", "k_win", "v_win", "k_new", "v_new"], got, want, strict=True):
        assert (a.double() - b).abs().max() < 1e-5, name


# (B, H, Lq, memory keys, masked-part keys, head dim): lengths off every multiple of 16/32, several head dims
BF16_SHAPES = [(2, 3, 37, 45, 20, 16), (1, 4, 64, 100, 33, 64), (3, 2, 130, 7, 50, 32), (1, 2, 200, 300, 90, 128)]
# bf16 gradients against float64 SDPA on the same (bf16-valued) inputs, per tensor: max |error| / max |exact|
# and the cosine. bf16 rounding alone gives <= 1.2e-2 and 1 - cosine <= 1.2e-5 on these shapes (the CPU flash
# kernel and the emulation alike); a delta computed from a misread output gives cosines of 0.8-0.9.
BF16_GRAD_TOL, BF16_GRAD_COS = 3e-2, 0.9995


def grad_errors(out, q, parts, full_mask, seed=1):
    """{name: (max |got - exact| / max |exact|, cosine(got, exact))} for the gradients of sum(out * g) with
    respect to q and every part's k and v, `exact` those of float64 SDPA on float64 copies of the same
    inputs, g a fixed random float64 cotangent."""
    tensors = [q] + [t for p in parts for t in (p.k, p.v)]
    exact = [t.detach().double().requires_grad_() for t in tensors]
    ref = _dense(exact[0], [Part(*exact[1 + 2 * i: 3 + 2 * i], p.mask) for i, p in enumerate(parts)], full_mask)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    want = torch.autograd.grad((ref * g).sum(), exact)
    got = torch.autograd.grad((out.double() * g).sum(), tensors)
    return {name: (float((a.double() - b).abs().max() / b.abs().max()),
                   float(F.cosine_similarity(a.double().flatten(), b.flatten(), dim=0)))
            for name, a, b in zip(NAMES, got, want, strict=True)}


NAMES = ["q", "k_mem", "v_mem", "k_win", "v_win", "k_new", "v_new"]


@pytest.mark.parametrize("shape", BF16_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kernel", [None, EmulatedCudaKernel()], ids=["cpu-flash", "cuda-logic"])
def test_bf16_gradients_against_float64(kernel, shape):
    """bf16 gradients of q and every part's k and v through the kernel's own backward (16-bit path:
    the CUDA kernel computes delta from `out` as it reads it) agree with float64 SDPA."""
    q, parts, full_mask = _case(seed=7, dtype=torch.bfloat16, shape=shape)
    out = attention_parts(q, parts, kernel=kernel)
    assert out.dtype == torch.bfloat16
    with torch.no_grad():
        assert float((out.double() - _dense(q, parts, full_mask)).abs().max()) < 2e-2
    for name, (rel, cos) in grad_errors(out, q, parts, full_mask).items():
        assert rel < BF16_GRAD_TOL and cos > BF16_GRAD_COS, (name, rel, cos)


def test_emulated_kernel_read_follows_strides():
    """The emulation reads `out` as the CUDA kernel does: the layout its forward returns reads back
    exactly; the [B, H, L, hd]-contiguous layout the merge produces reads past the end of `out`, and a
    layout that stays in bounds (one batch, one head per sequence row) but is not sequence-major gives
    other values."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 37, 16, generator=g, dtype=torch.bfloat16)
    seq_major = x.transpose(1, 2).contiguous().transpose(1, 2)
    assert torch.equal(kernel_read_of_out(seq_major), x)
    with pytest.raises(AssertionError, match="would read"):
        kernel_read_of_out(x.contiguous())
    wide = torch.randn(1, 3, 37, 16, generator=g).bfloat16()
    padded = torch.cat([wide, torch.zeros(1, 3, 74, 16, dtype=torch.bfloat16)], 2)[:, :, :37]
    assert not torch.equal(kernel_read_of_out(padded), wide)


class _MergedLayoutCudaKernel(EmulatedCudaKernel):
    """The CUDA branch as it would be if the merged output reached the backward unchanged."""

    backward_layout = staticmethod(lambda out: out)


class _ShiftedOutCudaKernel(EmulatedCudaKernel):
    """The right layout holding the wrong rows (each query reads its neighbour's output): a wrong delta."""

    backward_layout = staticmethod(lambda out: EmulatedCudaKernel.backward_layout(out.roll(1, 2)))


def test_bf16_gradient_check_sees_a_wrong_delta():
    q, parts, full_mask = _case(seed=7, dtype=torch.bfloat16, shape=BF16_SHAPES[1])
    out = attention_parts(q, parts, kernel=_ShiftedOutCudaKernel())
    errors = grad_errors(out, q, parts, full_mask)
    assert errors["q"][1] < 0.99 and errors["q"][0] > 10 * BF16_GRAD_TOL, errors["q"]
    assert errors["v_new"][0] < BF16_GRAD_TOL  # dv does not involve delta


def test_emulation_rejects_merged_layout_in_16bit():
    """Handing the backward the merged output in its own [B, H, L, hd]-contiguous layout is caught by
    the emulation in bf16 (the kernel's own delta), not in fp32 (delta from ordinary tensor ops)."""
    q, parts, full_mask = _case(seed=7, dtype=torch.bfloat16)
    out = attention_parts(q, parts, kernel=_MergedLayoutCudaKernel())
    with pytest.raises(AssertionError, match="would read"):
        torch.autograd.grad(out.float().sum(), [q])
    q, parts, full_mask = _case(seed=7)
    out = attention_parts(q, parts, kernel=_MergedLayoutCudaKernel())
    for name, (rel, _) in grad_errors(out, q, parts, full_mask).items():
        assert rel < 1e-5, name


def test_bf16_parts_close_to_fp32():
    q, parts, full_mask = _case(seed=3)
    ref = _dense(q, parts, full_mask)
    qb = q.detach().bfloat16()
    pb = [Part(p.k.detach().bfloat16(), p.v.detach().bfloat16(), p.mask) for p in parts]
    out = attention_parts(qb, pb)
    assert out.dtype == torch.bfloat16
    assert (out.double() - ref).abs().max() < 3e-2


def test_attend_past_and_chunk_gradients_exact():
    """The streaming/training kernel: every past key visible, the chunk causal; the gradient through
    the log-sum-exp merge reaches the past keys (a merge of non-differentiable log-sum-exps drops it)."""
    q, parts, _ = _case(seed=5)
    (kp, vp, _), _, (kn, vn, _) = parts
    out = attend_past_and_chunk(q, kp, vp, kn, vn)
    L, P = q.shape[2], kp.shape[2]
    mask = torch.cat([torch.ones(L, P, dtype=torch.bool), torch.ones(L, L, dtype=torch.bool).tril()], 1)
    ref = F.scaled_dot_product_attention(q, torch.cat([kp, kn], 2), torch.cat([vp, vn], 2), attn_mask=mask)
    g = torch.randn_like(ref)
    got = torch.autograd.grad((out * g).sum(), [q, kp, kn])
    want = torch.autograd.grad((ref * g).sum(), [q, kp, kn])
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max() < 1e-5


def test_no_grad_path_and_kernel_choice():
    q, parts, full_mask = _case()
    with torch.no_grad():
        out = attention_parts(q, parts)
    assert not out.requires_grad
    assert (out.double() - _dense(q, parts, full_mask)).abs().max() < 1e-5
    assert isinstance(kernel_for(q), CpuFlashKernel)
    assert isinstance(kernel_for(torch.empty(1, 1, 1, 8, device="meta")), MathKernel)
    with pytest.raises(ValueError, match="no keys"):
        attention_parts(q, [Part(q[:, :, :0], q[:, :, :0])])
