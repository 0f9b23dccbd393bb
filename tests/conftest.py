"""Shared fixtures: tiny Evo-2 models whose every filter really contributes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from focus_nemo.evo2 import Evo2Config, Evo2Model

SHARED_DATA = Path(os.environ.get("FOCUS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def stressed_model(pattern: str = "SDH*", seed: int = 0, **overrides) -> Evo2Model:
    """Tiny model with slowly decaying, large long filters and strong medium filters, so that any
    state or masking error shows up far above float tolerance."""
    torch.manual_seed(seed)
    model = Evo2Model(Evo2Config.preset("tiny", pattern=pattern, **overrides)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.blocks:
            if block.is_attention:
                continue
            f = block.mixer.filter
            if f.kind == "H":
                f.log_poles.copy_(-torch.rand(f.log_poles.shape, generator=g) * 0.05 - 1e-3)
                f.residues.mul_(20.0)
            elif f.kind == "D":
                f.h.copy_(torch.randn(f.h.shape, generator=g) * 0.3)
            else:
                f.weight.mul_(2.0)
    return model


@pytest.fixture
def tiny_model() -> Evo2Model:
    return stressed_model()


def dna_tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    acgt = torch.tensor([65, 67, 71, 84])
    return acgt[torch.randint(0, 4, (batch, length), generator=g)]
