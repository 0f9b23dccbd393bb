"""The second level of Focus memory: what leaves the horizon is pooled into coarser entries (DESIGN D12).

Focus entries carry a global index e = j m + t (window j, block t, m = ceil(W/k) per window). With a
horizon of h windows and ``FocusConfig.level2`` = k2, entries are grouped as g = e // k2 (group g is
entries [g k2, (g+1) k2): no gap, no overlap) and leave the fine memory in whole groups only:

* window j (its bases and its Focus tokens) sees the fine entries [lo_j, j m) with
  lo_j = floor(max(0, (j - h) m) / k2) k2 (`fine_start`): the h windows of the plain horizon, plus the
  entries of a group that has only partly left it (fewer than k2 of them);
* and one second-level (coarse) entry for each group g < lo_j / k2 (`coarse_count`): groups that left
  the fine memory completely.

So each window sees at most h m + k2 - 1 fine entries and floor(max(0, (j - h) m) / k2) coarse ones
(DESIGN I4 with a second level). Rounding lo_j down rather than up keeps every entry visible at all
times, in exactly one form: an entry is fine until its whole group has left, then it is in its
group's coarse entry.

A coarse entry of group g, per attention block and head, is a convex combination of the group's
(rotated) Focus keys and values with the same weights:

    w = softmax_t(q2 . K_t / sqrt(hd)),   K_c = sum_t w_t K_t,   V_c = sum_t w_t V_t

with ``level2_pool`` ``"mean"`` (w uniform, training-free) or ``"trained"`` (q2 a trainable vector per
block and head, the adapter's ``level2_query.<block>`` [heads, hd], zero at initialisation so that an
untrained adapter pools by the mean). The keys are rotated at their absolute positions, so q2 is
rotated too, as a query at the position of its group's last entry (`group_queries`): the weights then
depend on relative positions only, and a stream gives the same logits at any offset (I7).

Coarse entries depend only on the fine entries of their group, so the one-pass forward computes them
once per forward from the Focus keys, streaming computes each when its group leaves the fine memory,
and the dense reference appends them as extra key columns; all three see the same entries (I2).
"""

from __future__ import annotations

import torch

from focus_nemo.focus.layout import Tokens, visible


def fine_start(j, m: int, horizon_windows: int | None, k2: int | None):
    """Global index of the first fine Focus entry window j sees (an int, or a long tensor for a tensor j)."""
    if horizon_windows is None:
        return j * 0
    lo = (j - horizon_windows) * m
    lo = lo.clamp(min=0) if isinstance(lo, torch.Tensor) else max(0, lo)
    return lo if k2 is None else lo // k2 * k2


def coarse_count(j, m: int, horizon_windows: int | None, k2: int | None):
    """Coarse (second-level) entries window j sees: the groups that have completely left its fine memory."""
    if k2 is None:
        return j * 0
    return fine_start(j, m, horizon_windows, k2) // k2


def group_queries(backbone, i: int, query: torch.Tensor, positions: torch.Tensor, k2: int) -> torch.Tensor:
    """Block i's level-2 query [H, hd] rotated at the position of the last entry of each complete
    group of the entries at `positions` [N] -> [1, H, N // k2, hd] (fp32)."""
    G = positions.shape[0] // k2
    ref = positions[k2 - 1: G * k2: k2]
    return backbone.rotate(i, query.float()[None, :, None, :].expand(1, -1, G, -1), ref)


def pool_groups(k: torch.Tensor, v: torch.Tensor, k2: int, query: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Coarse entries of the complete groups of k2 consecutive entries of k, v [B, H, N, hd]
    (the first floor(N / k2) groups) -> [B, H, N // k2, hd] each.

    `query` [1, H, N // k2, hd] (the block's level-2 query per group, `group_queries`) gives the
    weights softmax(q2 . K / sqrt(hd)) over each group's keys; None pools by the mean. Computed in
    fp32 (fp64 for fp64 keys), returned in k's dtype.
    """
    B, H, N, hd = k.shape
    G = N // k2
    dt = torch.promote_types(k.dtype, torch.float32)
    kg = k[:, :, : G * k2].to(dt).reshape(B, H, G, k2, hd)
    vg = v[:, :, : G * k2].to(dt).reshape(B, H, G, k2, hd)
    if query is None:
        return kg.mean(3).to(k.dtype), vg.mean(3).to(v.dtype)
    w = torch.einsum("bhgtd,bhgd->bhgt", kg, query.to(dt)).mul(hd ** -0.5).softmax(-1)
    return torch.einsum("bhgt,bhgtd->bhgd", w, kg).to(k.dtype), torch.einsum("bhgt,bhgtd->bhgd", w, vg).to(v.dtype)


def fine_visible(q: Tokens, kv: Tokens, m: int, horizon_windows: int | None, k2: int) -> torch.Tensor:
    """[len(q), len(kv)]: which Focus keys of earlier windows are still in q's fine memory
    (global index >= lo of the query's window); combine with the key being a Focus token of an earlier window."""
    e = kv.window * m + kv.block
    return e[None, :] >= fine_start(q.window, m, horizon_windows, k2)[:, None]


def coarse_visible(q: Tokens, groups: int, m: int, horizon_windows: int | None, k2: int) -> torch.Tensor:
    """[len(q), groups]: which coarse entries (group index < `coarse_count` of the query's window) q sees."""
    g = torch.arange(groups, device=q.window.device)
    return g[None, :] < coarse_count(q.window, m, horizon_windows, k2)[:, None]


def dense_masks(toks: Tokens, scope: str, m: int, horizon_windows: int | None, k2: int, local: int = 0
                ) -> torch.Tensor:
    """The dense reference mask with level 2 over the interleaved tokens `toks` followed by the coarse
    entries of the complete groups of their Focus tokens: [len(toks), len(toks) + groups].

    Within a window and for later windows nothing changes (D3); a Focus key of an earlier window is
    visible iff it is still fine (`fine_visible`); coarse columns follow `coarse_visible`.
    """
    unbounded = visible(toks, toks, scope, local=local)  # with the exact band of `local` windows (D11)
    earlier_focus = (toks.window[None, :] < toks.window[:, None]) & toks.is_focus[None, :]
    fine = unbounded & ~(earlier_focus & ~fine_visible(toks, toks, m, horizon_windows, k2))
    groups = int(toks.is_focus.sum()) // k2
    return torch.cat([fine, coarse_visible(toks, groups, m, horizon_windows, k2)], 1)
