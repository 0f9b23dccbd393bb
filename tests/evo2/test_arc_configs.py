"""Arc's model YAMLs (the evo2 package's evo2/configs/*.yml), the presets of every published Arc model, and
refusal where a vortex file does not determine its config."""

from __future__ import annotations

import pytest
import torch

from focus_nemo.evo2 import Evo2Config, Evo2Model
from focus_nemo.evo2.checkpoint import (
    CheckpointError,
    convert_vortex_state_dict,
    export_vortex,
    load_evo2,
    read_checkpoint,
    vortex_state_dict,
)

# The keys and values of Arc's YAMLs that differ between its published models; the rest (ARC_COMMON) is shared.
ARC_MODELS = {
    "1b-8k": dict(model_name="shc-evo2-1b-8k-2T-v2", hidden_size=1920, num_filters=1920,
                  attn_layer_idxs=[3, 10, 17, 24], hcl_layer_idxs=[2, 6, 9, 13, 16, 20, 23],
                  hcm_layer_idxs=[1, 5, 8, 12, 15, 19, 22], hcs_layer_idxs=[0, 4, 7, 11, 14, 18, 21],
                  hcl_filter_groups=1920, hcm_filter_groups=128, hcs_filter_groups=128, num_layers=25,
                  num_attention_heads=15, rotary_emb_base=10000, inner_mlp_size=5120, max_seqlen=8192),
    "7b-8k": dict(rotary_emb_base=10000, inner_mlp_size=11008, max_seqlen=32768),
    "7b-262k": dict(rotary_emb_base=10000, rotary_emb_scaling_factor=32, use_interpolated_rotary_pos_emb=True,
                    inner_mlp_size=11008, max_seqlen=262144),
    "7b-1m": dict(rotary_emb_base=10000, rotary_emb_scaling_factor=128, use_interpolated_rotary_pos_emb=True,
                  inner_mlp_size=11264, max_seqlen=1048576),
    "20b-1m": dict(model_name="shc-evo2-20b", hidden_size=8192, num_filters=8192,
                   hcl_layer_idxs=[2, 6, 9, 13, 16, 20, 23], hcm_layer_idxs=[1, 5, 8, 12, 15, 19, 22],
                   hcs_layer_idxs=[0, 4, 7, 11, 14, 18, 21], attn_layer_idxs=[3, 10, 17], hcl_filter_groups=8192,
                   hcm_filter_groups=512, hcs_filter_groups=512, num_layers=24, num_attention_heads=64,
                   rotary_emb_base=1000000, rotary_emb_scaling_factor=128, use_interpolated_rotary_pos_emb=True,
                   inner_size_multiple_of=128, inner_mlp_size=22528, max_seqlen=1048576),
    "40b-8k": dict(model_name="shc-evo2-40b-8k-11T-v2", hidden_size=8192, num_filters=8192,
                   hcl_layer_idxs=[2, 6, 9, 13, 16, 20, 23, 27, 30, 34, 38, 41, 45, 48],
                   hcm_layer_idxs=[1, 5, 8, 12, 15, 19, 22, 26, 29, 33, 37, 40, 44, 47],
                   hcs_layer_idxs=[0, 4, 7, 11, 14, 18, 21, 25, 28, 32, 36, 39, 43, 46],
                   attn_layer_idxs=[3, 10, 17, 24, 31, 35, 42, 49], hcl_filter_groups=8192, hcm_filter_groups=512,
                   hcs_filter_groups=512, num_layers=50, num_attention_heads=64, rotary_emb_base=1000000,
                   inner_size_multiple_of=128, inner_mlp_size=21888, max_seqlen=8192),
}
ARC_MODELS["40b-1m"] = dict(ARC_MODELS["40b-8k"], rotary_emb_scaling_factor=128, use_interpolated_rotary_pos_emb=True,
                            inner_mlp_size=22528, max_seqlen=1048576)
ARC_COMMON = dict(
    model_name="shc-evo2-7b-8k-2T-v2", vocab_size=512, hidden_size=4096, num_filters=4096,
    hcl_layer_idxs=[2, 6, 9, 13, 16, 20, 23, 27, 30], hcm_layer_idxs=[1, 5, 8, 12, 15, 19, 22, 26, 29],
    hcs_layer_idxs=[0, 4, 7, 11, 14, 18, 21, 25, 28], attn_layer_idxs=[3, 10, 17, 24, 31], hcm_filter_length=128,
    hcl_filter_groups=4096, hcm_filter_groups=256, hcs_filter_groups=256, hcs_filter_length=7, num_layers=32,
    short_filter_length=3, num_attention_heads=32, short_filter_bias=False, mlp_init_method="torch.nn.init.zeros_",
    mlp_output_init_method="torch.nn.init.zeros_", eps=0.000001, state_size=16, make_vocab_size_divisible_by=8,
    inner_size_multiple_of=16, log_intermediate_values=False, proj_groups=1, hyena_filter_groups=1,
    column_split_hyena=False, column_split=True, interleave=True, evo2_style_activations=True, model_parallel_size=1,
    pipe_parallel_size=1, tie_embeddings=True, mha_out_proj_bias=True, hyena_out_proj_bias=True,
    hyena_flip_x1x2=False, qkv_proj_bias=False, use_fp8_input_projections=True, max_batch_size=1, final_norm=True,
    use_flash_attn=True, use_flash_rmsnorm=False, use_flash_depthwise=False, use_flashfft=False,
    use_laughing_hyena=False, inference_mode=True, tokenizer_type="CharLevelTokenizer", prefill_style="fft",
    mlp_activation="gelu", print_activations=False,
)


def arc_yaml_text(doc: dict) -> str:
    """YAML in Arc's layout: one `key: value` line per key, lists in flow style."""
    def value(v):
        if isinstance(v, bool):
            return "True" if v else "False"
        if isinstance(v, list):
            return "[" + ",".join(str(i) for i in v) + "]"
        return str(v)

    return "".join(f"{k}: {value(v)}\n" for k, v in doc.items())


def write_arc_yaml(directory, name: str, **changes) -> str:
    path = directory / f"evo2-{name}.yml"
    path.write_text(arc_yaml_text({**ARC_COMMON, **ARC_MODELS[name], **changes}))
    return path


@pytest.mark.parametrize("name", sorted(ARC_MODELS))
def test_arc_yaml_gives_the_preset(tmp_path, name):
    cfg = Evo2Config.from_arc_yaml(write_arc_yaml(tmp_path, name))
    preset = Evo2Config.preset(name)
    assert cfg.name == f"evo2-{name}"
    assert cfg.shape_dict() == preset.shape_dict() and cfg.max_seqlen == preset.max_seqlen
    assert cfg.norm_form == "arc"
    with torch.device("meta"):
        Evo2Model(cfg, init=False)  # buildable


def test_rotary_scaling_and_inner_sizes_of_the_7b_models():
    assert Evo2Config.preset("7b-8k").rotary_scaling == 1.0
    p262k = Evo2Config.preset("7b-262k")
    assert p262k.rotary_scaling == 32.0 and p262k.ffn_hidden_size == 11008  # the 8k model's inner size
    assert Evo2Config.preset("7b-1m").rotary_scaling == 128.0 and Evo2Config.preset("7b-1m").ffn_hidden_size == 11264
    assert Evo2Config.preset("20b-1m").rotary_scaling == 128.0 and Evo2Config.preset("20b-1m").rotary_base == 1e6
    assert Evo2Config.preset("7b").name == "7b-1m"  # earlier names are aliases


def test_scaling_factor_without_interpolation_flag_is_not_applied(tmp_path):
    path = write_arc_yaml(tmp_path, "7b-262k", use_interpolated_rotary_pos_emb=False)
    assert Evo2Config.from_arc_yaml(path).rotary_scaling == 1.0  # as Arc's code: the factor is then unused


def test_unsupported_or_missing_keys_are_named(tmp_path):
    path = write_arc_yaml(tmp_path, "7b-8k", qkv_proj_bias=True, proj_groups=4)
    with pytest.raises(ValueError, match=r"evo2-7b-8k\.yml.*\n.*qkv_proj_bias: True|proj_groups") as info:
        Evo2Config.from_arc_yaml(path)
    assert "qkv_proj_bias" in str(info.value) and "proj_groups" in str(info.value)
    doc = {k: v for k, v in {**ARC_COMMON, **ARC_MODELS["7b-8k"]}.items() if k != "inner_mlp_size"}
    (tmp_path / "bad.yml").write_text(arc_yaml_text(doc))
    with pytest.raises(ValueError, match=r"bad\.yml: missing key\(s\) \['inner_mlp_size'\]"):
        load_evo2(tmp_path / "x.pt", config=tmp_path / "bad.yml")


def _meta_vortex(preset: str) -> dict:
    cfg = Evo2Config.preset(preset)
    with torch.device("meta"):
        state = Evo2Model(cfg, init=False).state_dict()
    return vortex_state_dict(state, cfg)


def test_vortex_7b_8k_shape_needs_a_config():
    """evo2_7b_262k.pt has the 8k model's shapes: without its YAML its rotary scaling is unknown."""
    vsd = _meta_vortex("7b-262k")
    with pytest.raises(CheckpointError, match=r"7b-8k .*scaling 1\).*7b-262k .*scaling 32\).*config="):
        convert_vortex_state_dict(vsd)
    _, cfg = convert_vortex_state_dict(vsd, config=Evo2Config.preset("7b-262k"))
    assert cfg.rotary_scaling == 32.0 and cfg.norm_form == "arc"


@pytest.mark.parametrize("preset", ["1b-8k", "7b-1m", "20b-1m", "40b-8k", "40b-1m"])
def test_vortex_shapes_of_a_single_published_model_give_its_config(preset):
    _, cfg = convert_vortex_state_dict(_meta_vortex(preset))
    want = Evo2Config.preset(preset)
    assert cfg.name == preset and cfg.shape_dict() == want.shape_dict() and cfg.rotary_scaling == want.rotary_scaling


def test_load_vortex_with_arc_yaml(tmp_path):
    """load_evo2(path, config=<Arc YAML>) takes the rotary scaling the file does not record."""
    cfg = Evo2Config.preset("tiny", norm_form="arc")
    model = Evo2Model(cfg).eval()
    (path,) = export_vortex(model, tmp_path / "evo2_tiny.pt")
    doc = {**ARC_COMMON, "model_name": "tiny", "hidden_size": 64, "num_filters": 64, "num_layers": 4,
           "hcs_layer_idxs": [0], "hcm_layer_idxs": [1], "hcl_layer_idxs": [2], "attn_layer_idxs": [3],
           "hcl_filter_groups": 64, "hcm_filter_groups": 16, "hcs_filter_groups": 16, "num_attention_heads": 4,
           "inner_mlp_size": 128, "rotary_emb_base": 10000, "rotary_emb_scaling_factor": 32,
           "use_interpolated_rotary_pos_emb": True, "max_seqlen": 262144}
    (tmp_path / "evo2-tiny-262k.yml").write_text(arc_yaml_text(doc))
    assert read_checkpoint(path)[1].rotary_scaling == 1.0  # shapes of the tiny preset
    loaded = load_evo2(path, config=tmp_path / "evo2-tiny-262k.yml")
    assert loaded.config.rotary_scaling == 32.0 and loaded.config.name == "evo2-tiny-262k"
    assert load_evo2(path, config="tiny").config.rotary_scaling == 1.0  # a preset name
    x = torch.randint(0, 512, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max().item() > 1e-4  # the scaling reaches the attention


def test_config_reaches_the_loaders(tmp_path):
    """model.config (Hydra) and --config (recipes) end in load_evo2's config argument."""
    from omegaconf import OmegaConf

    from focus_nemo.loading import load_base_model
    from focus_nemo.train import config_from_hydra

    cfg = config_from_hydra(OmegaConf.create({"model": {"checkpoint": "embedded", "config": "7b-262k"}}))
    assert cfg.model.config == "7b-262k"
    model = Evo2Model(Evo2Config.preset("tiny", norm_form="arc")).eval()
    (path,) = export_vortex(model, tmp_path / "m.pt")
    (tmp_path / "evo2-tiny.yml").write_text(arc_yaml_text({
        **ARC_COMMON, "hidden_size": 64, "num_filters": 64, "num_layers": 4, "hcs_layer_idxs": [0],
        "hcm_layer_idxs": [1], "hcl_layer_idxs": [2], "attn_layer_idxs": [3], "hcl_filter_groups": 64,
        "hcm_filter_groups": 16, "hcs_filter_groups": 16, "num_attention_heads": 4, "inner_mlp_size": 128,
        "rotary_emb_base": 10000, "rotary_emb_scaling_factor": 128, "use_interpolated_rotary_pos_emb": True,
        "max_seqlen": 1048576}))
    base = load_base_model(str(path), config=str(tmp_path / "evo2-tiny.yml"), dtype="bfloat16")
    assert base.config.rotary_scaling == 128.0 and base.embedding.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="applies to a checkpoint path"):
        load_base_model("random:tiny", config="7b-262k")
    with pytest.raises(ValueError, match="neither a preset"):
        load_base_model(str(path), config="no-such-model")
