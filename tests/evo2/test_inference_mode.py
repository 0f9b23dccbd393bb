"""Loading and running inside torch.inference_mode() (the standard inference idiom, and Lightning's predict
loop) and under torch.no_grad(): base, FOCUS one pass and FOCUS streaming give the logits of a plain run."""

from __future__ import annotations

import pytest
import torch

from focus_nemo.evo2 import Evo2Config, Evo2Model, load_evo2
from focus_nemo.evo2.checkpoint import save_evo2
from focus_nemo.focus import FocusConfig, FocusModel


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    m = Evo2Model(Evo2Config.preset("tiny"))
    m.reset_parameters(4)
    return save_evo2(m, tmp_path_factory.mktemp("tiny") / "m")


def run_all(path, tokens):
    base = load_evo2(path)
    fm = FocusModel(load_evo2(path), FocusConfig(k=16, window=64))
    streamed = torch.cat(list(fm.stream(tokens, chunk_size=40)), dim=1)
    again = torch.cat(list(fm.stream(tokens, chunk_size=40)), dim=1)  # the pole-power cache is reused
    return base(tokens), fm(tokens), streamed, again


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
def test_load_and_run_inside_inference_mode(saved, mode):
    tokens = torch.randint(0, 4, (1, 200)).mul(3).add(65)
    ref = run_all(saved, tokens)
    ctx = torch.inference_mode() if mode == "inference_mode" else torch.no_grad()
    with ctx:
        got = run_all(saved, tokens)
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r.detach(), atol=1e-5, rtol=1e-5)


def test_inference_tensors_changed_in_place_miss_the_pole_cache(saved):
    tokens = torch.randint(0, 4, (1, 96)).mul(3).add(65)
    with torch.inference_mode():
        m = load_evo2(saved)
        state = m.init_state()
        first, _ = m.forward_chunk(tokens, state)
        m.blocks[2].mixer.filter.log_poles.mul_(2.0)  # in place: inference tensors keep no version counter
        changed, _ = m.forward_chunk(tokens, m.init_state())
        fresh = load_evo2(saved)
        fresh.blocks[2].mixer.filter.log_poles.mul_(2.0)
        expected, _ = fresh.forward_chunk(tokens, fresh.init_state())
    assert not torch.allclose(first, changed)
    torch.testing.assert_close(changed, expected, atol=1e-6, rtol=1e-6)
