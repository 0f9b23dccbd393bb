"""Convert an Evo-2 checkpoint into a NeMo 2 checkpoint directory or a focus_nemo safetensors directory.

Usage:
    python recipes/convert_checkpoint.py --input evo2_7b.pt --config 7b-1m --output evo2_7b_nemo2 --dtype bf16
    python recipes/convert_checkpoint.py --input evo2_7b_262k.pt --config evo2-7b-262k.yml --output evo2_7b_262k
    python recipes/convert_checkpoint.py --input evo2_7b_nemo2 --output evo2_7b --format safetensors

--input is any checkpoint focus_nemo.evo2.load_evo2 reads: an Arc vortex .pt (also split into .pt.partN
pieces), an Arc savanna .pt, a NeMo 2 directory or a focus_nemo safetensors directory. Arc's files do not
record the rotary scaling, eps or activation scheme: --config gives them (a preset name such as 7b-262k, or
the model's YAML from Arc's evo2 package); without it the published model of the file's shapes is used, and
a file whose shapes match several (the 262k-context 7B has the 8k 7B's) is refused. Converting an Arc file
to NeMo 2 changes the RMSNorm form (a warning says so). The output is written beside its place and renamed
into it when complete; an existing output is replaced only with --overwrite. Details: focus_nemo.conversion.
"""

import sys
from pathlib import Path

from focus_nemo import cli
from focus_nemo.conversion import DTYPES, FORMATS, convert_checkpoint


def main(argv=None) -> None:
    p = cli.parser(__doc__)
    p.add_argument("--input", required=True, type=Path, help="the checkpoint to convert (file or directory)")
    p.add_argument("--output", required=True, type=Path, help="the directory to write")
    p.add_argument("--format", default="nemo2", choices=FORMATS, help="output format")
    p.add_argument("--config", "--config-preset", dest="config",
                   help="config of the input: a preset name (e.g. 7b-262k) or Arc's YAML (evo2-7b-262k.yml); "
                        "default: read from the checkpoint or, for Arc files, the published model of its shapes")
    p.add_argument("--dtype", default="keep", choices=sorted(DTYPES), help="dtype of the written weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    a = p.parse_args(argv)
    # CheckpointError is a ValueError; the message names the file
    cli.run(lambda: convert_checkpoint(a.input, a.output, a.format, a.config, a.dtype, a.overwrite))
    print(a.output)


if __name__ == "__main__":
    # Megatron's checkpoint writer starts helper processes that re-import this module, hence the guard.
    sys.exit(main())
