"""Focus attention kernels shared by the single-device and the Megatron FOCUS models."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from focus_nemo.focus.layout import Layout, Tokens, focus_tokens, ordinary_tokens, visible


def attend(q, k, v, mask):
    """SDPA with a boolean mask; rows without any visible key (padding) produce discarded output."""
    empty = ~mask.any(-1, keepdim=True)
    if bool(empty.any()):
        mask = mask | empty
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def windowed_focus_attention(q, k, v, fq, fk, fv, lay: Layout, foc: Tokens, scope: str):
    """The D3 mask evaluated window-batched, (the one-pass D7 forward).

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
    dev = q.device

    def windows(t, size, count):  # [B, H, N, hd] -> [B, H, count, size, hd] (zero padded)
        t = F.pad(t, (0, 0, 0, count * size - t.shape[2]))
        return t.view(B, H, count, size, hd)

    qw, kw, vw = windows(q, W, nw), windows(k, W, nw), windows(v, W, nw)
    # Padded per-window slots get a window index past every real one: never visible as keys.
    never = torch.full((), 1 << 40, dtype=torch.long, device=dev)
    od = ordinary_tokens(0, nw * W, lay.k, W, dev)
    od.window = torch.where(od.pos < n, od.window, never)
    if nf:
        fqw, fkw, fvw = windows(fq, m, nw), windows(fk, m, nw), windows(fv, m, nw)
        fd = focus_tokens(range(nw), lay.k, W, dev)
        fd.window = torch.where(fd.window < nf, fd.window, never)
        qs = torch.cat([qw, fqw], 3)
        ks = torch.cat([fk[:, :, None].expand(B, H, nw, nf * m, hd), kw, fkw], 3)
        vs = torch.cat([fv[:, :, None].expand(B, H, nw, nf * m, hd), vw, fvw], 3)
        wdesc = [Tokens.cat([od.index(slice(j * W, (j + 1) * W)), fd.index(slice(j * m, (j + 1) * m))])
                 for j in range(nw)]
        # Memory part: Focus tokens of earlier windows only (a window's own Focus tokens are
        # reached through its window part, exactly once).
        masks = [torch.cat([(foc.window[None, :] < j).expand(len(d), -1), visible(d, d, scope)], 1)
                 for j, d in enumerate(wdesc)]
    else:
        qs, ks, vs = qw, kw, vw
        masks = [visible(d, d, scope) for d in (od.index(slice(j * W, (j + 1) * W)) for j in range(nw))]
    o = attend(qs, ks, vs, torch.stack(masks)[None, None])  # [B, H, nw, W(+m), hd]
    o_ord = o[:, :, :, :W].reshape(B, H, nw * W, hd)[:, :, :n]
    o_f = o[:, :, :nf, W:].reshape(B, H, nf * m, hd) if nf else None
    return o_ord, o_f
