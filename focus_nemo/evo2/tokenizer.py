"""Evo-2's byte tokenizer: one token per UTF-8 byte, vocabulary 512 (ids >= 256 unused)."""

from __future__ import annotations

import numpy as np
import torch

VOCAB_SIZE = 512
EOD_ID = 0  # end of document / optional BOS in Evo-2 scoring
PAD_ID = 1
ACGT = b"ACGT"
ACGT_IDS = tuple(ACGT)  # (65, 67, 71, 84)


def encode(seq: str | bytes) -> torch.Tensor:
    """DNA string -> LongTensor [L] of byte ids (case preserved)."""
    data = seq.encode("ascii") if isinstance(seq, str) else bytes(seq)
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64))


def decode(tokens: torch.Tensor) -> str:
    """LongTensor of byte ids -> string (ids outside 32..255 become '?')."""
    arr = tokens.detach().cpu().numpy().astype(np.int64)
    arr = np.where((arr >= 32) & (arr < 256), arr, ord("?"))
    return arr.astype(np.uint8).tobytes().decode("latin-1")


def check_tokens(tokens: torch.Tensor, vocab_size: int = VOCAB_SIZE, what: str = "tokens") -> None:
    """Raise a clear error for ids outside [0, vocab_size) or non-integer input."""
    if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{what}: expected an integer tensor of byte ids, got dtype {tokens.dtype}")
    if tokens.numel() == 0:
        return
    if tokens.device.type == "cpu":  # read on the host: no tensor operator, nothing to synchronise
        arr = tokens.numpy(force=True)
        lo, hi = int(arr.min()), int(arr.max())
    else:  # one device-to-host transfer for both bounds
        lo, hi = torch.stack([tokens.min(), tokens.max()]).tolist()
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{what}: token id {bad} outside the vocabulary [0, {vocab_size})")
