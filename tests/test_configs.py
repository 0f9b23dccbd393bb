"""Every shipped Hydra config composes and validates against the typed schema."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from focus_nemo.pretraining import PretrainConfig
from focus_nemo.train import TrainConfig, config_from_hydra

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


TRAIN_EXPERIMENTS = [o for o in options("experiment") if not o.endswith("_eval")]
EVAL_EXPERIMENTS = [o for o in options("experiment") if o.endswith("_eval")]


@pytest.mark.parametrize("override", [f"{g}={o}" for g in ("model", "focus", "data", "trainer") for o in options(g)]
                         + [f"+experiment={o}" for o in TRAIN_EXPERIMENTS])
def test_train_config_composes(override):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train_focus", overrides=[override, "run_dir=/tmp/x"])
    tc = config_from_hydra(cfg)
    assert isinstance(tc, TrainConfig)
    assert 1 <= tc.focus.k <= tc.focus.window


def test_bad_values_name_the_field():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train_focus", overrides=["focus.k=0", "run_dir=/tmp/x"])
    with pytest.raises(ValueError, match="FocusConfig.k"):
        config_from_hydra(cfg)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(Exception, match="kk"):
            compose(config_name="train_focus", overrides=["focus.kk=3"])


def test_focus_horizon_from_the_command_line():
    for value, want in (("auto", "auto"), ("65536", 65536), ("null", None)):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train_focus", overrides=[f"focus.horizon={value}", "run_dir=/tmp/x"])
        assert config_from_hydra(cfg).focus.horizon == want
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train_focus", overrides=["focus.horizon=1000", "run_dir=/tmp/x"])
    with pytest.raises(ValueError, match="FocusConfig.horizon: 1000 is not a multiple of the window 1024"):
        config_from_hydra(cfg)


def test_focus_local_from_the_command_line():
    for value, want in (("1", 1), ("0", 0)):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train_focus", overrides=[f"focus.local={value}", "run_dir=/tmp/x"])
        assert config_from_hydra(cfg).focus.local == want
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train_focus", overrides=["focus.local=-1", "run_dir=/tmp/x"])
    with pytest.raises(ValueError, match="FocusConfig.local: must be an integer >= 0"):
        config_from_hydra(cfg)


def test_focus_level2_from_the_command_line():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train_focus", overrides=["focus.horizon=2048", "focus.level2=11",
                                                              "focus.level2_pool=mean", "run_dir=/tmp/x"])
    focus = config_from_hydra(cfg).focus
    assert (focus.horizon, focus.level2, focus.level2_pool) == (2048, 11, "mean")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train_focus", overrides=["focus.level2=11", "run_dir=/tmp/x"])
    with pytest.raises(ValueError, match="FocusConfig.level2: 11 needs a horizon"):
        config_from_hydra(cfg)


def test_pretrain_config_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="pretrain_backbone")
    pc = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PretrainConfig), cfg))
    assert pc.train_range[1] <= pc.heldout_range[0]


@pytest.mark.parametrize("experiment", EVAL_EXPERIMENTS)
def test_evaluation_experiments_compose(experiment):
    from focus_nemo.evaluate import EvalConfig
    from focus_nemo.evaluate import config_from_hydra as eval_config_from_hydra

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="evaluate_focus", overrides=[f"+experiment={experiment}"])
    ec = eval_config_from_hydra(cfg)
    assert isinstance(ec, EvalConfig) and ec.sources and all(s.regions for s in ec.sources)


def test_evaluate_config_composes():
    from focus_nemo.evaluate import config_from_hydra as eval_config_from_hydra

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        ec = eval_config_from_hydra(compose(config_name="evaluate_focus"))
    assert ec.adapter == "embedded" and ec.ks == [25, 50, 100, 200]
