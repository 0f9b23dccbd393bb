"""Where Focus tokens go and what every token may attend to.

Window j holds bases [jW, (j+1)W). It is cut into blocks of k bases; when k does not divide W the
last block of a window is the remaining W mod k bases. One Focus token F(j, b) follows each block b
and takes the absolute position of the block's last base (rotary positions of ordinary bases are
their absolute positions). Only windows that are followed by more bases need Focus tokens: a Focus
token is read only by later windows.

All positions and indices are int64 tensors computed with integer arithmetic, so they are exact at any
absolute position (a stream may start at a window-aligned offset P, `check_stream_offset`).

Every token is described by four integers (a `Tokens` record of equal-length tensors):
``window``, ``pos`` (absolute base position; a Focus token's is its block's last base), ``block``
(index of the k-block inside the window) and ``is_focus``. `visible()` is the single attention rule
(DESIGN D3) used by the dense reference mask, the one-pass windowed kernel and streaming:

* a key in an earlier window is visible iff it is a Focus token (the compressed memory) and, with a
  horizon of h windows (``FocusConfig.horizon`` / W), its window is one of the h windows before the
  query's (windows j - h .. j - 1 for a query of window j; older Focus entries have left the memory);
* with an exact local band of l windows (``FocusConfig.local``, DESIGN D11) the ordinary keys of windows
  j - l .. j - 1 are visible to every query of window j, and the memory covers only the windows before
  those (Focus tokens of windows j - h .. j - l - 1); l = 0 is the rule above;
* keys in later windows are never visible;
* in the same window, an ordinary query sees ordinary keys at positions <= its own, and no Focus
  token of its own window; a Focus query F(j, b) sees ordinary keys up to the end of block b (only
  block b with scope ``kmer``) and Focus tokens F(j, 0..b).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Tokens:
    """Descriptors of a set of tokens (all [N] long/bool tensors on one device)."""

    window: torch.Tensor
    pos: torch.Tensor
    block: torch.Tensor
    is_focus: torch.Tensor

    def __len__(self) -> int:
        return self.pos.shape[0]

    @staticmethod
    def cat(parts: list[Tokens]) -> Tokens:
        return Tokens(*(torch.cat([getattr(p, f) for p in parts]) for f in ("window", "pos", "block", "is_focus")))

    def index(self, idx) -> Tokens:
        return Tokens(self.window[idx], self.pos[idx], self.block[idx], self.is_focus[idx])

    @staticmethod
    def empty(device=None) -> Tokens:
        z = torch.zeros(0, dtype=torch.long, device=device)
        return Tokens(z, z, z, z.bool())


def check_stream_offset(offset, window: int) -> int:
    """The absolute position a FOCUS stream starts at: a non-negative integer multiple of `window`."""
    from focus_nemo.evo2.model import check_offset

    offset = check_offset(offset)
    if offset % window:
        raise ValueError(f"offset: must be a non-negative multiple of the window ({window}) below 2^62, got {offset}")
    return offset


def ordinary_tokens(start: int, end: int, k: int, window: int, device=None) -> Tokens:
    """Descriptors of the ordinary bases at absolute positions [start, end)."""
    pos = torch.arange(int(start), int(end), dtype=torch.long, device=device)
    return Tokens(pos // window, pos, (pos % window) // k, torch.zeros_like(pos, dtype=torch.bool))


def focus_tokens(windows: range | list[int], k: int, window: int, device=None) -> Tokens:
    """Descriptors of every Focus token of the given (complete) windows, in order."""
    m = -(-window // k)
    js = torch.as_tensor(list(windows), dtype=torch.long, device=device)
    b = torch.arange(m, device=device)
    win = js[:, None].expand(-1, m)
    ends = torch.minimum(win * window + (b + 1) * k, (win + 1) * window)
    return Tokens(win.reshape(-1), (ends - 1).reshape(-1), b.expand(len(js), -1).reshape(-1),
                  torch.ones(len(js) * m, dtype=torch.bool, device=device))


def visible(q: Tokens, kv: Tokens, scope: str = "window", horizon_windows: int | None = None,
            local: int = 0) -> torch.Tensor:
    """Boolean attention mask [len(q), len(kv)] (True = may attend), DESIGN D3; `horizon_windows`
    (None = unbounded) is how many preceding windows' Focus entries a query sees, `local` how many
    preceding windows' bases it sees exactly (D11)."""
    qw, kw = q.window[:, None], kv.window[None, :]
    qf, kf = q.is_focus[:, None], kv.is_focus[None, :]
    same = qw == kw
    causal = kv.pos[None, :] <= q.pos[:, None]
    ordinary_rule = ~kf & causal  # ordinary query, same window
    focus_on_ordinary = ~kf & causal
    if scope == "kmer":
        focus_on_ordinary = focus_on_ordinary & (kv.block[None, :] == q.block[:, None])
    focus_on_focus = kf & (kv.block[None, :] <= q.block[:, None])
    focus_rule = focus_on_ordinary | focus_on_focus
    in_window = torch.where(qf, focus_rule, ordinary_rule)
    memory = (kw < qw - local) & kf
    if horizon_windows is not None:
        memory = memory & (kw >= qw - horizon_windows)
    band = (kw < qw) & (kw >= qw - local) & ~kf
    return memory | band | (same & in_window)


@dataclass
class Layout:
    """The one-pass (training) layout of a sample of `length` bases."""

    length: int
    k: int
    window: int

    @property
    def num_windows(self) -> int:
        return -(-self.length // self.window)

    @property
    def focus_windows(self) -> int:
        """Windows that carry Focus tokens: those followed by at least one more base."""
        return max(self.length - 1, 0) // self.window

    @property
    def focus_per_window(self) -> int:
        return -(-self.window // self.k)

    @property
    def num_focus(self) -> int:
        return self.focus_windows * self.focus_per_window

    def ordinary(self, device=None) -> Tokens:
        return ordinary_tokens(0, self.length, self.k, self.window, device)

    def focus(self, device=None) -> Tokens:
        return focus_tokens(range(self.focus_windows), self.k, self.window, device)

    def interleaved(self, device=None) -> tuple[Tokens, torch.Tensor]:
        """Descriptors of the interleaved sequence (each Focus token right after its block) and, for
        each interleaved slot, the index into ordinary (>= 0) or -(1 + focus index) for Focus tokens."""
        ordn, foc = self.ordinary(device), self.focus(device)
        # Sort key: a Focus token goes right after the last base of its block.
        key = torch.cat([2 * ordn.pos, 2 * foc.pos + 1])
        order = torch.argsort(key, stable=True)
        src = torch.cat([torch.arange(len(ordn), device=device), -1 - torch.arange(len(foc), device=device)])
        return Tokens.cat([ordn, foc]).index(order), src[order]

    def dense_mask(self, scope: str = "window", device=None, horizon_windows: int | None = None,
                   local: int = 0) -> torch.Tensor:
        """The reference boolean mask over the interleaved sequence."""
        toks, _ = self.interleaved(device)
        return visible(toks, toks, scope, horizon_windows, local)
