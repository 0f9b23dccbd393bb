"""Checkpoints written by NeMo's Transformer Engine Hyena spec load into the local-spec model that
this package builds on every device (TE installed or not), and into the single-device Evo2Model.

NeMo's TE spec fuses each RMSNorm into the next linear layer (``TELayerNormColumnParallelLinear``:
``...linear_qkv.layer_norm_weight``, ``...dense_projection.layer_norm_weight``,
``...linear_fc1.layer_norm_weight``; the norm modules are IdentityOp), stores TE's FP8 metadata as
``_extra_state`` and NeMo prefixes ``module.``. The renaming below is written out here from NeMo's
Savanna importer (``PyTorchHyenaImporter.convert_state``, use_te True vs False), independently of the
loader under test.

This file is also the worker (``python tests/nemo/test_te_checkpoint.py OUT``): Megatron keeps global
parallel state per process.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.nemo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PATTERN = "SDH*SD*"
SEQ_LEN = 300  # > 127: NeMo's medium filter is causal from 127 tokens on
# local-spec leaf name -> NeMo TE spec leaf name, per layer kind
TE_RENAME = {
    "hyena": {"norm.weight": "mixer.dense_projection.layer_norm_weight",
              "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight"},
    "attention": {"input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
                  "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight"},
}
# Modules that are TE modules in the TE spec, each with an ``_extra_state`` entry.
TE_MODULES = {"hyena": ["mixer.dense_projection", "mixer.dense", "mlp.linear_fc1", "mlp.linear_fc2"],
              "attention": ["self_attention.linear_qkv", "self_attention.core_attention",
                            "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2"]}


def te_checkpoint(local: dict, pattern: str) -> dict:
    """A local-spec state dict as NeMo's TE spec stores the same model."""
    out = {}
    for key, value in local.items():
        if key.endswith("_extra_state"):
            continue
        if key.startswith("decoder.layers."):
            index, leaf = key[len("decoder.layers."):].split(".", 1)
            kind = "attention" if pattern[int(index)] == "*" else "hyena"
            key = f"decoder.layers.{index}.{TE_RENAME[kind].get(leaf, leaf)}"
        out["module." + key] = value
    for i, symbol in enumerate(pattern):
        for module in TE_MODULES["attention" if symbol == "*" else "hyena"]:
            out[f"module.decoder.layers.{i}.{module}._extra_state"] = io.BytesIO(b"fp8 metadata")
    return out


def acgt_tokens(batch: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([65, 67, 71, 84])[torch.randint(0, 4, (batch, length), generator=g)]


# --------------------------------------------------------------------------- worker side
def _worker(out_path: str) -> None:
    from focus_nemo.evo2 import Evo2Config
    from focus_nemo.focus import FocusConfig
    from focus_nemo.nemo import build
    from focus_nemo.nemo.lightning import FocusHyenaConfig

    cfg = Evo2Config.preset("tiny", pattern=PATTERN)
    build.init_model_parallel(seed=0)
    source = build.build_hyena_model(cfg, seq_length=1024)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # every norm its own scale, so that a swapped norm shows in the logits
        for name, p in source.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=g))
    tokens = acgt_tokens(2, SEQ_LEN, seed=1)
    te = te_checkpoint(source.state_dict(), cfg.pattern)

    target = build.build_hyena_model(cfg, seq_length=1024)
    with torch.no_grad():
        for p in target.parameters():
            p.fill_(float("nan"))  # anything the loader leaves out poisons the logits
    build.load_megatron_weights(target, te)

    errors = []
    for broken in ({k: v for k, v in te.items() if not k.endswith("linear_qkv.layer_norm_weight")},
                   {**te, "module.decoder.layers.3.input_layernorm.weight": torch.ones(cfg.hidden_size)}):
        try:
            build.load_megatron_weights(target, broken)
        except (KeyError, ValueError) as e:
            errors.append(str(e))

    # The FOCUS config builds the local spec whatever use_te says (NeMo's HyenaConfig default is True).
    focus_cfg = FocusHyenaConfig.from_evo2(cfg, FocusConfig(k=16, window=128), use_te=True, seq_length=1024)
    fm = focus_cfg.configure_model().focus_model
    torch.save({"te": {k: v for k, v in te.items() if isinstance(v, torch.Tensor)},
                "source": build.forward_logits(source, tokens, cfg.vocab_size),
                "loaded": build.forward_logits(target, tokens, cfg.vocab_size), "tokens": tokens,
                "errors": errors, "focus_names": sorted(fm.base.state_dict())}, out_path)
    build.teardown()


# --------------------------------------------------------------------------- test side
def test_te_spec_checkpoint_loads_into_local_spec_and_evo2(tmp_path):
    from conftest import require_nemo, run_worker

    from focus_nemo.evo2 import Evo2Config, Evo2Model
    from focus_nemo.evo2.nemo2 import megatron_to_evo2

    require_nemo()
    run_worker(__file__, str(tmp_path / "out.pt"))
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    te = out["te"]
    assert any(k.endswith("linear_qkv.layer_norm_weight") for k in te)
    assert not any(k.endswith(("input_layernorm.weight", ".norm.weight", "pre_mlp_layernorm.weight")) for k in te)

    def rel(a, b):
        return float((a - b).abs().max() / b.abs().max())

    assert torch.isfinite(out["loaded"]).all()
    assert rel(out["loaded"], out["source"]) <= 1e-6
    cfg = Evo2Config.preset("tiny", pattern=PATTERN)
    evo2 = Evo2Model(cfg).eval()
    evo2.load_state_dict(megatron_to_evo2(te, cfg))
    with torch.no_grad():
        ref = evo2(out["tokens"])
    assert rel(out["loaded"], ref) <= 1e-5

    missing, extra = out["errors"]
    assert "decoder.layers.3.input_layernorm.weight" in missing
    assert "decoder.layers.3.input_layernorm.weight" in extra and "same parameter" in extra
    names = out["focus_names"]
    assert "decoder.layers.0.norm.weight" in names and "decoder.layers.3.input_layernorm.weight" in names
    assert not any("layer_norm_weight" in n for n in names)


if __name__ == "__main__":
    _worker(sys.argv[1])
