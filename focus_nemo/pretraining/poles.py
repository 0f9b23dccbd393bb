"""Long-filter poles that decay by construction, for training.

Files (ours, vortex, NeMo) store each long filter's modal poles as log-poles, ``logp <= 0``. Trained as
they are, a log-pole can be pushed to 0 or above, where the filter clamps it and the mode becomes an
integrator that no longer trains and makes long streams drift. During pretraining the log-poles are
therefore parametrised as

    logp = -(min_decay + exp(p))

with ``p`` the trained value (NeMo's ImplicitModalFilter uses the same exponential form): every pole decays
by at least ``min_decay`` per base whatever the optimizer does, and an Adam step moves the decay rate by a
relative amount, the natural scale for rates spanning 1e-5 to 1e-1 per base. The parametrisation lives on
the training model only: what is saved, exported or evaluated is the plain model with its usual log-poles.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from focus_nemo.evo2.model import Evo2Model
from focus_nemo.evo2.poles import LOG_POLES_SUFFIX

DEFAULT_MIN_DECAY = 1e-6  # half-life ln 2 / 1e-6 = 693k bases


class DecayingLogPoles(nn.Module):
    """logp = -(min_decay + exp(p)): strictly below -min_decay for every finite p."""

    def __init__(self, min_decay: float = DEFAULT_MIN_DECAY) -> None:
        super().__init__()
        if not 0 < min_decay < 1:
            raise ValueError(f"DecayingLogPoles.min_decay: must lie in (0, 1), got {min_decay}")
        self.min_decay = float(min_decay)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return -(self.min_decay + torch.exp(p))

    def right_inverse(self, log_poles: torch.Tensor) -> torch.Tensor:
        # A pole that decays more slowly than min_decay (or not at all) starts at the slowest allowed decay
        # plus a hair, so its raw value is finite.
        excess = (-log_poles - self.min_decay).clamp(min=self.min_decay * 1e-3)
        return torch.log(excess)


def long_filters(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every long-filter module (the ones holding ``log_poles``)."""
    return [(n, m) for n, m in model.named_modules()
            if getattr(m, "kind", None) == "H" and hasattr(m, "log_poles")]


def parametrize_poles(model: Evo2Model, min_decay: float = DEFAULT_MIN_DECAY) -> int:
    """Make every long filter's log-poles decay by construction (in place); returns how many filters.

    Poles that did not decay fast enough start at -(min_decay + min_decay / 1000); the others keep their
    value up to float rounding of exp(log(.)).
    """
    n = 0
    for _, m in long_filters(model):
        if parametrize.is_parametrized(m, "log_poles"):
            continue
        parametrize.register_parametrization(m, "log_poles", DecayingLogPoles(min_decay))
        n += 1
    return n


def is_parametrized(model: nn.Module) -> bool:
    return any(parametrize.is_parametrized(m, "log_poles") for _, m in long_filters(model))


def plain_state_dict(model: Evo2Model) -> dict[str, torch.Tensor]:
    """The model's state dict in the usual names, with each parametrised filter's log-poles evaluated."""
    out = {}
    for name, t in model.state_dict().items():
        if ".parametrizations.log_poles." in name:
            continue
        out[name] = t
    for name, m in long_filters(model):
        if parametrize.is_parametrized(m, "log_poles"):
            with torch.no_grad():
                out[f"{name}.log_poles"] = m.log_poles.detach().clone()
    return out


def plain_model(model: Evo2Model) -> Evo2Model:
    """A plain `Evo2Model` (no parametrisation) holding `model`'s weights: what is saved and evaluated."""
    if not is_parametrized(model):
        return model
    with torch.device("meta"):
        plain = Evo2Model(model.config, init=False)
    plain.load_state_dict(plain_state_dict(model), strict=True, assign=True)
    return plain.train(model.training)


def raw_poles(model: Evo2Model) -> dict[str, torch.Tensor]:
    """The trained values p of every parametrised filter (saved beside the weights so that a resume is exact:
    log(exp(p)) does not always give p back in floating point)."""
    return {f"{name}.{LOG_POLES_SUFFIX.split('.')[-1]}": m.parametrizations.log_poles.original.detach().clone()
            for name, m in long_filters(model) if parametrize.is_parametrized(m, "log_poles")}


def load_raw_poles(model: Evo2Model, raw: dict[str, torch.Tensor]) -> None:
    """Set the trained values p saved by `raw_poles` (names must match exactly)."""
    have = {f"{name}.log_poles": m for name, m in long_filters(model) if parametrize.is_parametrized(m, "log_poles")}
    if set(have) != set(raw):
        raise ValueError(f"raw long-filter poles for {sorted(raw)} do not match the model's parametrised filters "
                         f"{sorted(have)}")
    with torch.no_grad():
        for name, m in have.items():
            m.parametrizations.log_poles.original.copy_(raw[name])


def half_life(log_pole: float) -> float:
    """Bases until a mode with this log-pole falls to half (inf for a pole that does not decay)."""
    return math.inf if log_pole >= 0 else math.log(2) / -log_pole
