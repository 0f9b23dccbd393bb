"""Score variants (SNVs, MNVs, indels) as the FOCUS log-likelihood change of their genomic window.

Usage:
    python recipes/score_variants.py --variants calls.vcf.gz --fasta hg38.fa.gz --out scores.tsv --flank 8192
    python recipes/score_variants.py --variants table.tsv --fasta ref.fa --out s.tsv --on-ref-mismatch skip
    python recipes/score_variants.py --variants clinvar.vcf.gz --fasta hg38.fa.gz --out s.tsv --strict

--variants is a VCF (.vcf, .vcf.gz) or a TSV with columns chrom, pos (1-based), ref, alt. The output TSV repeats
the input columns and adds the window, ll_ref, ll_alt, delta_ll (nats), delta_ll_flank, delta_mean_ll, the scored
counts, status and note (definitions: focus_nemo.scoring). Rank SNVs/MNVs by delta_ll and indels by
delta_ll_flank. Alleles that cannot be scored (symbolic, breakends, '*', N) get status 'unsupported'; --strict
stops at the first one (and at a REF mismatch). A run that scores no row fails unless --allow-empty.
"""

from focus_nemo import cli
from focus_nemo.scoring import add_model_arguments, load_scoring_model, score_variants, variant_counts_line


def main(argv=None) -> None:
    p = cli.parser(__doc__)
    p.add_argument("--variants", required=True, help="VCF (.vcf/.vcf.gz) or TSV with chrom, pos, ref, alt")
    p.add_argument("--fasta", required=True, help="reference FASTA (plain, gzip or bgzip)")
    p.add_argument("--out", required=True, help="output TSV")
    p.add_argument("--flank", type=cli.at_least(0), default=8192, help="reference bases on each side of REF")
    p.add_argument("--on-ref-mismatch", default="error", choices=["error", "skip"],
                   help="REF differs from the reference: stop, or write the row flagged ref_mismatch")
    p.add_argument("--on-unsupported", choices=["error", "skip"],
                   help="symbolic/breakend/'*'/N alleles: write the row flagged unsupported (default), or stop")
    p.add_argument("--strict", action="store_true", help="stop at the first row that cannot be scored")
    p.add_argument("--allow-empty", action="store_true", help="exit 0 even when no row is scored")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_model_arguments(p)
    cli.add_device_argument(p)
    a = p.parse_args(argv)
    if a.strict and "skip" in (a.on_unsupported, a.on_ref_mismatch):
        raise SystemExit("error: --strict stops at every row that cannot be scored; it cannot be combined with "
                         "--on-unsupported skip or --on-ref-mismatch skip")
    on_unsupported = "error" if a.strict else a.on_unsupported or "skip"
    on_ref_mismatch = "error" if a.strict else a.on_ref_mismatch
    cli.set_threads(a.threads)

    def command():
        fm, k, window = load_scoring_model(a.checkpoint, cli.adapter_argument(a.adapter), a.k, a.window, a.dtype,
                                           cli.default_device(a.device), config=a.config, horizon=a.horizon)
        return score_variants(a.variants, a.fasta, a.out, fm, flank=a.flank, k=k, window=window,
                              chunk_size=a.chunk_size, on_ref_mismatch=on_ref_mismatch, on_unsupported=on_unsupported,
                              overwrite=a.overwrite, progress=not a.no_progress, allow_empty=a.allow_empty)

    counts = cli.run(command, errors=(ValueError, FileNotFoundError))
    print(f"{variant_counts_line(counts)}; written to {a.out}")


if __name__ == "__main__":
    main()
