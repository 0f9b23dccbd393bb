"""Does a model use long context? Held-out human chr20 scored under full and truncated contexts.

Usage:
    python benchmarks/long_context.py                                  # the embedded model, 16 x 16 kb
    python benchmarks/long_context.py --models focus_nemo/assets/evo2_small_chr20 \\
        focus_nemo/assets/evo2_small_chr20_long --sequences 16 --length 16384 --threads 1

For each model (any checkpoint load_evo2 reads) and the same seeded held-out sequences (GRCh37 chr20
[40,000,000, 63,025,520), never trained on) it reports, as mean +- standard error over sequences
(`focus_nemo.pretraining.long_context_evidence`): bits/base at full context; the cost in nats/base, after
the first window, of running each 1,024-base window alone (plain truncation) and of limiting attention
to the current window while Hyena reads everything (attention-only truncation); and bits/base of the
same bases scored in 4,096-base pieces. Writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import machine, write_results

CHR20 = Path(__file__).resolve().parents[2] / "shared" / "data" / "human" / "grch37_chr20.fa.gz"
ROWS = [
    ("full_bits", "bits/base, full context (all positions)", 4),
    ("full_bits_after_first_window", "bits/base, full context (after the first window)", 4),
    ("windows_alone_cost_nats", "plain truncation cost (each window alone), nats/base", 5),
    ("attention_window_cost_nats", "attention-only truncation cost (attention = current window), nats/base", 5),
    ("short_bits", "bits/base, same bases in {short}-base pieces", 4),
    ("short_minus_full_bits", "{short}-base pieces minus full context, bits/base", 5),
    ("last_short_full_bits", "last {short} bases: bits/base at {length} bases of context", 4),
    ("last_short_short_bits", "last {short} bases: bits/base at {short} bases of context", 4),
    ("last_short_short_minus_full_bits", "last {short} bases: {short} minus {length} context, bits/base", 5),
]


def model_label(path: str) -> str:
    """A model's name in the results: its path relative to the repository when inside it."""
    p, root = Path(path).resolve(), Path(__file__).resolve().parents[1]
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def main() -> None:
    import torch

    from focus_nemo.evo2 import embedded_model_dir, load_evo2
    from focus_nemo.pretraining import PretrainConfig, heldout_sequences, long_context_evidence

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[str(embedded_model_dir())])
    ap.add_argument("--fasta", default=str(CHR20))
    ap.add_argument("--sequences", type=int, default=16)
    ap.add_argument("--length", type=int, default=16384)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--short", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="long_context", help="results file name under benchmarks/results")
    ap.add_argument("--merge", nargs="*", default=[],
                    help="results .json files of earlier runs with the same sequences to show beside these models")
    args = ap.parse_args()
    if not Path(args.fasta).is_file():
        raise SystemExit(f"{args.fasta}: not found (GRCh37 chr20, see ../shared/data/README.md); pass --fasta")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PretrainConfig(fasta=args.fasta)
    seqs = heldout_sequences(cfg, args.sequences, args.length, args.seed)
    results = {}
    same = ("fasta", "sequences", "length", "window", "short", "seed")
    for earlier in args.merge:
        old = json.loads(Path(earlier).read_text())
        differ = [k for k in same if old.get(k) != getattr(args, k)]
        if differ:
            raise SystemExit(f"{earlier}: other settings ({', '.join(f'{k}={old.get(k)!r}' for k in differ)}), "
                             "its sequences are not these")
        results.update({model_label(k): v for k, v in old["results"].items()})
    for path in args.models:
        t = time.time()
        res = long_context_evidence(load_evo2(path, dtype=torch.float32), seqs, args.window, args.short)
        res["seconds"] = round(time.time() - t, 1)
        results[model_label(path)] = res
        print(path, {k: res[k] for k in ("full_bits", "windows_alone_cost_nats", "attention_window_cost_nats",
                                         "short_minus_full_bits")}, flush=True)
    payload = {"machine": machine(), "fasta": args.fasta, "heldout_range": list(cfg.heldout_range),
               "sequences": args.sequences, "length": args.length, "window": args.window, "short": args.short,
               "seed": args.seed, "threads": args.threads, "results": results}
    names = [Path(p).name for p in results]
    lines = [f"# Long-context use on held-out chr20 ({args.sequences} sequences of {args.length} bases, seed "
             f"{args.seed}, window {args.window})", "", "mean +- standard error over sequences", "",
             "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label, digits in ROWS:
        cells = [f"{r[key]['mean']:.{digits}f} +- {r[key]['se']:.{digits}f}" for r in results.values()]
        lines.append(f"| {label.format(short=args.short, length=args.length)} | " + " | ".join(cells) + " |")
    lines.append("| seconds (1 thread) | " + " | ".join(str(r["seconds"]) for r in results.values()) + " |")
    write_results(args.name, payload, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
