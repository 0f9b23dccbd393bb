"""What every checkpoint format shares: file names, `CheckpointError`, the state-dict check, and the
tensor-layout helpers the converters use (Megatron per-head qkv, filter taps, tied embeddings)."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from focus_nemo.evo2.config import Evo2Config
from focus_nemo.evo2.model import Evo2Model

FORMAT_NAME = "focus_nemo.evo2"


FORMAT_VERSION = 1


WEIGHTS_FILE = "model.safetensors"


CONFIG_FILE = "config.json"


# Published Evo-2 models all use 128-wide attention heads; Wqkv alone does not reveal the head count.
DEFAULT_HEAD_DIM = 128


# Vortex applies FIR filters at least this long as an FFT convolution with the taps as impulse response
# (and gives them a gated bias D); shorter ones go through F.conv1d (cross-correlation orientation).
VORTEX_FFT_FIR_MIN_LENGTH = 128


# Stored rotary tables may be bf16-rounded (relative error <= 2^-8); distinct bases such as 1e4 and 1e6 differ
# by several percent already in the second frequency.
ROTARY_RTOL = 1e-2


class CheckpointError(ValueError):
    """A checkpoint cannot be read, is of an unknown format, or does not match the model configuration."""


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: Evo2Config, origin: Mapping[str, str] | None = None
) -> None:
    """Check names and shapes of a state dict in our names against `config`.

    The expected shapes come from an `Evo2Model` built on the meta device, so checking a 7B configuration
    allocates no parameter memory. Meta tensors are accepted in `state_dict`.

    Args:
        state_dict: tensors in `Evo2Model` names.
        config: the configuration they should fit.
        origin: our name -> name in the source file, to name both in errors.

    Raises:
        CheckpointError: listing every missing, unexpected and mis-shaped tensor.
    """
    with torch.device("meta"):
        reference = Evo2Model(config, init=False)
    expected = {k: tuple(t.shape) for k, t in reference.state_dict().items()}
    origin = origin or {}

    def name(k: str) -> str:
        src = origin.get(k)
        return k if src is None or src == k else f"{k} (checkpoint key {src!r})"

    problems = [f"missing: {name(k)} {expected[k]}" for k in expected if k not in state_dict]
    problems += [f"unexpected: {name(k)}" for k in state_dict if k not in expected]
    problems += [
        f"shape mismatch: {name(k)}: checkpoint {tuple(t.shape)} vs config {expected[k]}"
        for k, t in state_dict.items()
        if k in expected and tuple(t.shape) != expected[k]
    ]
    if problems:
        shown = "\n  ".join(problems[:25]) + (f"\n  ... and {len(problems) - 25} more" if len(problems) > 25 else "")
        raise CheckpointError(
            f"checkpoint does not match Evo2Config {config.name!r} (shape hash {config.shape_hash()}):\n  {shown}"
        )


@dataclass
class Converted:
    """A checkpoint in our names, with what is needed to resolve and check its config."""

    fmt: str
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # our name -> source name
    inv_freq: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # stored rotary tables
    head_dim: int | None = None  # head width used to split Wqkv
    config: Evo2Config | None = None  # config stored with the weights
    where: str = "the checkpoint"  # the file, for messages

    def put(self, key: str, tensor: torch.Tensor, source: str) -> None:
        self.state_dict[key] = tensor
        self.origin[key] = source


class Source:
    """Pops tensors from a source state dict, naming the file and key in errors."""

    def __init__(self, state: Mapping[str, object], where: str) -> None:
        self.rest = dict(state)
        self.where = where

    def has(self, key: str) -> bool:
        return key in self.rest

    def take(self, key: str) -> torch.Tensor:
        if key not in self.rest:
            raise CheckpointError(f"{self.where}: missing tensor {key!r}")
        value = self.rest.pop(key)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{self.where}: {key!r} is a {type(value).__name__}, not a tensor")
        return value

    def finish(self, strict: bool) -> None:
        if not self.rest:
            return
        keys = sorted(self.rest)
        msg = f"{self.where}: {len(keys)} tensor(s) not used by the Evo-2 model: {keys[:20]}"
        if strict:
            raise CheckpointError(msg + " (pass strict=False to drop them)")
        warnings.warn(msg + " (dropped)", stacklevel=3)


def corrupt_file_error(where: str, what: str, e: BaseException) -> str:
    return f"{where}: cannot read {what} (truncated or corrupt?): {first_line(e)}"


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def drop_extra_state(src: Source) -> None:
    # Transformer Engine FP8 metadata (io.BytesIO or tensors) has no meaning outside TE.
    for k in [k for k in src.rest if k.rsplit(".", 1)[-1].startswith("_extra")]:
        del src.rest[k]


def check_tied(unembed: torch.Tensor, embedding: torch.Tensor, key: str, where: str) -> None:
    if unembed.is_meta or embedding.is_meta:
        return
    if unembed.shape != embedding.shape or not torch.equal(unembed, embedding):
        raise CheckpointError(f"{where}: {key} differs from the input embedding; this model ties the two")


def head_dim_from_tables(tables: list[torch.Tensor]) -> int | None:
    sizes = {t.numel() for t in tables}
    return 2 * sizes.pop() if len(sizes) == 1 else None


def block_indices(keys, pattern: str, where: str) -> list[int]:
    indices = sorted({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})
    if indices != list(range(len(indices))):
        raise CheckpointError(f"{where}: block indices must be 0..N-1, found {indices}")
    return indices


def taps_2d(t: torch.Tensor, key: str, where: str) -> torch.Tensor:
    """[C, 1, K] or [C, K] filter taps -> [C, K] (orientation unchanged)."""
    if t.dim() == 3 and t.shape[1] == 1:
        return t[:, 0]
    if t.dim() == 2:
        return t
    raise CheckpointError(f"{where}: {key} has shape {tuple(t.shape)}, expected [channels, 1, taps]")


def squeeze_last(t: torch.Tensor, key: str, where: str) -> torch.Tensor:
    if t.dim() == 3 and t.shape[-1] == 1:
        return t[..., 0]
    if t.dim() == 2:
        return t
    raise CheckpointError(f"{where}: {key} has shape {tuple(t.shape)}, expected [groups, order, 1]")


def qkv_from_megatron(w: torch.Tensor, head_dim: int, key: str, where: str) -> torch.Tensor:
    """Megatron fused QKV rows [heads, (q, k, v), head_dim] -> [Q; K; V]."""
    rows, hidden = w.shape
    if rows != 3 * hidden or hidden % head_dim:
        raise CheckpointError(
            f"{where}: {key} has shape {tuple(w.shape)}, which does not split into q, k, v heads of width {head_dim}"
        )
    return w.reshape(hidden // head_dim, 3, head_dim, hidden).transpose(0, 1).reshape(rows, hidden)


def qkv_to_megatron(w: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[Q; K; V] -> Megatron fused QKV rows [heads, (q, k, v), head_dim]."""
    rows, hidden = w.shape
    return w.reshape(3, hidden // head_dim, head_dim, hidden).transpose(0, 1).reshape(rows, hidden)


def base_from_inv_freq(t: torch.Tensor) -> float:
    """Least-squares rotary base of a stored table, snapped to a power of ten when within 1 %."""
    f = t.detach().double().cpu()
    exponents = torch.arange(f.numel(), dtype=torch.float64) * 2 / (2 * f.numel())  # inv_freq_k = base^-e_k
    log_base = float(-(exponents * f.clamp_min(1e-300).log()).sum() / exponents.pow(2).sum().clamp_min(1e-300))
    decade = round(log_base / math.log(10))
    if abs(log_base - decade * math.log(10)) < math.log(1.01):
        return float(10.0**decade)
    return float(f"{math.exp(log_base):.4g}")
