"""Score variants (SNVs, MNVs, indels) as the FOCUS log-likelihood change of their genomic window.

Usage:
    python recipes/score_variants.py --variants calls.vcf.gz --fasta hg38.fa.gz --out scores.tsv --flank 8192
    python recipes/score_variants.py --variants table.tsv --fasta ref.fa --out s.tsv --on-ref-mismatch skip
    python recipes/score_variants.py --variants clinvar.vcf.gz --fasta hg38.fa.gz --out s.tsv --strict

--variants is a VCF (.vcf, .vcf.gz) or a TSV with columns chrom, pos (1-based), ref, alt. The output TSV
repeats the input columns and adds window_start, window_end (0-based half-open), ll_ref, ll_alt, delta_ll
(nats; delta_ll = ll_alt - ll_ref), delta_ll_flank (change on the shared right flank), delta_mean_ll
(change of the per-base mean), scored_ref, scored_alt, scored_flank, status, note; see `focus_nemo.scoring`.
Rank SNVs/MNVs by delta_ll and indels by delta_ll_flank: delta_ll of an indel is mostly its length.

Alleles that cannot be scored as a sequence change (symbolic <DEL>, breakends, '*', '.', N) are written
as rows with status 'unsupported' and counted at the end; --strict stops at the first one (and at a REF
mismatch) instead. A run in which no row is scored exits with an error (status 1) unless --allow-empty.
"""

import argparse
import logging

import torch

from focus_nemo.scoring import add_model_arguments, load_scoring_model, score_variants


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", required=True, help="VCF (.vcf/.vcf.gz) or TSV with chrom, pos, ref, alt")
    p.add_argument("--fasta", required=True, help="reference FASTA (plain, gzip or bgzip)")
    p.add_argument("--out", required=True, help="output TSV")
    p.add_argument("--flank", type=int, default=8192, help="reference bases on each side of REF")
    p.add_argument("--on-ref-mismatch", default="error", choices=["error", "skip"],
                   help="REF differs from the reference: stop, or write the row flagged ref_mismatch")
    p.add_argument("--on-unsupported", choices=["error", "skip"],
                   help="symbolic/breakend/'*'/N alleles: write the row flagged unsupported (default), or stop")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first row that cannot be scored (unsupported allele or REF mismatch)")
    p.add_argument("--allow-empty", action="store_true", help="exit 0 even when no row is scored")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_model_arguments(p)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.strict:
        if "skip" in (args.on_unsupported, args.on_ref_mismatch):
            raise SystemExit("error: --strict stops at every row that cannot be scored; it cannot be combined "
                             "with --on-unsupported skip or --on-ref-mismatch skip")
        args.on_unsupported = args.on_ref_mismatch = "error"
    args.on_unsupported = args.on_unsupported or "skip"
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    adapter = None if args.adapter.lower() == "none" else args.adapter
    try:
        fm, k, window = load_scoring_model(args.checkpoint, adapter, args.k, args.window, args.dtype, args.device,
                                           config=args.config)
        counts = score_variants(args.variants, args.fasta, args.out, fm, flank=args.flank, k=k, window=window,
                                chunk_size=args.chunk_size, on_ref_mismatch=args.on_ref_mismatch,
                                on_unsupported=args.on_unsupported, overwrite=args.overwrite,
                                progress=not args.no_progress, allow_empty=args.allow_empty)
    except (ValueError, FileNotFoundError) as e:  # bad input: the message names the file, row or field
        raise SystemExit(f"error: {e}") from None
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts["unsupported_kinds"].items())
    print(f"{counts['rows']} row(s): {counts['ok']} scored, {counts['ref_mismatch']} REF mismatch, "
          f"{counts['unsupported']} unsupported{f' ({kinds})' if kinds else ''}, {counts['seconds']:.1f} s; "
          f"written to {args.out}")


if __name__ == "__main__":
    main()
