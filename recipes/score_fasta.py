"""Score every base of a FASTA file with FOCUS: whole chromosomes streamed with bounded memory.

Usage:
    python recipes/score_fasta.py --fasta hg38.fa.gz --records chr20 chr21 --out scores/ --format both
    python recipes/score_fasta.py --fasta hg38.fa.gz --records chr20 chr21 --out scores/ --format both --resume
    python recipes/score_fasta.py --fasta x.fa --checkpoint random:tiny --adapter none --k 4 --window 16 --out s/

Writes ``<record>.npz`` and/or ``<record>.bedgraph.gz`` (log p(base | preceding bases), nats), ``summary.tsv``
and ``manifest.json`` into --out; the formats and resume rules are described in `focus_nemo.scoring`.
"""

import argparse
import logging

import torch

from focus_nemo.scoring import DEFAULT_CHUNK, load_scoring_model, score_fasta


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fasta", required=True, help="FASTA file (plain, gzip or bgzip), directory or glob")
    p.add_argument("--out", required=True, help="output directory (must be new or empty unless --resume)")
    p.add_argument("--records", nargs="+", help="records to score (chr1 and 1 name the same record); default all")
    p.add_argument("--checkpoint", default="embedded", help="embedded, random:<preset> or a checkpoint path")
    p.add_argument("--adapter", default="embedded", help="embedded, none (untrained) or an adapter directory")
    p.add_argument("--k", type=int, help="bases per Focus token (default: the adapter's)")
    p.add_argument("--window", type=int, help="window W in bases (default: the adapter's)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="bases per model call")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--format", default="npz", choices=["npz", "bedgraph", "both"])
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    adapter = None if args.adapter.lower() == "none" else args.adapter
    try:
        fm, k, window = load_scoring_model(args.checkpoint, adapter, args.k, args.window, args.dtype, args.device)
        run = score_fasta(args.fasta, args.out, fm, records=args.records, k=k, window=window, formats=args.format,
                          chunk_size=args.chunk_size, resume=args.resume, progress=not args.no_progress,
                          info={"fasta": args.fasta, "checkpoint": args.checkpoint, "adapter": args.adapter})
    except (ValueError, FileNotFoundError) as e:  # bad input: the message names the file, record or field
        raise SystemExit(f"error: {e}") from None
    for row in run.summary:
        print(f"{row['record']}\t{row['length']:,} bases\t{row['scored']:,} scored\t"
              f"{row['bits_per_base'] or float('nan'):.4f} bits/base\t{row['bases_per_s'] or 0:,.0f} bases/s")
    print(f"{len(run.scored)} record(s) scored, {len(run.skipped)} already finished; results in {run.out_dir}")


if __name__ == "__main__":
    main()
