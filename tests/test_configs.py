"""Every shipped Hydra config composes and validates against the typed schema."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from focus_nemo.pretrain import PretrainConfig
from focus_nemo.train import TrainConfig, config_from_hydra

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("override", [f"{g}={o}" for g in ("model", "focus", "data", "trainer") for o in options(g)]
                         + [f"+experiment={o}" for o in options("experiment")])
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


def test_pretrain_config_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="pretrain_backbone")
    pc = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PretrainConfig), cfg))
    assert pc.train_range[1] <= pc.heldout_range[0]
