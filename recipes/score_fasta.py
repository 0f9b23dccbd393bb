"""Score every base of a FASTA file with FOCUS: whole chromosomes streamed with bounded memory.

Usage:
    python recipes/score_fasta.py --fasta hg38.fa.gz --records chr20 chr21 --out scores/ --format both
    python recipes/score_fasta.py --fasta hg38.fa.gz --records chr20 chr21 --out scores/ --format both --resume
    python recipes/score_fasta.py --fasta x.fa --checkpoint random:tiny --adapter none --k 4 --window 16 --out s/
    torchrun --standalone --nproc_per_node 2 recipes/score_fasta.py --fasta hg38.fa.gz --checkpoint evo2_7b/ \
        --adapter adapter/ --out scores/ --tensor-parallel 2

Writes ``<record>.npz`` and/or ``<record>.bedgraph.gz`` (log p(base | preceding bases), nats), ``summary.tsv``
and ``manifest.json`` into --out; the formats and resume rules are described in `focus_nemo.scoring`.
Records that score nothing (empty, only N/IUPAC, a single base) get a summary row saying why; a run that
scores nothing at all exits with an error (status 1) unless --allow-empty.

With --tensor-parallel N (needs the NeMo extra; start N processes with torchrun) every rank builds NeMo's
Megatron base with its shards, loads the base weights and the adapter, and streams the same records; rank 0
writes the outputs and shows the progress. Each rank runs on its own GPU (LOCAL_RANK) when CUDA is available,
else on the CPU (--device must agree). The manifest's settings equal those of a single-device run of the
same weights, so either can resume the other's directory; the TP size is recorded beside the device.
"""

import argparse
import logging
import os

import torch

from focus_nemo.scoring import add_model_arguments, load_scoring_model, score_fasta


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fasta", required=True, help="FASTA file (plain, gzip or bgzip), directory or glob")
    p.add_argument("--out", required=True, help="output directory (must be new or empty unless --resume)")
    p.add_argument("--records", nargs="+", help="records to score (chr1 and 1 name the same record); default all")
    add_model_arguments(p)
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when available; with --tensor-parallel "
                                    "each rank's own GPU, or the CPU without CUDA)")
    p.add_argument("--tensor-parallel", type=int, metavar="N",
                   help="split the model over N processes (run under torchrun --nproc_per_node N)")
    p.add_argument("--format", default="npz", choices=["npz", "bedgraph", "both"])
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--allow-empty", action="store_true",
                   help="exit 0 even when no base at all is scored (every record empty, only N, ...)")
    return p.parse_args(argv)


def _tp_device(requested: str | None) -> None:
    """Check --device against the device tensor-parallel ranks use (their own GPU, or the CPU)."""
    want = "cuda" if torch.cuda.is_available() else "cpu"
    if requested is not None and torch.device(requested).type != want:
        raise ValueError(f"--device {requested}: with --tensor-parallel each rank runs on "
                         f"{'its own GPU (LOCAL_RANK)' if want == 'cuda' else 'the CPU (no CUDA here)'}")


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    adapter = None if args.adapter.lower() == "none" else args.adapter
    info = {"fasta": args.fasta, "checkpoint": args.checkpoint, "adapter": args.adapter}
    rank = 0
    try:
        if args.tensor_parallel is None:
            device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
            fm, k, window = load_scoring_model(args.checkpoint, adapter, args.k, args.window, args.dtype, device,
                                               config=args.config)
        else:
            from focus_nemo.nemo.scoring import check_world_size, load_tp_scoring_model

            if args.config:
                raise ValueError("--config: not supported with --tensor-parallel; convert the checkpoint first "
                                 "(recipes/convert_checkpoint.py --config ... --format safetensors or nemo2)")

            check_world_size(args.tensor_parallel)  # before the slow NeMo imports
            rank = int(os.environ.get("RANK", "0"))
            if rank:
                logging.getLogger().setLevel(logging.WARNING)
            _tp_device(args.device)
            fm, k, window = load_tp_scoring_model(args.checkpoint, adapter, args.k, args.window, args.dtype,
                                                  tensor_parallel=args.tensor_parallel)
        run = score_fasta(args.fasta, args.out, fm, records=args.records, k=k, window=window, formats=args.format,
                          chunk_size=args.chunk_size, resume=args.resume,
                          progress=not args.no_progress and rank == 0, info=info, allow_empty=args.allow_empty)
    except (ValueError, FileNotFoundError) as e:  # bad input: the message names the file, record or field
        if rank:
            raise SystemExit(1) from None
        raise SystemExit(f"error: {e}") from None
    finally:
        if args.tensor_parallel is not None and torch.distributed.is_initialized():
            from focus_nemo.nemo.scoring import teardown

            teardown()
    if rank:
        return
    for row in run.summary:
        if not row["scored"]:
            print(f"{row['record']}\t{row['length']:,} bases\tnot scored: {row.get('note') or 'no scored base'}")
            continue
        print(f"{row['record']}\t{row['length']:,} bases\t{row['scored']:,} scored\t"
              f"{row['bits_per_base'] or float('nan'):.4f} bits/base\t{row['bases_per_s'] or 0:,.0f} bases/s")
    print(f"{len(run.scored)} record(s) scored, {len(run.skipped)} already finished; results in {run.out_dir}")


if __name__ == "__main__":
    main()
