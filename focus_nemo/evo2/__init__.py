"""Single-device Evo-2 / StripedHyena 2 with exact streaming state (no NeMo/Megatron imports)."""

from focus_nemo.evo2.config import PRESETS, Evo2Config
from focus_nemo.evo2.model import Evo2Model, Evo2State, KVCache
from focus_nemo.evo2.tokenizer import decode, encode

__all__ = ["PRESETS", "Evo2Config", "Evo2Model", "Evo2State", "KVCache", "decode", "embedded_model_dir", "encode",
           "load_evo2"]

EMBEDDED_MODEL = "evo2_small_chr20"


def embedded_model_dir():
    """Directory of the shipped small Evo-2-architecture model pretrained on human chr20."""
    from importlib.resources import files
    from pathlib import Path

    return Path(str(files("focus_nemo") / "assets" / EMBEDDED_MODEL))


def load_evo2(path, **kwargs):
    """Load an Evo-2 checkpoint of any supported format (see `focus_nemo.evo2.checkpoint`)."""
    from focus_nemo.evo2.checkpoint import load_evo2 as _load

    return _load(path, **kwargs)
