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
    multiple of 32 query rows (garbage in the padding), bias an additive float mask."""
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
    lq = q.shape[2]
    padded = torch.full((*lse.shape[:-1], -(-lq // 32) * 32), 123.0)
    padded[..., :lq] = lse
    return out, padded, torch.tensor(0), torch.tensor(0)


def _emulated_efficient_backward(grad, q, k, v, bias, out, lse, seed, offset, dropout, mask4, causal):
    lq = q.shape[2]
    assert lse.shape[-1] % 32 == 0 and lse.shape[-1] >= lq  # the padded layout the kernel expects
    m = None if bias is None else torch.isfinite(bias[0, 0])
    dq, dk, dv = MathKernel().backward(grad, q, k, v, out, lse[..., :lq], causal, m)
    return dq, dk, dv, None


class EmulatedCudaKernel(CudaEfficientKernel):
    forward_op = staticmethod(_emulated_efficient_forward)
    backward_op = staticmethod(_emulated_efficient_backward)


def _case(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    B, H, L, P, W, hd = 2, 3, 37, 45, 20, 16

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
