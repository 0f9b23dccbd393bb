"""Rebuild the bundled DNA files of this folder from the source files listed in README.md.

Usage: ``python focus_nemo/assets/dna/make_assets.py SOURCE_DIR`` where SOURCE_DIR holds ``human/`` and
``ood/`` as described in README.md (each file is also in the Debian package named there). Output is
deterministic apart from the index files' timestamps.
"""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

from Bio import bgzf

from focus_nemo.data.fasta import FastaFile

HERE = Path(__file__).resolve().parent
LINE = 60

# name, record, chr20 interval (0-based, half open), description
CHR20_SLICES = [
    ("grch37_chr20_train.fa.gz", "chr20_train", 33_000_000, 35_000_000),
    ("grch37_chr20_heldout.fa.gz", "chr20_heldout", 50_000_000, 51_000_000),
]


def write_bgzip(path: Path, text: bytes) -> None:
    with bgzf.BgzfWriter(str(path), "wb") as w:
        w.write(text)
    for suffix in (".fai", ".gzi"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    FastaFile(path)  # writes .fai and .gzi next to it


def wrap(seq: bytes) -> bytes:
    return b"".join(seq[i: i + LINE] + b"\n" for i in range(0, len(seq), LINE))


def main(src: Path) -> None:
    chr20 = FastaFile(src / "human" / "grch37_chr20.fa.gz")
    for name, record, start, end in CHR20_SLICES:
        seq = chr20.fetch("20", start, end).tobytes()
        header = f">{record} GRCh37 chr20:{start + 1}-{end} (1-based, inclusive)\n".encode()
        write_bgzip(HERE / name, header + wrap(seq))
    # Verbatim content, recompressed as bgzip so that it opens with random access and no cache.
    write_bgzip(HERE / "grch37_chr1_chr2_first100kb.fa.gz",
                gzip.decompress((src / "human" / "grch37_chr1_chr2_first100kb.fa.gz").read_bytes()))
    # Lambda: header shortened to its accession; sequence lines verbatim.
    lam = gzip.decompress((src / "ood" / "phage_lambda.fa.gz").read_bytes())
    lam_header, lam_body = lam.split(b"\n", 1)
    assert b"NC_001416.1" in lam_header
    write_bgzip(HERE / "phage_lambda.fa.gz", b">NC_001416.1 Enterobacteria phage lambda, complete genome\n" + lam_body)
    # Soft-masked chr17 slice: plain text, verbatim.
    dst = HERE / "hg19_chr17_part_softmasked.fa"
    shutil.copyfile(src / "human" / "hg19_chr17_part_softmasked.fa", dst)
    Path(str(dst) + ".fai").unlink(missing_ok=True)
    FastaFile(dst)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
