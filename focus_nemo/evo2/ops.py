"""Stateless numerical kernels of StripedHyena 2: causal FIR filters with carried tails, the modal
(sum of real decaying exponentials) long filter with carried state, rotary embeddings and attention.

Every streaming kernel takes the state left by the previous chunk and returns the new one, so that
processing a sequence in any chunking reproduces the single full-length call (DESIGN I3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# FIR filters at least this long run through FFT convolution (O(L log L)); shorter ones use a
# direct depthwise convolution.
FFT_FIR_MIN_LENGTH = 32


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast sizes for pocketfft / cuFFT)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            v = p35
            while v < n:
                v *= 2
            best = min(best, v)
            p35 *= 3
        p5 *= 5
    return best


def causal_fir(u: torch.Tensor, taps: torch.Tensor, tail: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise causal FIR filter with a carried input tail.

    Args:
        u: input [B, C, L].
        taps: [C, K] in cross-correlation orientation (``taps[:, -1]`` multiplies the current
            sample, ``taps[:, 0]`` the sample K-1 steps back), the layout of ``F.conv1d``.
        tail: the previous K-1 inputs [B, C, K-1] (zeros at the start of a sequence) or None.

    Returns:
        (y [B, C, L], new tail [B, C, K-1] in the dtype of `tail`, or u's without one).
    """
    B, C, L = u.shape
    K = taps.shape[-1]
    if tail is None:
        tail = u.new_zeros(B, C, K - 1)
    tail_dtype = tail.dtype
    x = torch.cat([tail.to(u.dtype), u], dim=-1)  # [B, C, L + K - 1]
    new_tail = x[..., x.shape[-1] - (K - 1):] if K > 1 else x[..., :0]
    if K >= FFT_FIR_MIN_LENGTH:
        n = _fft_size(x.shape[-1] + K - 1)
        xf = torch.fft.rfft(x.float(), n=n)
        hf = torch.fft.rfft(taps.float().flip(-1), n=n)  # impulse response: h[0] = current sample
        y = torch.fft.irfft(xf * hf, n=n)[..., K - 1: K - 1 + L].to(u.dtype)
    else:
        y = F.conv1d(x, taps.to(u.dtype).unsqueeze(1), groups=C)
    return y, new_tail.to(tail_dtype).contiguous()


def fft_causal_conv(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Causal convolution y[t] = sum_{j<=t} h[:, j] u[:, t-j] of u [B, C, L] with h [C, L] (fp32)."""
    L = u.shape[-1]
    n = _fft_size(2 * L)
    y = torch.fft.irfft(torch.fft.rfft(u.float(), n=n) * torch.fft.rfft(h.float(), n=n), n=n)
    return y[..., :L]


def modal_powers(log_poles: torch.Tensor, length: int) -> torch.Tensor:
    """a_n^j = exp(log_poles[d, n] * j) for j = 0..length: [N, D, length + 1] fp32, the only transcendental
    work of `modal_iir` over a chunk of `length` (callers that stream fixed-length chunks may keep it)."""
    j = torch.arange(length + 1, device=log_poles.device, dtype=torch.float32)
    return torch.exp(log_poles.float().t().unsqueeze(-1) * j)


def modal_iir(
    u: torch.Tensor,
    log_poles: torch.Tensor,
    residues: torch.Tensor,
    state: torch.Tensor | None,
    need_state: bool = True,
    powers: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The long implicit filter as a linear recurrence over a chunk, with carried modal state.

    With a = exp(log_poles) (real, < 1) and chunk input u[0..L-1]:
        y_t   = (h * u)_t + sum_n residues_n * a_n^(t+1) * s0_n
        s_new = a^L * s0 + sum_tau a^(L-1-tau) * u_tau
    where s0 is the state left by the previous chunk (zeros at the start). FFT convolution makes
    the chunk O(L log L); the state has D * order entries whatever the length read so far. The
    impulse response, the state's decay and the new state all read the powers a_n^j, j = 0..L,
    computed once per mode (or passed in as `modal_powers(log_poles, L)`).

    Args:
        u: filter input [B, D, L] (any float dtype; computed in fp32).
        log_poles, residues: [D, N].
        state: [B, D, N] fp32 or None.
        need_state: compute the new state (skip for a one-shot full forward).
        powers: optional `modal_powers(log_poles, L)` [N, D, L + 1].

    Returns:
        (y [B, D, L] fp32, new state [B, D, N] fp32 or None).
    """
    B, D, L = u.shape
    uf = u.float()
    lp = log_poles.float()
    r = residues.float()
    N = lp.shape[1]
    if powers is not None and tuple(powers.shape) != (N, D, L + 1):
        raise ValueError(f"modal_iir: powers must be [{N}, {D}, {L + 1}], got {tuple(powers.shape)}")
    j = torch.arange(L + 1, device=u.device, dtype=torch.float32)
    h = torch.zeros(D, L, device=u.device, dtype=torch.float32)
    carry = None if state is None else torch.zeros(B, D, L, device=u.device, dtype=torch.float32)
    new_state = torch.empty(B, D, N, device=u.device, dtype=torch.float32) if need_state else None
    for n in range(N):
        a = powers[n] if powers is not None else torch.exp(lp[:, n: n + 1] * j)  # [D, L + 1]: a_n^j
        h.addcmul_(r[:, n: n + 1], a[:, :L])
        if state is not None:
            carry.addcmul_(a[:, 1:], (r[:, n] * state[:, :, n]).unsqueeze(-1))
        if need_state:
            s = (uf * a[:, :L].flip(-1)).sum(-1)
            if state is not None:
                s = s + a[:, L] * state[:, :, n]
            new_state[:, :, n] = s
    y = fft_causal_conv(uf, h)
    if carry is not None:
        y = y + carry
    return y, new_state


def rotary_inv_freq(head_dim: int, base: float, device=None) -> torch.Tensor:
    """Rotary inverse frequencies base^(-2i/head_dim), i < head_dim/2, as the reference codes compute them (fp32)."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))


def rotary_cos_sin(
    positions: torch.Tensor, head_dim: int, base: float, scaling: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact rotary tables for absolute integer positions: (cos, sin), each [..., L, head_dim] fp32.

    The one rotary implementation of the project (every backbone calls it). The angle of position p in
    frequency pair i is (p / scaling) * inv_freq[i] (non-interleaved "rotate-half" layout: both halves of the
    head share the pair's angle); `inv_freq` is `rotary_inv_freq` (fp32, as Arc's and NeMo's code build it).
    The angle is formed and reduced in float64 from the integer position, so it is exact to ~1e-16 relative:
    at positions up to 2^31 its error is below 1e-6 rad, and logits do not depend on the absolute offset of a
    sequence (DESIGN I7). The former fp32 product ``positions.float() * inv_freq`` rounds positions above
    2^24 and loses the angle's fraction long before that. Works on CPU and CUDA (any device with float64).

    Args:
        positions: integer tensor [L] or [B, L] of absolute positions (int64; floating tensors are refused
            because they may already have been rounded).
        head_dim: attention head width (even).
        base: rotary base (10000 or 1e6 in Evo-2).
        scaling: linear position scaling (Arc's rotary_emb_scaling_factor, NeMo's
            seq_len_interpolation_factor); 1 for none.

    Returns:
        (cos, sin), fp32, shape positions.shape + (head_dim,).
    """
    if positions.is_floating_point() or positions.is_complex():
        raise TypeError(f"rotary_cos_sin: positions must be an integer tensor, got {positions.dtype}")
    inv_freq = rotary_inv_freq(head_dim, base, positions.device).double()
    angles = (positions.to(torch.float64) / float(scaling)).unsqueeze(-1) * inv_freq
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos().float(), emb.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, L, hd] by the tables [L, hd] or [B, 1, L, hd] (rotate-half convention)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def attend_past_and_chunk(q: torch.Tensor, k_past: torch.Tensor | None, v_past: torch.Tensor | None,
                          k_new: torch.Tensor, v_new: torch.Tensor) -> torch.Tensor:
    """Attention of a new chunk: every past key is visible, the chunk's own keys causally.

    q, k_new, v_new: [B, H, L, hd] for the same L newest positions; k_past, v_past: [B, H, P, hd]
    (P may be 0 or None). Both parts run in the device's fused kernel and are merged by their
    log-sum-exps with exact gradients (`focus_nemo.evo2.attention`): memory O(L) per head beyond the
    keys, no [L x (P + L)] mask, on every device.
    """
    from focus_nemo.evo2.attention import CAUSAL, Part, attention_parts

    if k_past is None or k_past.shape[2] == 0:
        return F.scaled_dot_product_attention(q, k_new, v_new, is_causal=True)
    return attention_parts(q, [Part(k_past, v_past), Part(k_new, v_new, CAUSAL)])


def sliding_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, span: int,
                             block: int = 1024) -> torch.Tensor:
    """Causal attention in which query t sees only keys t - span + 1 .. t (a banded causal mask).

    Queries run in blocks of `block`; each block attends to the key slice its band can reach, so
    memory is O(block * (span + block)) per head. With ``span >= L`` this is ordinary causal attention.

    Args:
        q, k, v: [B, H, L, hd] for the same L positions.
        span: keys each query may see, itself included (>= 1).
        block: queries per step.
    """
    if span < 1:
        raise ValueError(f"sliding_window_attention: span must be >= 1, got {span}")
    L = q.shape[2]
    outs = []
    for s in range(0, L, block):
        e = min(L, s + block)
        lo = max(0, s - span + 1)
        rows = torch.arange(s, e, device=q.device)[:, None]
        cols = torch.arange(lo, e, device=q.device)[None, :]
        band = (cols <= rows) & (cols > rows - span)
        outs.append(F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, lo:e], v[:, :, lo:e], attn_mask=band))
    return torch.cat(outs, 2)
