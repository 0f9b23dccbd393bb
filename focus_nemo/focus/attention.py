"""Focus attention kernels shared by the single-device and the Megatron FOCUS models."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from focus_nemo.evo2.ops import attend_past_and_chunk
from focus_nemo.focus.layout import Layout, Tokens, ordinary_tokens, visible


def attend(q, k, v, mask):
    """SDPA with a boolean mask; rows without any visible key (padding) produce discarded output."""
    empty = ~mask.any(-1, keepdim=True)
    if bool(empty.any()):
        mask = mask | empty
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def windowed_focus_attention(q, k, v, fq, fk, fv, lay: Layout, foc: Tokens, scope: str):
    """The D3 mask evaluated block-sparsely, window by window (the one-pass D7 forward).

    Ordinary bases of window j see the memory (the Focus tokens of windows < j) and their window
    causally: two fused flash-attention calls merged by log-sum-exp, O(W) memory per head. The Focus
    tokens of all windows are batched: window j's Focus queries against the memory, the window's
    bases and its Focus tokens, with the boolean D3 mask (small: ceil(W/k) queries per window).

    Args:
        q, k, v: ordinary-stream projections [B, H, n, hd] (post-rotary q and k).
        fq, fk, fv: Focus-stream projections [B, H, nf * m, hd], or None when there are no Focus tokens.
        lay: the sample's layout; foc: descriptors of its Focus tokens.
        scope: FocusConfig.scope.

    Returns:
        (ordinary output [B, H, n, hd], Focus output [B, H, nf * m, hd] or None).
    """
    B, H, n, hd = q.shape
    W, m, nw = lay.window, lay.focus_per_window, lay.num_windows
    nf = lay.focus_windows if len(foc) else 0
    outs = []
    for j in range(nw):
        s, e = j * W, min(n, (j + 1) * W)
        mem = min(j, nf) * m
        pk, pv = (fk[:, :, :mem], fv[:, :, :mem]) if mem else (None, None)
        outs.append(attend_past_and_chunk(q[:, :, s:e], pk, pv, k[:, :, s:e], v[:, :, s:e]))
    o_ord = torch.cat(outs, 2)
    if not nf:
        return o_ord, None
    # Windows that carry Focus tokens are complete (a later base follows them): no padding.
    kw = k[:, :, : nf * W].reshape(B, H, nf, W, hd)
    vw = v[:, :, : nf * W].reshape(B, H, nf, W, hd)
    fqw, fkw, fvw = (t.reshape(B, H, nf, m, hd) for t in (fq, fk, fv))
    ks = torch.cat([fk[:, :, None].expand(B, H, nf, nf * m, hd), kw, fkw], 3)
    vs = torch.cat([fv[:, :, None].expand(B, H, nf, nf * m, hd), vw, fvw], 3)
    masks = []
    for j in range(nf):
        fd = foc.index(slice(j * m, (j + 1) * m))
        wd = Tokens.cat([ordinary_tokens(j * W, (j + 1) * W, lay.k, W, q.device), fd])
        # Memory part: the Focus tokens of earlier windows only (a window's own Focus tokens are
        # reached through its window part, exactly once).
        masks.append(torch.cat([(foc.window[None, :] < j).expand(m, -1), visible(fd, wd, scope)], 1))
    o_f = attend(fqw, ks, vs, torch.stack(masks)[None, None])  # [B, H, nf, m, hd]
    return o_ord, o_f.reshape(B, H, nf * m, hd)
