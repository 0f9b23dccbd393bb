"""The streaming loop's own costs: no host synchronisation per chunk on the FOCUS path and in the
scoring loop besides the scores read back, and caches that append into the buffers they already hold."""

from __future__ import annotations

import numpy as np
import torch
from conftest import dna_tokens, stressed_model
from torch.profiler import ProfilerActivity, profile

from focus_nemo.focus import FocusConfig, FocusModel
from focus_nemo.scoring import LoglikStream

K, W = 8, 32
SYNC_OPS = {"aten::item", "aten::_local_scalar_dense", "aten::nonzero"}


def _model(horizon=None) -> FocusModel:
    return FocusModel(stressed_model(), FocusConfig(k=K, window=W, horizon=horizon)).eval()


def _ops(fn) -> dict[str, int]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key: e.count for e in prof.key_averages()}


@torch.no_grad()
def test_focus_streaming_and_scoring_read_nothing_back_per_chunk():
    fm = _model(horizon=2 * W)
    tokens = dna_tokens(1, 10 * W + 5, seed=1)
    state = fm.init_state(1)
    fm.forward_chunk(tokens[:, :W], state)  # warm-up: cached window masks

    def stream():
        for s in range(W, tokens.shape[1], 24):  # chunks cross window boundaries
            fm.forward_chunk(tokens[:, s: s + 24], state)

    ops = _ops(stream)
    assert not SYNC_OPS & set(ops), {k: v for k, v in ops.items() if k in SYNC_OPS}
    scorer = LoglikStream(fm, K, W, chunk_size=40)
    raw = np.frombuffer(bytes(tokens[0].to(torch.uint8).tolist()), dtype=np.uint8)
    scorer.feed(raw[:W])
    ops = _ops(lambda: scorer.feed(raw[W:]))
    assert not SYNC_OPS & set(ops), {k: v for k, v in ops.items() if k in SYNC_OPS}


@torch.no_grad()
def test_window_cache_and_horizon_memory_keep_their_buffers():
    fm = _model(horizon=2 * W)
    tokens = dna_tokens(1, 12 * W, seed=2)
    state = fm.init_state(1)
    fm.forward_chunk(tokens[:, :4 * W], state)  # the memory is full (2 windows) and has wrapped once
    (i,) = state.memory  # the one attention block
    win, mem = state.window_kv[i], state.memory[i]
    buffers = (win.k.data_ptr(), win.v.data_ptr(), mem.k.data_ptr(), mem.v.data_ptr())
    for s in range(4 * W, tokens.shape[1], W // 2):
        fm.forward_chunk(tokens[:, s: s + W // 2], state)
        assert state.window_kv[i] is win and state.memory[i] is mem
        assert (win.k.data_ptr(), win.v.data_ptr(), mem.k.data_ptr(), mem.v.data_ptr()) == buffers
        assert mem.length == 2 * (W // K)
