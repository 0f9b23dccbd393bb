"""A NeMo 2 checkpoint written by NeMo's own trainer machinery reads back into Evo2Model exactly.

The worker (this file run as a script, in a fresh process because Megatron's parallel state is
per process) writes the tiny Evo-2 shape with `focus_nemo.nemo.convert.save_nemo2`, which saves
NeMo's Lightning `HyenaModel` the way NeMo's checkpoint importers do (`nemo.lightning` `Trainer` +
`MegatronStrategy`, `torch_dist` weights, then the `context/` dump); before the save the worker
gives the filters non-trivial values in NeMo's own parametrisation and records NeMo's logits.
The test reads the directory with `read_nemo2` only (no NeMo import) and compares logits. The
key-mapping tests at the end need no NeMo.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from focus_nemo.evo2 import Evo2Config, Evo2Model
from focus_nemo.evo2.nemo2 import evo2_to_megatron, megatron_to_evo2, read_nemo2, read_nemo2_config

SEQ_LEN = 300
REL_TOL = 1e-4
CONFIG = dict(short_conv_bias=True, rotary_scaling=2.0)  # the tiny shape, plus fields the context must carry


def _save_checkpoint(cfg: Evo2Config, ckpt_dir: Path, logits_file: Path) -> None:
    """Write `ckpt_dir` with `save_nemo2`, the filters set in NeMo's parametrisation; save NeMo's logits."""
    from test_parity import acgt_tokens, nontrivial_filters_

    from focus_nemo.nemo import build
    from focus_nemo.nemo.convert import save_nemo2

    torch.manual_seed(1)
    tokens = acgt_tokens(2, SEQ_LEN, seed=1)

    def prepare(megatron_model) -> None:
        # Filters with NeMo's medium-filter decay buffer and random long-filter p (not the p = 0,
        # decay = 1 form that Evo2 weights convert to), large enough to matter at the tolerance.
        nontrivial_filters_(megatron_model)
        logits = build.forward_logits(megatron_model, tokens, cfg.vocab_size)
        torch.save({"tokens": tokens, "logits": logits}, logits_file)

    save_nemo2(Evo2Model(cfg).state_dict(), cfg, ckpt_dir, seq_length=4096, prepare=prepare)


def _main() -> None:
    parser = argparse.ArgumentParser(description="Save a tiny NeMo 2 Hyena checkpoint and its logits.")
    parser.add_argument("ckpt_dir", type=Path)
    parser.add_argument("logits_file", type=Path)
    args = parser.parse_args()
    _save_checkpoint(Evo2Config.preset("tiny", **CONFIG), args.ckpt_dir, args.logits_file)


@pytest.fixture(scope="module")
def nemo2_checkpoint(tmp_path_factory):
    """(checkpoint dir, {"tokens", "logits"} of the NeMo model that was saved)."""
    from conftest import require_nemo, run_worker

    require_nemo()
    tmp = tmp_path_factory.mktemp("nemo2")
    run_worker(__file__, str(tmp / "ckpt"), str(tmp / "nemo.pt"))
    return tmp / "ckpt", torch.load(tmp / "nemo.pt", weights_only=True)


@pytest.mark.nemo
def test_layout_is_nemo2(nemo2_checkpoint):
    ckpt, _ = nemo2_checkpoint
    assert (ckpt / "weights" / ".metadata").is_file()
    assert (ckpt / "weights" / "metadata.json").is_file()
    assert (ckpt / "context" / "io.json").is_file()
    assert (ckpt / "context" / "model.yaml").is_file()


@pytest.mark.nemo
def test_read_nemo2_logits_equal_nemo(nemo2_checkpoint):
    ckpt, out = nemo2_checkpoint
    state, cfg = read_nemo2(ckpt)
    expected = Evo2Config.preset("tiny", **CONFIG).shape_dict()
    assert cfg.shape_dict() == expected
    assert cfg.max_seqlen == 4096
    model = Evo2Model(cfg, init=False).eval()
    model.load_state_dict(state)
    with torch.no_grad():
        ref = model(out["tokens"])
    assert ((out["logits"] - ref).abs().max() / ref.abs().max()).item() <= REL_TOL


@pytest.mark.nemo
def test_config_from_io_json_alone(nemo2_checkpoint, tmp_path):
    """Contexts without model.yaml: io.json plus NeMo's class defaults give the same config."""
    import shutil

    ckpt, _ = nemo2_checkpoint
    (tmp_path / "context").mkdir()
    shutil.copy(ckpt / "context" / "io.json", tmp_path / "context" / "io.json")
    assert read_nemo2_config(tmp_path) == read_nemo2_config(ckpt)


@pytest.mark.nemo
def test_explicit_config_and_errors(nemo2_checkpoint, tmp_path):
    ckpt, _ = nemo2_checkpoint
    cfg = Evo2Config.preset("tiny", **CONFIG)
    state, got = read_nemo2(ckpt, cfg)
    assert got is cfg
    with pytest.raises(ValueError, match="no place in"):  # a config with fewer layers than the weights
        read_nemo2(ckpt, Evo2Config.preset("tiny", **dict(CONFIG, pattern="SDH")))
    with pytest.raises(KeyError, match="lacks"):  # more layers than the weights
        read_nemo2(ckpt, Evo2Config.preset("tiny", **dict(CONFIG, pattern="SDH*S")))
    (tmp_path / "context").mkdir()
    with pytest.raises(ValueError, match="pass one explicitly"):
        read_nemo2_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a NeMo 2 checkpoint"):
        read_nemo2(tmp_path, cfg)


@pytest.mark.nemo
def test_reading_imports_neither_nemo_nor_megatron(nemo2_checkpoint):
    from test_parity import REPO

    code = ("import sys; from focus_nemo.evo2.nemo2 import read_nemo2; read_nemo2(sys.argv[1]); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('nemo', 'megatron', 'lightning')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code, str(nemo2_checkpoint[0])], cwd=REPO, check=True)


@pytest.mark.nemo
def test_metadata_unpickler_refuses_code(nemo2_checkpoint, tmp_path):
    """The DCP metadata pickle may only build checkpoint records; anything else is refused."""
    import os
    import pickle
    import shutil

    class Exploit:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    weights = tmp_path / "weights"
    shutil.copytree(nemo2_checkpoint[0] / "weights", weights)
    (weights / ".metadata").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        read_nemo2(tmp_path, Evo2Config.preset("tiny", **CONFIG))


# --------------------------------------------------------------------------- key mapping (no NeMo)
TE_NORM_NAMES = {  # local-spec norm name -> the Transformer Engine fused name
    "norm.weight": "mixer.dense_projection.layer_norm_weight",
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}


def _as_te_checkpoint(megatron: dict) -> dict:
    """Local-spec Megatron names -> what a TE-built NeMo model stores (fused norms, module., extra state)."""
    out = {}
    for key, value in megatron.items():
        head, _, tail = key.rpartition("layers.")
        index, _, name = tail.partition(".")
        if head and name in TE_NORM_NAMES:
            key = f"{head}layers.{index}.{TE_NORM_NAMES[name]}"
        if key.endswith("hyena_proj_conv.short_conv_weight"):
            value = value.unsqueeze(1)  # the non-fast-conv layout [3D, 1, 3]
        out["module." + key] = value
        if key.endswith(".weight") and "linear" in key:
            out["module." + key[: -len("weight")] + "_extra_state"] = None
    return out


@pytest.mark.parametrize("te_names", [False, True])
def test_megatron_mapping_roundtrip(te_names):
    from conftest import stressed_model

    model = stressed_model(pattern="SDH*HS**D", short_conv_bias=True, attn_out_bias=False, seed=2)
    cfg, state = model.config, model.state_dict()
    megatron = evo2_to_megatron(state, cfg)
    if te_names:
        megatron = _as_te_checkpoint(megatron)
    back = megatron_to_evo2(megatron, cfg)
    assert back.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(back[key], value, rtol=1e-6, atol=0, msg=key)


def test_megatron_qkv_layout_is_per_head():
    cfg = Evo2Config.preset("tiny")
    state = Evo2Model(cfg).state_dict()
    wqkv = state["blocks.3.attn.wqkv.weight"]
    rows = evo2_to_megatron(state, cfg)["decoder.layers.3.self_attention.linear_qkv.weight"]
    hd = cfg.head_dim
    for head in range(cfg.num_heads):
        for part in range(3):  # Megatron: [head0 q, head0 k, head0 v, head1 q, ...]
            got = rows[(3 * head + part) * hd: (3 * head + part + 1) * hd]
            want = wqkv[part * cfg.hidden_size + head * hd: part * cfg.hidden_size + (head + 1) * hd]
            assert torch.equal(got, want)


def test_megatron_mapping_errors():
    cfg = Evo2Config.preset("tiny")
    megatron = evo2_to_megatron(Evo2Model(cfg).state_dict(), cfg)
    broken = dict(megatron)
    del broken["decoder.layers.2.mixer.mixer.filter.R"]
    with pytest.raises(KeyError, match=r"decoder\.layers\.2\.mixer\.mixer\.filter\.R"):
        megatron_to_evo2(broken, cfg)
    wrong = dict(megatron, **{"decoder.layers.1.mixer.mixer.filter.h": torch.zeros(16, 64),
                              "decoder.layers.1.mixer.mixer.filter.decay": torch.ones(16, 64)})
    with pytest.raises(ValueError, match="blocks.1.mixer.filter.h"):
        megatron_to_evo2(wrong, cfg)
    untied = dict(megatron, **{"output_layer.weight": torch.zeros(512, 64)})
    with pytest.raises(ValueError, match="ties"):
        megatron_to_evo2(untied, cfg)


if __name__ == "__main__":
    # Megatron's checkpoint writer starts helper processes that re-import this module, hence the guard.
    _main()
