"""Time and memory vs sequence length: FOCUS streaming vs full KV cache vs fixed-window truncation.

Usage:
    python recipes/profile_memory.py --lengths 1k,4k,16k,64k --budget 60          # CPU, embedded model
    python recipes/profile_memory.py --checkpoint random:7b --dtype bf16 --device cuda \\
        --lengths 1k,16k,256k,1M --out runs/profile_7b

Writes <out>/<name>.csv, .json, .md (a table to paste) and .png (log-log plot) and prints the fitted
time exponent of each method. See docs/profile.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from focus_nemo.profiling import (
    METHODS,
    ProfileConfig,
    ProfileResult,
    describe_sequence,
    machine,
    parse_length,
    parse_lengths,
    parse_methods,
    profile,
    write_outputs,
)


def _arg(parse):
    """An argparse type that reports the parser's own error message."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = parse.__name__
    return convert


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--lengths", type=_arg(parse_lengths), default="1k,4k,16k,64k,256k,1M",
                    help="comma-separated lengths; k = 1,024, M = 1,048,576")
    ap.add_argument("--methods", type=_arg(parse_methods), default=",".join(METHODS),
                    help="any of " + ",".join(METHODS))
    ap.add_argument("--checkpoint", default="embedded", help="embedded | random:<preset> | checkpoint path")
    ap.add_argument("--adapter", default=None,
                    help="adapter directory or 'embedded'; default: untrained Focus projections "
                         "(time and memory do not depend on the adapter's values)")
    ap.add_argument("--k", type=int, default=100, help="bases per Focus token")
    ap.add_argument("--window", type=int, default=1024, help="window W (FOCUS and truncation)")
    ap.add_argument("--chunk-size", type=int, default=None, help="bases per forward_chunk call (default: W)")
    ap.add_argument("--dtype", default="float32", help="float32 | bf16")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:<n>")
    ap.add_argument("--budget", type=float, default=600.0,
                    help="seconds per run; a length whose predicted time exceeds it is skipped")
    ap.add_argument("--fit-min-length", type=_arg(parse_length), default="16k",
                    help="fit exponents over lengths >= this (shorter ones are dominated by fixed costs)")
    ap.add_argument("--random", action="store_true", help="random A/C/G/T instead of the bundled chr20 DNA")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    ap.add_argument("--isolation", choices=("auto", "process", "none"), default="auto",
                    help="'process': each run in a fresh process (per-run peak RSS); 'none': one process, "
                         "model loaded once; 'auto': process on CPU, none on CUDA")
    ap.add_argument("--out", default="runs/profile", help="output folder")
    ap.add_argument("--name", default="profile", help="output file stem")
    return ap


def main(argv: list[str] | None = None) -> ProfileResult:
    args = build_parser().parse_args(argv)
    cfg = ProfileConfig(checkpoint=args.checkpoint, adapter=args.adapter, k=args.k, window=args.window,
                        chunk_size=args.chunk_size, dtype=args.dtype, device=args.device,
                        random_sequence=args.random, seed=args.seed, threads=args.threads)
    isolate = args.isolation == "process" or (args.isolation == "auto" and not cfg.is_cuda)
    info = machine(cfg.device)  # before the runs: the load average then is other work's
    sequence = describe_sequence(args.random, args.seed)
    print(f"sequence: {sequence}", flush=True)
    rows = profile(cfg, args.methods, args.lengths, budget=args.budget, isolate=isolate,
                   log=lambda line: print(line, flush=True))
    command = shlex.join(["python", "recipes/profile_memory.py", *(sys.argv[1:] if argv is None else argv)])
    result = ProfileResult(cfg, rows, budget=args.budget, fit_min_length=args.fit_min_length,
                           machine=info, sequence=sequence, command=command)
    paths = write_outputs(result, args.out, args.name)
    print(f"fitted time exponent (lengths >= {args.fit_min_length:,}):")
    for method, fit in result.fits().items():
        t = fit["time"]
        print(f"  {method:<10} " + (f"{t.exponent:.2f} over {len(t.lengths)} lengths" if t else "n/a (< 2 lengths)"))
    print("results: " + ", ".join(str(p) for p in paths.values()))
    return result


if __name__ == "__main__":
    main()
