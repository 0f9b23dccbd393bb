"""Long-filter poles that do not decay, and the warning every loader gives about them.

A long (H) Hyena filter is a sum of exponentials h[t] = sum_n R_n exp(logp_n t). A mode whose log-pole is
at or above 0 never decays: the filter clamps log-poles at 0, so such a channel integrates every input
since the stream began, and a whole-chromosome stream through it drifts (its scores worsen with position
while a fresh stream of the same bases scores well). `load_evo2` reports such poles once per checkpoint.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch

LOG_POLES_SUFFIX = "filter.log_poles"


class NonDecayingPoleWarning(UserWarning):
    """A checkpoint's long filters hold poles that do not decay (whole-chromosome streams drift)."""


def non_decaying_poles(source: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Count, per long filter, the modal poles whose log-pole is >= 0 (or not finite).

    Args:
        source: a model (its parameters are read) or a state dict.

    Returns:
        {parameter name: count} for every long filter with at least one such pole (empty when all decay).
    """
    items = source.named_parameters() if isinstance(source, torch.nn.Module) else source.items()
    found = {}
    for name, t in items:
        if not name.endswith(LOG_POLES_SUFFIX) or t.is_meta:
            continue
        lp = t.detach()
        bad = int(((lp >= 0) | ~torch.isfinite(lp)).sum())
        if bad:
            found[name] = bad
    return found


def warn_non_decaying_poles(source: torch.nn.Module | Mapping[str, torch.Tensor], origin: str) -> dict[str, int]:
    """Warn once, naming `origin`, the blocks and the counts, when a long filter has a non-decaying pole;
    returns what `non_decaying_poles` found."""
    found = non_decaying_poles(source)
    if found:
        total = sum(found.values())
        blocks = ", ".join(f"{name.removesuffix('.mixer.' + LOG_POLES_SUFFIX)} ({n})" for name, n in found.items())
        warnings.warn(f"{origin}: {total} long-filter pole(s) do not decay (log-pole >= 0) in {blocks}; those "
                      "channels integrate every input since the start of a stream, so whole-chromosome scores "
                      "drift with position", NonDecayingPoleWarning, stacklevel=3)
    return found
