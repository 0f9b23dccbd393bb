"""Load models: a base checkpoint plus (optionally) a trained FOCUS adapter, for inference, training and scoring.

Base checkpoints are named as in the model config group: ``embedded`` (the shipped small model),
``random:<preset>`` (random weights, for smoke tests and profiling), or a path in any format
`focus_nemo.evo2.load_evo2` reads, optionally with a ``config`` (a preset name or Arc's YAML, for
Arc files that do not record their rotary scaling). Adapters are directories written by `FocusModel.save_adapter`
(or the NeMo model's export); ``embedded`` names the adapter shipped for the embedded model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from focus_nemo.focus import FocusConfig, FocusModel

EMBEDDED_ADAPTER = "evo2_small_chr20_focus_local"  # multi-window training, exact local band (local = 1)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def embedded_adapter_dir() -> Path:
    """Directory of the FOCUS adapter shipped for the embedded model (W=1024, k in {25,50,100,200})."""
    from importlib.resources import files

    return Path(str(files("focus_nemo") / "assets" / EMBEDDED_ADAPTER))


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"dtype: {name!r} is not one of {sorted(DTYPES)}") from None


def resolve_checkpoint(checkpoint: str, preset: str = "tiny") -> tuple[str | None, Path | None]:
    """(preset name, None) for ``random`` (with `preset`) or ``random:<preset>``; (None, path) for
    ``embedded`` or an existing path.

    Raises:
        FileNotFoundError: the path does not exist (named as ``model.checkpoint``).
    """
    if checkpoint == "random" or checkpoint.startswith("random:"):
        return (checkpoint.split(":", 1)[1] if ":" in checkpoint else preset), None
    if checkpoint == "embedded":
        from focus_nemo.evo2 import embedded_model_dir

        return None, embedded_model_dir()
    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"model.checkpoint: {checkpoint} does not exist")
    return None, Path(checkpoint)


def load_base_model(checkpoint: str = "embedded", preset: str = "tiny", dtype: str = "float32",
                    device: str | torch.device = "cpu", config: str | None = None):
    """An Evo2Model from ``embedded``, ``random`` (with `preset`), ``random:<preset>`` or a path.

    `config` (a preset name, Arc's YAML or our config.json; None or "": the checkpoint's own) applies to a path.
    `dtype` follows the precision policy (`focus_nemo.evo2.model`: matmul weights in `dtype`, the Hyena poles,
    residues and medium filter taps fp32).
    """
    from focus_nemo.evo2 import Evo2Config, Evo2Model, load_evo2

    name, path = resolve_checkpoint(checkpoint, preset)
    if path is None:
        if config:
            raise ValueError(f"model.config: {config!r} applies to a checkpoint path, not to {checkpoint!r}")
        model = Evo2Model(Evo2Config.preset(name))
    else:
        model = load_evo2(path, config=config or None)
    return model.to(device=torch.device(device), dtype=parse_dtype(dtype)).eval()


def load_focus_model(checkpoint: str = "embedded", adapter: str | None = "embedded", dtype: str = "float32",
                     device: str | torch.device = "cpu", focus: FocusConfig | None = None,
                     config: str | None = None) -> FocusModel:
    """A FocusModel on `device`; the adapter's FocusConfig (k, W, scope) is used when one is given.

    `adapter=None` gives the untrained adapter (Focus projections copied from the base, D6) with
    `focus` (or the default FocusConfig).
    """
    base = load_base_model(checkpoint, dtype=dtype, device=device, config=config)
    fm = FocusModel(base, focus)
    if adapter is not None:
        fm.load_adapter(embedded_adapter_dir() if adapter == "embedded" else adapter)
    return fm.eval()
