"""The NeMo/Megatron FOCUS model equals the single-device FocusModel from the same weights (DESIGN I6).

Megatron keeps global parallel state per process, so the NeMo side runs in fresh processes: this file
is also the worker script (``python tests/nemo/test_focus_nemo.py ...``, under
``torch.distributed.run`` for TP=2). The worker loads Evo-2 base weights and full Focus tensors
written by the test, runs `NemoFocusModel`, and saves logits, Focus tensors and gradients for the
test to compare with `FocusModel` in the pytest process.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.nemo

REPO = Path(__file__).resolve().parents[2]
PATTERN = "SDH*SD*"  # two attention blocks, at global indices 3 and 6
REL_TOL = 1e-4  # max |nemo - focus| / max |focus|
# (length, k, W): lengths >= 300 (NeMo's medium filter wraps around below 127 tokens), not multiples
# of k or W, and one k that does not divide W (short last block per window).
CASES = [(300, 16, 128), (333, 30, 100)]
TRAIN_CASE = (300, 25, 120)
STREAM_CASE = (333, 30, 100)  # streamed window by window: chunks of W, and of a size dividing neither W nor k
STREAM_CHUNKS = (100, 37)
LR = 1e-3
STREAM_HORIZON = 100  # one window of Focus memory at W=100: the last window no longer sees window 0 or 1
OFFSET_WINDOWS = 2**31 // STREAM_CASE[2]  # I7: a stream starting at window-aligned offset ~2^31
ALLOC_CASE = (4, 128, 24)  # k, W, chunk: a chunk inside a window, after 2 and after 40 windows (1,280 entries)


def largest_new_tensor(fn) -> int:
    """Elements of the largest tensor any aten op allocates while `fn()` runs (views do not count)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Probe(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {a.untyped_storage().data_ptr() for a in (*args, *(kwargs or {}).values())
                      if isinstance(a, torch.Tensor)}
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                    Probe.largest = max(Probe.largest, t.numel())
            return out

    with Probe():
        fn()
    return Probe.largest


def streaming_allocations(fm, windows=(2, 40)) -> dict[int, int]:
    """Largest tensor created by one chunk inside a window (no window completes), after `windows`
    completed windows of memory: it must not grow with the memory (O(chunk) beyond the K/V)."""
    k, w, chunk = ALLOC_CASE
    out = {}
    with torch.no_grad():
        for n in windows:
            tokens = acgt_tokens(1, n * w + 2 * chunk, seed=n)
            state = fm.init_state(1, k=k, window=w)
            for _ in fm.stream(tokens[:, : n * w + chunk], w, state=state):
                pass
            rest = tokens[:, n * w + chunk:]
            out[n] = largest_new_tensor(lambda st=state, t=rest: fm.forward_chunk(t, st))
    return out


def acgt_tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([65, 67, 71, 84])[torch.randint(0, 4, (batch, length), generator=g)]


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def next_base_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


# --------------------------------------------------------------------------- worker side
def _build(args):
    from focus_nemo.evo2 import Evo2Config
    from focus_nemo.focus import FocusConfig
    from focus_nemo.nemo import build
    from focus_nemo.nemo.focus_model import NemoFocusModel

    cfg = Evo2Config.preset("tiny", pattern=PATTERN)
    build.init_model_parallel(seed=0)
    mcore = build.build_hyena_model(cfg, seq_length=1024)
    build.load_evo2_weights(mcore, torch.load(args.evo2_weights, weights_only=True), cfg)
    return cfg, NemoFocusModel(mcore, FocusConfig(k=16, window=128), vocab_size=cfg.vocab_size)


def _worker_onepass(args) -> None:
    from focus_nemo.nemo import build

    cfg, fm = _build(args)
    init_sd = fm.focus_state_dict()
    # Tensors that do not fit are refused by name before anything is copied.
    errors = []
    for bad in ({**init_sd, "focus_proj.0.wqkv": init_sd["focus_proj.3.wqkv"]},
                {**init_sd, "focus_embedding": init_sd["focus_embedding"][:-1]}):
        try:
            fm.load_focus_state_dict(bad)
        except ValueError as e:
            errors.append(str(e))
    if Path(args.focus).is_dir():  # an adapter directory written by FocusModel.save_adapter
        fm.load_adapter(args.focus, cfg)
    else:
        fm.load_focus_state_dict(torch.load(args.focus, weights_only=True))
    out = {"init_sd": init_sd, "sd": fm.focus_state_dict(), "tp": torch.distributed.get_world_size(),
           "errors": errors, "config": fm.config.to_dict(),
           "trainable": sorted(n for n, p in fm.named_parameters() if p.requires_grad), "logits": {}}
    with torch.no_grad():
        for length, k, w in CASES:
            out["logits"][f"{length},{k},{w}"] = fm(acgt_tokens(2, length, seed=length), k=k, window=w)
        length, k, w = CASES[-1]  # the dense-mask reference on the Megatron backbone (I2)
        out["dense"] = fm.forward_dense(acgt_tokens(2, length, seed=length), k=k, window=w)
        # I1 on the Megatron backbone: one window covering the sample is the frozen base itself
        tokens = acgt_tokens(2, length, seed=5)
        out["i1"] = (fm(tokens, k=k, window=length), fm.base_logits(tokens))
    if torch.distributed.get_rank() == 0:
        torch.save(out, args.out)
    build.teardown()


def _worker_stream(args) -> None:
    from focus_nemo.nemo import build

    _, fm = _build(args)
    fm.load_focus_state_dict(torch.load(args.focus, weights_only=True))
    length, k, w = STREAM_CASE
    tokens = acgt_tokens(2, length, seed=11)
    out = {"tp": torch.distributed.get_world_size(), "logits": {}, "memory": {}}
    with torch.no_grad():
        for chunk in STREAM_CHUNKS:
            state = fm.init_state(2, k=k, window=w)
            out["logits"][chunk] = torch.cat(list(fm.stream(tokens, chunk, state=state)), 1)
            out["memory"][chunk] = (state.memory_entries(), state.window_entries())
        # I7: the same bases streamed from absolute offset ~2^31 (window-aligned)
        state = fm.init_state(2, k=k, window=w, offset=OFFSET_WINDOWS * w)
        out["offset_logits"] = torch.cat(list(fm.stream(tokens, STREAM_CHUNKS[1], state=state)), 1)
        out["offset_memory_pos"] = state.memory_pos - OFFSET_WINDOWS * w
        # A bounded horizon (D12): one pass and streaming (chunks dividing neither W nor k)
        fm.config.horizon = STREAM_HORIZON
        out["horizon_onepass"] = fm(tokens, k=k, window=w)
        state = fm.init_state(2, k=k, window=w)
        out["horizon_logits"] = torch.cat(list(fm.stream(tokens, STREAM_CHUNKS[1], state=state)), 1)
        out["horizon_memory"] = state.memory_entries()
        out["horizon_memory_pos"] = state.memory_pos
        fm.config.horizon = None
        # The exact local band (D11): one pass and streaming with local = 1
        fm.config.local = 1
        out["local_onepass"] = fm(tokens, k=k, window=w)
        state = fm.init_state(tokens.shape[0], k, w)
        out["local_logits"] = torch.cat(list(fm.stream(tokens, STREAM_CHUNKS[1], state=state)), 1)
        out["local_band"] = state.band_entries()
        fm.config.local = 0
    out["alloc"] = streaming_allocations(fm)
    if torch.distributed.get_rank() == 0:
        torch.save(out, args.out)
    build.teardown()


def _worker_level2(args) -> None:
    """The adapter (with level-2 queries and a level-2 config) loaded at this TP size: one pass,
    dense reference and streaming with second-level entries, and the gathered queries."""
    from focus_nemo.nemo import build

    cfg, fm = _build(args)
    fm.load_adapter(args.focus, cfg)
    length, k, w = STREAM_CASE
    tokens = acgt_tokens(2, length, seed=11)
    with torch.no_grad():
        out = {"tp": torch.distributed.get_world_size(), "config": fm.config.to_dict(), "onepass": fm(tokens),
               "dense": fm.forward_dense(tokens), "sd": fm.focus_state_dict(),
               "local_query": {i: tuple(p.shape) for i, p in fm.level2_query.items()}}
        state = fm.init_state(2)
        out["stream"] = torch.cat(list(fm.stream(tokens, STREAM_CHUNKS[1], state=state)), 1)
        out["memory"], out["coarse"] = state.memory_entries(), state.coarse_entries()
    if torch.distributed.get_rank() == 0:
        torch.save(out, args.out)
    build.teardown()


def _worker_train(args) -> None:
    from focus_nemo.nemo import build

    cfg, fm = _build(args)
    fm.load_focus_state_dict(torch.load(args.focus, weights_only=True))
    base_before = {n: p.detach().clone() for n, p in fm.base.named_parameters()}
    params = [p for p in fm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR)
    length, k, w = TRAIN_CASE
    tokens = acgt_tokens(2, length, seed=7)
    fm.train()
    grads0 = None
    for step in range(args.steps):
        opt.zero_grad(set_to_none=True)
        next_base_loss(fm(tokens, k=k, window=w), tokens).backward()
        if step == 0:
            grads0 = fm.focus_state_dict(grads=True)
        opt.step()
    fm.eval()
    base_same = all(torch.equal(base_before[n], p) for n, p in fm.base.named_parameters())
    base_frozen = not any(p.requires_grad for p in fm.base.parameters())
    with torch.no_grad():
        logits = fm(tokens, k=k, window=w)
    fm.save_adapter(args.adapter, cfg, extra={"steps": args.steps})  # collective; rank 0 writes
    sd = fm.focus_state_dict()
    # Replicated tensors must stay identical on every rank (their gradients are full on each).
    emb = [torch.empty_like(fm.focus_embedding) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(emb, fm.focus_embedding.detach())
    if torch.distributed.get_rank() == 0:
        torch.save({"grads0": grads0, "sd": sd, "logits": logits, "tokens": tokens, "base_same": base_same,
                    "base_frozen": base_frozen, "replicas_equal": all(torch.equal(emb[0], e) for e in emb),
                    "tp": torch.distributed.get_world_size()}, args.out)
    build.teardown()


def _main() -> None:
    parser = argparse.ArgumentParser(description="Run NemoFocusModel on the test cases and save the results.")
    parser.add_argument("mode", choices=["onepass", "stream", "train", "level2"])
    parser.add_argument("--evo2-weights", required=True)
    parser.add_argument("--focus", required=True, help="full Focus tensors (FocusModel.focus_parameters())")
    parser.add_argument("--out", required=True)
    parser.add_argument("--adapter", help="adapter directory to write (train mode)")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    {"onepass": _worker_onepass, "stream": _worker_stream, "train": _worker_train,
     "level2": _worker_level2}[args.mode](args)


# --------------------------------------------------------------------------- pytest side
def focus_reference(seed: int = 3):
    """FocusModel on a stressed tiny base with randomly perturbed Focus parameters."""
    from conftest import perturb_focus_, stressed_model

    from focus_nemo.focus import FocusConfig, FocusModel

    fm = FocusModel(stressed_model(pattern=PATTERN, seed=seed), FocusConfig(k=16, window=128)).eval()
    return fm, perturb_focus_(fm, seed)


def _save_inputs(fm, tmp_path: Path, adapter: bool = False) -> list[str]:
    """Base weights, and the Focus tensors as a plain file or (adapter=True) a FocusModel adapter directory."""
    torch.save(fm.base.state_dict(), tmp_path / "evo2.pt")
    if adapter:
        focus = fm.save_adapter(tmp_path / "focus_adapter")
    else:
        focus = tmp_path / "focus.pt"
        torch.save({n: p.detach().clone() for n, p in fm.focus_parameters().items()}, focus)
    return ["--evo2-weights", str(tmp_path / "evo2.pt"), "--focus", str(focus)]


# TP=1 loads the Focus tensors with load_focus_state_dict; TP=2 loads FocusModel's adapter directory,
# whose config (scope "kmer") replaces the NeMo model's.
@pytest.mark.parametrize("tp", [1, 2])
def test_nemo_focus_onepass_equals_focus_model(tp, tmp_path):
    """Same base and Focus weights: NemoFocusModel (TP=1, 2) and FocusModel give the same logits."""
    from conftest import require_nemo, run_worker

    require_nemo()
    fm, fresh = focus_reference()
    if tp == 2:
        fm.config.scope = "kmer"  # carried to the NeMo model by the adapter's config
    run_worker(__file__, "onepass", *_save_inputs(fm, tmp_path, adapter=tp == 2), "--out", str(tmp_path / "nemo.pt"),
               nproc=tp, timeout=600)
    out = torch.load(tmp_path / "nemo.pt", weights_only=True)
    assert out["tp"] == tp
    assert out["config"] == fm.config.to_dict()
    assert len(out["errors"]) == 2
    assert "unexpected ['focus_proj.0.wqkv']" in out["errors"][0] and "focus_embedding" in out["errors"][1]
    want = {n: p.detach() for n, p in fm.focus_parameters().items()}

    focus_i1, base_i1 = out["i1"]
    assert rel_diff(focus_i1, base_i1) <= 1e-5, rel_diff(focus_i1, base_i1)
    # Initialisation (copies of the base shards, the init_token's embedding) and the tensor names,
    # layouts and global block indices agree exactly with FocusModel's.
    assert sorted(out["init_sd"]) == sorted(fresh) == sorted(want)
    for n in fresh:
        assert torch.equal(out["init_sd"][n], fresh[n]), n
    # Full tensors round-trip through the TP shards bit for bit.
    for n in want:
        assert torch.equal(out["sd"][n], want[n]), n
    # Only Focus parameters train.
    assert out["trainable"] == sorted(f"{n}" for n in _nemo_focus_names(want))

    with torch.no_grad():
        for length, k, w in CASES:
            tokens = acgt_tokens(2, length, seed=length)
            ref = fm(tokens, k=k, window=w)
            got = out["logits"][f"{length},{k},{w}"]
            assert got.shape == ref.shape
            assert rel_diff(got, ref) <= REL_TOL, (length, k, w, rel_diff(got, ref))
            # The comparison can fail: the Focus perturbation moves FocusModel's logits far beyond it.
            saved = {n: p.detach().clone() for n, p in fm.focus_parameters().items()}
            for n, p in fm.focus_parameters().items():
                p.copy_(fresh[n])
            assert rel_diff(fm(tokens, k=k, window=w), ref) > 100 * REL_TOL
            for n, p in fm.focus_parameters().items():
                p.copy_(saved[n])
            if (length, k, w) == CASES[-1]:  # I2 on the Megatron backbone: one pass == dense reference
                assert rel_diff(out["dense"], got) <= REL_TOL, rel_diff(out["dense"], got)
            if tp == 2:  # the adapter's scope really reached the NeMo model: the other scope differs
                fm.config.scope = "window"  # (by ~1e-2 here; the two models agree to ~1e-6)
                assert rel_diff(fm(tokens, k=k, window=w), ref) > 10 * REL_TOL
                fm.config.scope = "kmer"


def test_nemo_focus_level2_tp2_equals_focus_model(tmp_path):
    """A second level of Focus memory (D12) on the Megatron backbone at TP=2: the adapter's level-2
    queries are sharded by head, and one pass, dense reference and streaming equal FocusModel's."""
    from conftest import require_nemo, run_worker, stressed_model

    from focus_nemo.focus import FocusConfig, FocusModel

    require_nemo()
    length, k, w = STREAM_CASE
    k2 = 3  # m = 4 entries per window: groups straddle windows
    fm = FocusModel(stressed_model(pattern=PATTERN, seed=3),
                    FocusConfig(k=k, window=w, horizon=STREAM_HORIZON, level2=k2)).eval()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for n, p in fm.focus_parameters().items():
            p.add_(torch.randn(p.shape, generator=g) * (5.0 if n.startswith("level2_query.") else 0.05 * p.std()))
    run_worker(__file__, "level2", *_save_inputs(fm, tmp_path, adapter=True), "--out", str(tmp_path / "nemo.pt"),
               nproc=2, timeout=600)
    out = torch.load(tmp_path / "nemo.pt", weights_only=True)
    assert out["tp"] == 2 and out["config"] == fm.config.to_dict()
    heads, hd = fm.base.config.num_heads, fm.base.config.head_dim
    attention = [i for i, c in enumerate(PATTERN) if c == "*"]
    assert out["local_query"] == {str(i): (heads // 2, hd) for i in attention}
    for n, p in fm.focus_parameters().items():  # full tensors, level-2 queries included, round-trip the shards
        assert torch.equal(out["sd"][n], p.detach()), n
    tokens = acgt_tokens(2, length, seed=11)
    with torch.no_grad():
        ref = fm(tokens)
        fm.config.level2_pool = "mean"
        mean = fm(tokens)
        fm.config.level2 = None
        horizon_only = fm(tokens)
    # The second level matters (5e-2), and so do the trained queries, if little in this tiny model (1.2e-4):
    # the tolerance is tighter than REL_TOL so that a wrong head sharding of the queries cannot pass.
    tol = 1e-5
    assert rel_diff(horizon_only, ref) > 1000 * tol and rel_diff(mean, ref) > 10 * tol
    for name in ("onepass", "dense", "stream"):
        assert rel_diff(out[name], ref) <= tol, (name, rel_diff(out[name], ref))
    m, done = -(-w // k), length // w  # 3 completed windows, horizon 1 window: fine [3, 12), 1 coarse entry
    lo = (done - STREAM_HORIZON // w) * m // k2 * k2
    assert out["memory"] == {i: done * m - lo for i in attention}
    assert out["coarse"] == {i: lo // k2 for i in attention}


def _nemo_focus_names(full_names) -> list[str]:
    """NemoFocusModel's parameter names for FocusModel's adapter names."""
    out = []
    for n in full_names:
        if n == "focus_embedding":
            out.append(n)
        else:
            _, i, rest = n.split(".", 2)
            out.append(f"focus_proj.{i}." + {"wqkv": "linear_qkv.weight", "out_proj.weight": "linear_proj.weight",
                                             "out_proj.bias": "linear_proj.bias"}[rest])
    return out


def test_nemo_focus_streaming_tp2_equals_focus_model(tmp_path):
    """Window-by-window streaming of NemoFocusModel at TP=2 (exact Hyena state per channel shard,
    Focus-only attention memory) gives FocusModel's one-pass logits (DESIGN I2 with I6)."""
    from conftest import require_nemo, run_worker

    require_nemo()
    fm, _ = focus_reference()
    run_worker(__file__, "stream", *_save_inputs(fm, tmp_path), "--out", str(tmp_path / "nemo.pt"), nproc=2,
               timeout=600)
    out = torch.load(tmp_path / "nemo.pt", weights_only=True)
    assert out["tp"] == 2
    length, k, w = STREAM_CASE
    with torch.no_grad():
        ref = fm(acgt_tokens(2, length, seed=11), k=k, window=w)
    attention = [i for i, c in enumerate(PATTERN) if c == "*"]
    for chunk in STREAM_CHUNKS:
        assert rel_diff(out["logits"][chunk], ref) <= REL_TOL, (chunk, rel_diff(out["logits"][chunk], ref))
        # Bounded memory (I4): only the Focus entries of the completed windows, plus the open window.
        memory, window = out["memory"][chunk]
        assert memory == {i: (length // w) * -(-w // k) for i in attention}
        assert window == {i: length % w for i in attention}
    # I7 at TP=2: positions differ by ~2^31, attention sees only relative positions
    assert rel_diff(out["offset_logits"], ref) <= REL_TOL, rel_diff(out["offset_logits"], ref)
    from focus_nemo.focus.layout import focus_tokens

    assert out["offset_memory_pos"].tolist() == focus_tokens(range(length // w), k, w).pos.tolist()
    # With a horizon: the Megatron one pass and stream equal FocusModel's one pass with the same horizon,
    # which differs from the unbounded one; the memory keeps the last horizon/W windows' entries only (I4).
    fm.config.horizon = STREAM_HORIZON
    with torch.no_grad():
        ref_h = fm(acgt_tokens(2, length, seed=11), k=k, window=w)
    fm.config.horizon = None
    assert rel_diff(ref_h, ref) > 100 * REL_TOL
    for got in (out["horizon_onepass"], out["horizon_logits"]):
        assert rel_diff(got, ref_h) <= REL_TOL, rel_diff(got, ref_h)
    h = STREAM_HORIZON // w
    assert out["horizon_memory"] == {i: h * -(-w // k) for i in attention}
    assert out["horizon_memory_pos"].tolist() == focus_tokens(range(length // w - h, length // w), k, w).pos.tolist()
    # With the exact local band: both Megatron paths equal FocusModel's one pass with local = 1 (which
    # differs from local = 0); the band holds the previous window's bases (I4 with the band).
    fm.config.local = 1
    with torch.no_grad():
        ref_l = fm(acgt_tokens(2, length, seed=11), k=k, window=w)
    fm.config.local = 0
    assert rel_diff(ref_l, ref) > 100 * REL_TOL
    for got in (out["local_onepass"], out["local_logits"]):
        assert rel_diff(got, ref_l) <= REL_TOL, rel_diff(got, ref_l)
    assert out["local_band"] == {i: w for i in attention}
    # O(chunk) beyond the K/V: the largest tensor one chunk creates does not grow with the memory
    # (a [chunk x memory] mask or a copy of the memory would: 40 windows hold 1,280 Focus entries per block)
    alloc = out["alloc"]
    assert alloc[40] == alloc[2], alloc
    fm_alloc = streaming_allocations(fm)
    assert fm_alloc[40] == fm_alloc[2], fm_alloc


def test_nemo_focus_train_tp2_adapter_loads_into_focus_model(tmp_path):
    """AdamW on the Focus parameters at TP=2: gradients equal FocusModel's, the base stays bit-identical,
    and the saved adapter loads into FocusModel with the same logits."""
    from conftest import require_nemo, run_worker

    require_nemo()
    from focus_nemo.focus.adapter import CONFIG

    fm, _ = focus_reference()
    steps = 3
    run_worker(__file__, "train", *_save_inputs(fm, tmp_path), "--out", str(tmp_path / "nemo.pt"),
               "--adapter", str(tmp_path / "adapter"), "--steps", str(steps), nproc=2, timeout=600)
    out = torch.load(tmp_path / "nemo.pt", weights_only=True)
    assert out["tp"] == 2
    assert out["base_same"] and out["base_frozen"] and out["replicas_equal"]

    # First-step gradients agree with FocusModel's (the TP collectives of the Focus path are right).
    length, k, w = TRAIN_CASE
    tokens = out["tokens"]
    fm.train()
    next_base_loss(fm(tokens, k=k, window=w), tokens).backward()
    ref_grads = {n: torch.zeros_like(p) if p.grad is None else p.grad for n, p in fm.focus_parameters().items()}
    # The last attention block's Focus queries and outputs reach no logit (no ordinary base reads the
    # Focus stream after it); every other Focus tensor gets a gradient.
    assert [n for n, g in ref_grads.items() if not g.any()] == [f"focus_proj.{PATTERN.rindex('*')}.out_proj.{t}"
                                                                 for t in ("weight", "bias")]
    for n, g in ref_grads.items():
        scale = g.abs().max() if g.any() else torch.tensor(1.0)
        assert ((out["grads0"][n] - g).abs().max() / scale).item() <= REL_TOL, n
    fm.eval()

    # The adapter written on rank 0 holds exactly the trained Focus tensors and loads into FocusModel.
    meta = json.loads((tmp_path / "adapter" / CONFIG).read_text())
    assert meta["steps"] == steps and sorted(meta["tensors"]) == sorted(fm.focus_parameters())
    before = {n: p.detach().clone() for n, p in fm.focus_parameters().items()}
    fm.load_adapter(tmp_path / "adapter")
    for n, p in fm.focus_parameters().items():
        assert torch.equal(p.detach(), out["sd"][n]), n
        assert torch.equal(p.detach(), before[n]) == (not ref_grads[n].any()), f"{n}: trained iff it has a gradient"
    with torch.no_grad():
        assert rel_diff(out["logits"], fm(tokens, k=k, window=w)) <= REL_TOL



def test_nemo_config_resolves_an_auto_horizon():
    """The NeMo model config carries the horizon, "auto" resolved against the base's trained context."""
    from conftest import require_nemo

    require_nemo()
    from focus_nemo.evo2 import Evo2Config
    from focus_nemo.focus import FocusConfig
    from focus_nemo.nemo.lightning import FocusHyenaConfig

    evo2 = Evo2Config.preset("tiny", pattern=PATTERN, max_seqlen=4096)
    for horizon, want in (("auto", 3584), (512, 512), (None, None)):
        hc = FocusHyenaConfig.from_evo2(evo2, FocusConfig(k=16, window=512, horizon=horizon))
        assert hc.focus_config.horizon == want


if __name__ == "__main__":
    _main()
