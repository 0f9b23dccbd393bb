"""attention_parts on CUDA: the memory-efficient kernel's own backward, fed the merged output and
log-sum-exp, gives the gradients of float64 SDPA over the union of the parts, in bf16 and fp16.

This is the GPU counterpart of ``tests/evo2/test_attention_parts.py`` (whose emulation of the CUDA
kernel reads ``out`` with the kernel's strides). For 16-bit dtypes the kernel computes
delta = rowsum(dO * out) from ``out`` read in its forward's [B, L, H, hd] layout; an output in any other
layout gives q/k gradients with cosines of 0.8-0.9 against the exact ones. The exact gradients are
those of float64 SDPA on float64 copies of the same (16-bit) inputs, so only the kernel's arithmetic
is measured: bf16 rounding alone gives <= 1.2e-2 (max error over max |exact|) and 1 - cosine <= 1.2e-5
on the CPU for these shapes; the tolerances leave a factor of 2.5 and 40.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from focus_nemo.evo2.attention import CAUSAL, CudaEfficientKernel, Part, attention_parts, kernel_for
from focus_nemo.evo2.ops import attend_past_and_chunk

pytestmark = pytest.mark.gpu

DEVICE = "cuda"
TOL = {torch.bfloat16: 3e-2, torch.float16: 1e-2, torch.float32: 1e-4}
MIN_COS = {torch.bfloat16: 0.9995, torch.float16: 0.9999, torch.float32: 0.999999}
# (B, H, Lq, memory keys, masked-part keys, head dim): query lengths off multiples of 32 (padded
# log-sum-exp), key lengths off multiples of 16 (aligned bias), head dims 16 to 128, many heads
SHAPES = [(2, 3, 37, 45, 20, 16), (1, 4, 64, 100, 33, 64), (3, 2, 130, 7, 50, 32), (1, 2, 200, 300, 90, 128),
          (2, 32, 97, 257, 61, 128)]
NAMES = ["q", "k_mem", "v_mem", "k_win", "v_win", "k_new", "v_new"]


def case(shape, dtype, seed=0):
    B, H, L, P, W, hd = shape
    g = torch.Generator().manual_seed(seed)

    def t(*s):
        return torch.randn(*s, generator=g).to(device=DEVICE, dtype=dtype).requires_grad_()

    q = t(B, H, L, hd)
    kp, vp, kw, vw, kn, vn = (t(B, H, n, hd) for n in (P, P, W, W, L, L))
    mask = torch.rand(L, W, generator=g) > 0.5
    mask[:5] = False  # rows that see nothing of this part
    mask = mask.to(DEVICE)
    parts = [Part(kp, vp), Part(kw, vw, mask), Part(kn, vn, CAUSAL)]
    full = torch.cat([torch.ones(L, P, dtype=torch.bool, device=DEVICE), mask,
                      torch.ones(L, L, dtype=torch.bool, device=DEVICE).tril()], 1)
    return q, parts, full


def dense64(q, parts, full):
    k = torch.cat([p.k for p in parts], 2).double()
    v = torch.cat([p.v for p in parts], 2).double()
    return F.scaled_dot_product_attention(q.double(), k, v, attn_mask=full)


def gradient_errors(out, q, parts, full, names=NAMES, seed=1):
    """{name: (max |got - exact| / max |exact|, cosine)} for q and every part's k and v."""
    tensors = [q] + [t for p in parts for t in (p.k, p.v)]
    exact = [t.detach().double().requires_grad_() for t in tensors]
    ref = dense64(exact[0], [Part(*exact[1 + 2 * i: 3 + 2 * i], p.mask) for i, p in enumerate(parts)], full)
    g = torch.randn(ref.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(DEVICE)
    want = torch.autograd.grad((ref * g).sum(), exact)
    got = torch.autograd.grad((out.double() * g).sum(), tensors)
    return {name: (float((a.double() - b).abs().max() / b.abs().max()),
                   float(F.cosine_similarity(a.double().flatten(), b.flatten(), dim=0)))
            for name, a, b in zip(names, got, want, strict=True)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_parts_gradients_against_float64(shape, dtype):
    q, parts, full = case(shape, dtype)
    assert isinstance(kernel_for(q), CudaEfficientKernel)
    out = attention_parts(q, parts)
    assert out.dtype == dtype
    with torch.no_grad():
        assert float((out.double() - dense64(q, parts, full)).abs().max()) < TOL[dtype]
    for name, (rel, cos) in gradient_errors(out, q, parts, full).items():
        assert rel < TOL[dtype] and cos > MIN_COS[dtype], (str(dtype), name, rel, cos)


@pytest.mark.parametrize("shape", [(1, 32, 1024, 2048), (2, 8, 333, 77)], ids=lambda s: "x".join(map(str, s)))
def test_attend_past_and_chunk_bf16_gradients(shape):
    """The streaming / one-pass kernel (every past key visible, the chunk causal) at a 7B head width."""
    B, H, L, P = shape
    g = torch.Generator().manual_seed(2)
    q, kp, vp, kn, vn = (torch.randn(B, H, n, 128, generator=g).to(DEVICE, torch.bfloat16).requires_grad_()
                         for n in (L, P, P, L, L))
    out = attend_past_and_chunk(q, kp, vp, kn, vn)
    full = torch.cat([torch.ones(L, P, dtype=torch.bool, device=DEVICE),
                      torch.ones(L, L, dtype=torch.bool, device=DEVICE).tril()], 1)
    parts = [Part(kp, vp), Part(kn, vn, CAUSAL)]
    for name, (rel, cos) in gradient_errors(out, q, parts, full, ["q", "k_past", "v_past", "k_new", "v_new"]).items():
        assert rel < TOL[torch.bfloat16] and cos > MIN_COS[torch.bfloat16], (name, rel, cos)
