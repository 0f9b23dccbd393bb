"""Convert an Evo-2 checkpoint into a NeMo 2 checkpoint directory or a focus_nemo safetensors directory.

Usage:
    python recipes/convert_checkpoint.py --input evo2_7b.pt --config 7b-1m --output evo2_7b_nemo2 --dtype bf16
    python recipes/convert_checkpoint.py --input evo2_7b_262k.pt --config evo2-7b-262k.yml --output evo2_7b_262k
    python recipes/convert_checkpoint.py --input evo2_7b_nemo2 --output evo2_7b --format safetensors

--input is any checkpoint `focus_nemo.evo2.checkpoint.load_evo2` reads: an Arc vortex ``.pt`` (also split into
``.pt.partN`` pieces), an Arc savanna ``.pt``, a NeMo 2 directory or a focus_nemo safetensors directory. Vortex
and savanna files do not record the rotary scaling, eps or activation scheme. --config gives them: a preset
name (1b-8k, 7b-8k, 7b-262k, 7b-1m, 20b-1m, 40b-8k, 40b-1m) or the model's YAML from Arc's evo2 package
(evo2/configs/evo2-7b-262k.yml). Without it the config of the published model with the file's shapes is used;
a file whose shapes match several published models is refused: the 262k-context 7B has the 8k 7B's shapes
(inner size 11008; the 1M-context 7B's is 11264) but rotary scaling 32, so it needs --config.

RMSNorm form: a NeMo 2 output is computed by NeMo with its own RMSNorm (x * rsqrt(mean(x^2) + eps)); converting
an Arc file (x / (rms + eps)) to NeMo 2 changes the logits slightly (a warning says so). A safetensors output
records the form of its input, and `load_evo2` reproduces it.

--format nemo2 writes ``weights/`` (Megatron torch_dist) and ``context/`` with NeMo's own checkpoint machinery
(`focus_nemo.nemo.convert.save_nemo2`, one process, tensor-parallel size 1); --format safetensors writes
``model.safetensors`` and ``config.json`` (`focus_nemo.evo2.checkpoint.save_evo2`).

--dtype keep stores the checkpoint's dtype (that of its embedding). In the safetensors format the precision
policy applies (the modal filter parameters and medium filter taps stay fp32 under bf16); a NeMo 2 checkpoint is
cast whole, as NeMo's importers do.

The output is written to ``<output>.tmp-<pid>`` and renamed into place when complete. An existing output is an
error unless --overwrite is given; it is then replaced only after the new one is complete.
"""

import argparse
import contextlib
import logging
import os
import shutil
import sys
from pathlib import Path

import torch

DTYPES = {"keep": None, "bf16": torch.bfloat16, "fp32": torch.float32}
log = logging.getLogger("convert_checkpoint")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, type=Path, help="the checkpoint to convert (file or directory)")
    p.add_argument("--output", required=True, type=Path, help="the directory to write")
    p.add_argument("--format", default="nemo2", choices=["nemo2", "safetensors"], help="output format")
    p.add_argument("--config", "--config-preset", dest="config",
                   help="config of the input: a preset name (e.g. 7b-262k) or Arc's YAML (evo2-7b-262k.yml); "
                        "default: read from the checkpoint or, for Arc files, the published model of its shapes")
    p.add_argument("--dtype", default="keep", choices=sorted(DTYPES), help="dtype of the written weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return p.parse_args(argv)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _write(args: argparse.Namespace, tmp: Path) -> str:
    """Write the converted checkpoint into `tmp`; returns a one-line description of it."""
    from focus_nemo.evo2.checkpoint import load_evo2, read_checkpoint, save_evo2
    from focus_nemo.evo2.config import Evo2Config

    config = Evo2Config.resolve(args.config)
    dtype = DTYPES[args.dtype]
    if args.format == "safetensors":
        model = load_evo2(args.input, config=config, dtype=dtype)
        save_evo2(model, tmp)
        cfg, stored = model.config, model.embedding.weight.dtype
    else:
        from focus_nemo.nemo.convert import save_nemo2

        state, cfg, fmt = read_checkpoint(args.input, config=config)
        log.info("read %s (%s format, %s)", args.input, fmt, cfg.name)
        stored = dtype or state["embedding.weight"].dtype
        save_nemo2(state, cfg, tmp, dtype=stored)
    return f"{cfg.name}, {cfg.num_layers} layers, hidden {cfg.hidden_size}, {str(stored).removeprefix('torch.')}"


def convert(args: argparse.Namespace) -> Path:
    """Run the conversion described by `args` (see `parse_args`); returns the output directory."""
    output = args.output
    if (output.exists() or output.is_symlink()) and not args.overwrite:
        raise FileExistsError(f"{output} already exists (pass --overwrite to replace it)")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f"{output.name}.tmp-{os.getpid()}")
    old = output.with_name(f"{output.name}.old-{os.getpid()}")
    for stale in (tmp, old):  # left by an earlier run that was killed
        _remove(stale)
    try:
        described = _write(args, tmp)
        replacing = output.exists() or output.is_symlink()
        if replacing:
            os.replace(output, old)  # a directory cannot be renamed over a non-empty one
        try:
            os.replace(tmp, output)
        except OSError:
            if replacing:
                os.replace(old, output)
            raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            _remove(tmp)
    with contextlib.suppress(FileNotFoundError):
        _remove(old)
    log.info("wrote %s (%s format: %s)", output, args.format, described)
    return output


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        convert(args)
    except (ValueError, KeyError, OSError) as e:  # CheckpointError is a ValueError; the message names the file
        raise SystemExit(f"error: {e}") from None
    print(args.output)


if __name__ == "__main__":
    # Megatron's checkpoint writer starts helper processes that re-import this module, hence the guard.
    sys.exit(main())
