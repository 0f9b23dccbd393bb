"""Checkpoint conversion: any Evo-2 checkpoint into a NeMo 2 directory or our safetensors directory
(`convert_checkpoint`, what ``recipes/convert_checkpoint.py`` calls).

The input is any checkpoint `focus_nemo.evo2.checkpoint.load_evo2` reads: an Arc vortex ``.pt`` (also split into
``.pt.partN`` pieces), an Arc savanna ``.pt``, a NeMo 2 directory or a focus_nemo safetensors directory. Vortex
and savanna files do not record the rotary scaling, eps or activation scheme. ``config`` gives them: a preset
name (1b-8k, 7b-8k, 7b-262k, 7b-1m, 20b-1m, 40b-8k, 40b-1m) or the model's YAML from Arc's evo2 package
(evo2/configs/evo2-7b-262k.yml). Without it the config of the published model with the file's shapes is used;
a file whose shapes match several published models is refused: the 262k-context 7B has the 8k 7B's shapes
(inner size 11008; the 1M-context 7B's is 11264) but rotary scaling 32, so it needs ``config``.

RMSNorm form: a NeMo 2 output is computed by NeMo with its own RMSNorm (x * rsqrt(mean(x^2) + eps)); converting
an Arc file (x / (rms + eps)) to NeMo 2 changes the logits slightly (a warning says so). A safetensors output
records the form of its input, and `load_evo2` reproduces it.

Format ``nemo2`` writes ``weights/`` (Megatron torch_dist) and ``context/`` with NeMo's own checkpoint machinery
(`focus_nemo.nemo.convert.save_nemo2`, one process, tensor-parallel size 1); format ``safetensors`` writes
``model.safetensors`` and ``config.json`` (`focus_nemo.evo2.checkpoint.save_evo2`).

Dtype ``keep`` stores the checkpoint's dtype (that of its embedding). In the safetensors format the precision
policy applies (the modal filter parameters and medium filter taps stay fp32 under bf16); a NeMo 2 checkpoint is
cast whole, as NeMo's importers do.

The output is written to ``<output>.tmp-<pid>`` and renamed into place when complete (`focus_nemo.durable`). An
existing output is an error unless ``overwrite`` is given; it is then replaced only after the new one is complete.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from focus_nemo.durable import durable_write_dir

DTYPES = {"keep": None, "bf16": torch.bfloat16, "fp32": torch.float32}
FORMATS = ("nemo2", "safetensors")
log = logging.getLogger(__name__)


def _write(source: Path, tmp: Path, fmt: str, config: str | None, dtype: str) -> str:
    """Write the converted checkpoint into `tmp`; returns a one-line description of it."""
    from focus_nemo.evo2.checkpoint import load_evo2, read_checkpoint, save_evo2
    from focus_nemo.evo2.config import Evo2Config

    config = Evo2Config.resolve(config)
    dtype = DTYPES[dtype]
    if fmt == "safetensors":
        model = load_evo2(source, config=config, dtype=dtype)
        save_evo2(model, tmp)
        cfg, stored = model.config, model.embedding.weight.dtype
    else:
        from focus_nemo.nemo.convert import save_nemo2

        state, cfg, found = read_checkpoint(source, config=config)
        log.info("read %s (%s format, %s)", source, found, cfg.name)
        stored = dtype or state["embedding.weight"].dtype
        save_nemo2(state, cfg, tmp, dtype=stored)
    return f"{cfg.name}, {cfg.num_layers} layers, hidden {cfg.hidden_size}, {str(stored).removeprefix('torch.')}"


def convert_checkpoint(source: str | Path, output: str | Path, fmt: str = "nemo2", config: str | None = None,
                       dtype: str = "keep", overwrite: bool = False) -> Path:
    """Convert the checkpoint `source` (any format `focus_nemo.evo2.load_evo2` reads) into the directory
    `output` in format `fmt` (``nemo2`` or ``safetensors``), with weights in `dtype` (a key of `DTYPES`);
    `config` is what the source does not record (a preset name or Arc's YAML). Returns the output directory.

    Raises:
        FileExistsError: `output` exists and `overwrite` is false.
    """
    source, output = Path(source), Path(output)
    if fmt not in FORMATS:
        raise ValueError(f"format: {fmt!r} is not one of {FORMATS}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype: {dtype!r} is not one of {sorted(DTYPES)}")
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise FileExistsError(f"{output} already exists (pass --overwrite to replace it)")
    described = durable_write_dir(output, lambda tmp: _write(source, tmp, fmt, config, dtype))
    log.info("wrote %s (%s format: %s)", output, fmt, described)
    return output
