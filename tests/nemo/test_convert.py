"""recipes/convert_checkpoint.py: Evo-2 checkpoints to NeMo 2 and safetensors directories.

The NeMo 2 conversion runs the recipe as a script in a fresh process (NeMo's import is slow and
Megatron's parallel state is per process); the result is read back with `read_nemo2` alone. The
safetensors conversions and the error cases need no NeMo and call the recipe's `main` in-process.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from focus_nemo.evo2 import Evo2Config, Evo2Model
from focus_nemo.evo2.checkpoint import export_vortex, load_evo2, read_checkpoint, vortex_yaml_path
from focus_nemo.evo2.nemo2 import read_nemo2

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "convert_checkpoint.py"
SEQ_LEN = 300  # NeMo's medium filter is a causal convolution only from 127 tokens on
REL_TOL = 1e-5


def _load_recipe():
    spec = importlib.util.spec_from_file_location("convert_checkpoint", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recipe = _load_recipe()


def run_recipe(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, str(RECIPE), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-30)).item()


def assert_same_weights(got: dict, want: dict, rel: float) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key].shape == value.shape, key
        assert rel_diff(got[key], value) <= rel, key


def logits(model: Evo2Model) -> torch.Tensor:
    from conftest import dna_tokens

    with torch.no_grad():
        return model.eval()(dna_tokens(2, SEQ_LEN, seed=5))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(tiny model with strong filters, its vortex checkpoint split into .partN pieces)."""
    from conftest import stressed_model

    model = stressed_model(seed=4)
    path = tmp_path_factory.mktemp("vortex") / "evo2_tiny.pt"
    assert len(export_vortex(model, path, part_size=100_000)) > 1
    assert not path.exists()
    return model, path


@pytest.fixture(scope="module")
def nemo2_output(source, tmp_path_factory):
    """The vortex checkpoint converted to NeMo 2 by the recipe, run as a script."""
    # Only looked up, not imported: importing NeMo here would cost as much as the conversion.
    missing = [name for name in ("nemo", "megatron.core") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"NeMo / Megatron Core not installed ({missing})")
    out = tmp_path_factory.mktemp("nemo2") / "evo2_tiny_nemo2"
    proc = run_recipe("--input", str(source[1]), "--output", str(out), "--format", "nemo2")
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out


@pytest.mark.nemo
def test_nemo2_from_vortex_reads_back_equal(source, nemo2_output):
    model, _ = source
    assert (nemo2_output / "weights" / ".metadata").is_file()
    assert (nemo2_output / "context" / "io.json").is_file()
    assert (nemo2_output / "context" / "model.yaml").is_file()
    assert [p.name for p in nemo2_output.parent.iterdir()] == [nemo2_output.name]  # no temporary left

    state, cfg = read_nemo2(nemo2_output)
    assert cfg.shape_dict() == model.config.shape_dict()
    assert cfg.max_seqlen == model.config.max_seqlen
    assert_same_weights(state, model.state_dict(), REL_TOL)
    back = Evo2Model(cfg, init=False)
    back.load_state_dict(state)
    ref = logits(model)
    assert rel_diff(logits(back), ref) <= REL_TOL
    # The comparison can fail: the long filter alone moves the logits far beyond the tolerance.
    state["blocks.2.mixer.filter.residues"] = state["blocks.2.mixer.filter.residues"] * 0.9
    back.load_state_dict(state)
    assert rel_diff(logits(back), ref) > 100 * REL_TOL


@pytest.mark.nemo
def test_nemo2_to_safetensors(source, nemo2_output, tmp_path):
    """A NeMo 2 directory is also an input: back to safetensors, same weights."""
    out = tmp_path / "st"
    recipe.main(["--input", str(nemo2_output), "--output", str(out), "--format", "safetensors"])
    assert_same_weights(load_evo2(out).state_dict(), source[0].state_dict(), REL_TOL)


def test_safetensors_round_trip(source, tmp_path):
    model, vortex = source
    first, second = tmp_path / "a", tmp_path / "b"
    # The YAML export_vortex wrote records the model's RMSNorm form (a vortex file alone is read in Arc's).
    recipe.main(["--input", str(vortex), "--output", str(first), "--format", "safetensors",
                 "--config", str(vortex_yaml_path(vortex))])
    recipe.main(["--input", str(first), "--output", str(second), "--format", "safetensors"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary left
    for out in (first, second):
        state, cfg, fmt = read_checkpoint(out)
        assert fmt == "ours" and cfg.shape_dict() == model.config.shape_dict()
        assert_same_weights(state, model.state_dict(), 0.0)


def test_dtype_and_config_preset(source, tmp_path):
    model, vortex = source
    recipe.main(["--input", str(vortex), "--output", str(tmp_path / "bf16"), "--format", "safetensors",
                 "--dtype", "bf16", "--config-preset", "tiny"])
    state, cfg, _ = read_checkpoint(tmp_path / "bf16")
    # the preset, not a config inferred from the shapes; the preset does not choose the RMSNorm form, so the
    # vortex file's own (Arc's) is kept
    assert cfg == Evo2Config.preset("tiny", norm_form="arc")
    assert state["embedding.weight"].dtype == torch.bfloat16
    assert state["blocks.2.mixer.filter.log_poles"].dtype == torch.float32  # kept fp32, as load_evo2 does
    assert_same_weights(state, model.state_dict(), 2 ** -8)

    recipe.main(["--input", str(tmp_path / "bf16"), "--output", str(tmp_path / "fp32"), "--format", "safetensors",
                 "--dtype", "fp32"])
    assert {t.dtype for t in read_checkpoint(tmp_path / "fp32")[0].values()} == {torch.float32}

    assert read_checkpoint(vortex)[1].extra.get("inferred")
    with pytest.raises(SystemExit, match="head_dim 32"):  # the small preset, which the weights do not fit
        recipe.main(["--input", str(vortex), "--output", str(tmp_path / "x"), "--format", "safetensors",
                     "--config-preset", "small"])
    assert not (tmp_path / "x").exists()


def test_existing_output_needs_overwrite(source, tmp_path):
    _, vortex = source
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    # As a script: a non-zero exit naming the output, before anything is read or written.
    proc = run_recipe("--input", str(vortex), "--output", str(out))
    assert proc.returncode != 0
    assert str(out) in proc.stderr and "--overwrite" in proc.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    recipe.main(["--input", str(vortex), "--output", str(out), "--format", "safetensors", "--overwrite"])
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old output and the temporary are gone


def test_unreadable_input_names_the_file(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    for fmt in ("safetensors", "nemo2"):
        with pytest.raises(SystemExit, match=re.escape(str(bad))):
            recipe.main(["--input", str(bad), "--output", str(tmp_path / "out"), "--format", fmt])
    with pytest.raises(SystemExit, match=re.escape(str(tmp_path / "missing.pt"))):
        recipe.main(["--input", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "out")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pt"]  # nothing written, no temporary left


def test_save_nemo2_refuses_bad_arguments(tmp_path):
    """Arguments NeMo cannot take are refused up front, without touching the target."""
    from focus_nemo.nemo.convert import save_nemo2

    cfg = Evo2Config.preset("tiny")
    state = Evo2Model(cfg).state_dict()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError, match="full"):
        save_nemo2(state, cfg, tmp_path / "full")
    other = Evo2Config.preset("tiny", hcm_filter_length=64)
    with pytest.raises(ValueError, match="hcm_filter_length"):
        save_nemo2(Evo2Model(other).state_dict(), other, tmp_path / "new")
    with pytest.raises(ValueError, match="floating point"):
        save_nemo2(state, cfg, tmp_path / "new", dtype=torch.int32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
