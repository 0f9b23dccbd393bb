"""The dense-mask attention of the FOCUS reference forward (`FocusCore.forward_dense`).

The one-pass forward and streaming never build a mask over the memory: they run
`focus_nemo.evo2.attention.attention_parts` (fused kernels, exact log-sum-exp merge).
"""

from __future__ import annotations

import torch.nn.functional as F


def attend(q, k, v, mask):
    """SDPA with a boolean mask; rows without any visible key (padding) produce discarded output."""
    empty = ~mask.any(-1, keepdim=True)
    if bool(empty.any()):
        mask = mask | empty
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
