"""Time and memory vs sequence length: FOCUS streaming (with and without a horizon) vs full KV cache vs
fixed-window truncation.

Usage:
    python recipes/profile_memory.py --lengths 1k,4k,16k,64k --budget 60          # CPU, embedded model
    python recipes/profile_memory.py --checkpoint random:tiny --horizon 256k --methods focus_h,focus,truncation \
        --lengths 512k,1M,2M,4M,8M --max-length focus=2M,truncation=2M --threads 1
    python recipes/profile_memory.py --checkpoint random:7b --dtype bf16 --device cuda \\
        --lengths 1k,16k,256k,1M --out runs/profile_7b

Writes <out>/<name>.csv, .json, .md (a table to paste) and .png (log-log plot) and prints the fitted
time exponent of each method. See docs/profile.md.
"""

import shlex
import sys

from focus_nemo import cli
from focus_nemo.profiling import (
    ProfileResult,
    add_arguments,
    config_from_args,
    describe_sequence,
    fit_lines,
    machine,
    profile,
    write_outputs,
)


def main(argv: list[str] | None = None) -> ProfileResult:
    p = cli.parser(__doc__)
    add_arguments(p)
    a = p.parse_args(argv)
    cfg = config_from_args(a)
    info = machine(cfg.device)  # before the runs: the load average then is other work's
    sequence = describe_sequence(a.random, a.seed)
    print(f"sequence: {sequence}", flush=True)
    rows = profile(cfg, a.methods, a.lengths, budget=a.budget, log=lambda line: print(line, flush=True),
                   max_lengths=a.max_length,
                   isolate=a.isolation == "process" or (a.isolation == "auto" and not cfg.is_cuda))
    command = shlex.join(["python", "recipes/profile_memory.py", *(sys.argv[1:] if argv is None else argv)])
    result = ProfileResult(cfg, rows, budget=a.budget, fit_min_length=a.fit_min_length, machine=info,
                           sequence=sequence, command=command)
    paths = write_outputs(result, a.out, a.name)
    print("\n".join(fit_lines(result) + ["results: " + ", ".join(str(p) for p in paths.values())]))
    return result


if __name__ == "__main__":
    main()
