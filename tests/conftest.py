"""Shared fixtures: tiny Evo-2 models whose every filter really contributes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from focus_nemo.evo2 import Evo2Config, Evo2Model

REPO = Path(__file__).resolve().parents[1]
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


def random_dna(n: int, seed: int, alphabet: bytes = b"ACGT") -> bytes:
    """n bases drawn uniformly from `alphabet` (seeded)."""
    rng = np.random.default_rng(seed)
    return np.frombuffer(alphabet, np.uint8)[rng.integers(len(alphabet), size=n)].tobytes()


def perturbed_focus_model(config, pattern: str = "SDH*S*", seed: int = 0, q2_scale: float | None = None):
    """A FocusModel over `stressed_model(pattern, seed)` whose Focus parameters are moved off their copies
    of the base (as after training): noise of 0.1 x each tensor's mean |value| from a generator seeded
    seed + 1; with `q2_scale`, the level-2 queries are drawn as q2_scale x N(0, 1) instead (in eval mode)."""
    from focus_nemo.focus import FocusModel

    fm = FocusModel(stressed_model(pattern, seed=seed), config)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for n, p in fm.focus_parameters().items():
            if q2_scale is not None and n.startswith("level2_query."):
                p.copy_(q2_scale * torch.randn(p.shape, generator=g))
            else:
                p.add_(0.1 * p.abs().mean() * torch.randn(p.shape, generator=g))
    return fm.eval()


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference of two tensors."""
    return float((a - b).abs().max())


def perturb_focus_(fm, seed: int) -> dict[str, torch.Tensor]:
    """Move a FOCUS model's Focus parameters away from their initial copies of the base (as training
    would), by Gaussian noise of half each tensor's std; returns the initial copies."""
    fresh = {n: p.detach().clone() for n, p in fm.focus_parameters().items()}
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in fm.focus_parameters().values():
            scale = p.std().item() if p.numel() > 1 and p.std() > 0 else 0.02
            p.add_(torch.randn(p.shape, generator=g) * 0.5 * scale)
    return fresh


# The distributions of the ``nemo`` extra whose modules the NeMo tests import.
NEMO_DISTRIBUTIONS = {"nemo_toolkit": "nemo", "megatron-core": "megatron.core"}


def require_nemo() -> None:
    """Skip the calling test when the NeMo extra is not installed (a distribution of
    NEMO_DISTRIBUTIONS is absent). When it is installed, its modules are imported and any error
    (a broken Transformer Engine raises RuntimeError, a missing dependency ImportError) propagates,
    so a broken install fails the tests instead of skipping them."""
    import importlib
    from importlib import metadata

    absent = []
    for dist in NEMO_DISTRIBUTIONS:
        try:
            metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            absent.append(dist)
    if absent:
        pytest.skip(f"the nemo extra is not installed (no distribution {', '.join(absent)}; pip install -e '.[nemo]')")
    for module in NEMO_DISTRIBUTIONS.values():
        importlib.import_module(module)


def run_worker(script: str, *args: str, nproc: int = 1, timeout: int = 300) -> None:
    """Run a worker script in fresh processes (under torch.distributed.run when nproc > 1, one CPU
    thread per rank); raise with its output if it fails."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    launcher = [sys.executable]
    if nproc > 1:
        env["OMP_NUM_THREADS"] = "1"  # one core per rank
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    proc = subprocess.run([*launcher, script, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode:
        raise AssertionError(f"NeMo worker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
