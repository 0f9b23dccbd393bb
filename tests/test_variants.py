"""Variant scoring: windows and sums against hand-built haplotypes, shared-prefix streaming equal to
independent streaming, REF checks, VCF/TSV reading and their error messages."""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_dna, stressed_model

from focus_nemo.data import open_genome
from focus_nemo.focus import FocusConfig, FocusModel
from focus_nemo.scoring import (
    VARIANT_COLUMNS,
    LoglikStream,
    ScoringError,
    read_tsv,
    read_variants,
    score_variant,
    score_variants,
    sequence_loglik,
)

ROOT = Path(__file__).resolve().parents[1]
K, W = 4, 16


# chr1: 200 bases with a soft-masked stretch and an N; chr2: 60 bases
CHR1 = random_dna(90, 1) + random_dna(20, 2, b"acgt") + b"N" + random_dna(89, 3)
CHR2 = random_dna(60, 4)


@pytest.fixture
def fasta(tmp_path) -> Path:
    path = tmp_path / "ref.fa"
    path.write_bytes(b">chr1\n" + CHR1 + b"\n>chr2 second\n" + CHR2 + b"\n")
    return path


@pytest.fixture
def fm() -> FocusModel:
    model = FocusModel(stressed_model(), FocusConfig(k=K, window=W)).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.focus_parameters().values():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def streamed_ll(fm, seq: bytes) -> tuple[float, int]:
    """Sum and count of log p(base_t | bases < t) over the A/C/G/T positions t >= 1 of `seq`, computed
    with FocusModel.stream and a plain log-softmax (no code from focus_nemo.scoring)."""
    tokens = torch.tensor([list(seq.upper())])
    with torch.no_grad():
        logits = torch.cat(list(fm.stream(tokens, chunk_size=W)), 1)[0].float()
    lp = logits.log_softmax(-1)[:-1].gather(1, tokens[0, 1:, None])[:, 0].double()
    ok = torch.tensor([b in b"ACGT" for b in seq.upper()[1:]])
    return float(lp[ok].sum()), int(ok.sum())


def write_tsv(path: Path, rows: list[tuple]) -> Path:
    path.write_text("chrom\tpos\tref\talt\tlabel\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows))
    return path


def test_substitution_equals_manual_difference_of_streamed_windows(fm, fasta, tmp_path):
    flank = 40
    pos, ref, alt = 61, chr(CHR1[60]), "G" if chr(CHR1[60]) != "G" else "T"
    variants = write_tsv(tmp_path / "v.tsv", [("chr1", pos, ref, alt, "snv")])
    out = tmp_path / "scores.tsv"
    counts = score_variants(variants, fasta, out, fm, flank=flank, progress=False)
    assert counts["ok"] == 1 and counts["rows"] == 1
    (row,) = read_tsv(out)
    assert list(row) == ["chrom", "pos", "ref", "alt", "label", *VARIANT_COLUMNS]
    ws, we = pos - 1 - flank, pos + flank
    ref_win = CHR1[ws:we]
    alt_win = CHR1[ws: pos - 1] + alt.encode() + CHR1[pos:we]
    assert len(ref_win) == len(alt_win) == 2 * flank + 1 and ref_win != alt_win
    ll_ref, n_ref = streamed_ll(fm, ref_win)
    ll_alt, n_alt = streamed_ll(fm, alt_win)
    assert (int(row["window_start"]), int(row["window_end"])) == (ws, we)
    assert float(row["ll_ref"]) == pytest.approx(ll_ref, abs=1e-4)
    assert float(row["ll_alt"]) == pytest.approx(ll_alt, abs=1e-4)
    assert float(row["delta_ll"]) == pytest.approx(ll_alt - ll_ref, abs=1e-4)
    assert abs(ll_alt - ll_ref) > 1e-3  # the substitution really changes the score
    assert (int(row["scored_ref"]), int(row["scored_alt"])) == (n_ref, n_alt) == (2 * flank, 2 * flank)
    assert (row["status"], row["note"], row["label"]) == ("ok", "", "snv")


@pytest.mark.parametrize("pos,ref_len,alt", [
    (80, 1, "ACGTT"),    # insertion after an anchor base (VCF style)
    (80, 6, None),       # deletion of 5 bases after the anchor
    (95, 3, "TTTTTTT"),  # complex change across the soft-masked stretch
])
def test_indel_windows_are_the_documented_haplotypes(fm, fasta, pos, ref_len, alt):
    genome = open_genome(fasta)
    ref = CHR1[pos - 1: pos - 1 + ref_len].decode()
    alt = alt or ref[0]
    flank = 30
    s = score_variant(fm, genome, "chr1", pos, ref, alt, flank, K, W, chunk_size=7, keep_scores=True)
    ws, we = pos - 1 - flank, pos - 1 + ref_len + flank
    ref_win = CHR1[ws:we]
    alt_win = CHR1[ws: pos - 1] + alt.encode() + CHR1[pos - 1 + ref_len: we]
    assert (s.window_start, s.window_end) == (ws, we)
    assert len(s.ref_scores) == len(ref_win) and len(s.alt_scores) == len(alt_win) == len(ref_win) + len(alt) - ref_len
    for win, total, n in ((ref_win, s.ll_ref, s.scored_ref), (alt_win, s.ll_alt, s.scored_alt)):
        want, count = streamed_ll(fm, win)
        assert total == pytest.approx(want, abs=1e-4) and n == count
    assert s.delta_ll == pytest.approx(s.ll_alt - s.ll_ref)


@pytest.mark.parametrize("chrom,pos,ref,alt,flank", [
    ("chr1", 100, None, "A", 50),      # SNV, windows of several W
    ("chr1", 100, None, "AGGCT", 37),  # insertion with a shared first base
    ("chr1", 150, 4, "C", 25),         # deletion
    ("chr1", 1, None, "T", 20),        # at the first base: no left flank
    ("chr2", 58, 3, "GA", 1000),       # at the record's end, flanks clipped on both sides
    ("chr1", 108, 5, "CCGTA", 19),     # MNV inside lower-case reference
])
def test_shared_prefix_equals_scoring_both_windows_independently(fm, fasta, chrom, pos, ref, alt, flank,
                                                                 monkeypatch):
    genome = open_genome(fasta)
    seq = CHR1 if chrom == "chr1" else CHR2
    ref_len = ref or 1
    ref = seq[pos - 1: pos - 1 + ref_len].decode()
    if alt.upper() == ref.upper():
        alt = "G" if alt != "G" else "C"
    fed = []
    real = fm.forward_chunk
    monkeypatch.setattr(fm, "forward_chunk", lambda t, st: fed.append(t.shape[1]) or real(t, st))
    s = score_variant(fm, genome, chrom, pos, ref, alt, flank, K, W, chunk_size=11, keep_scores=True)
    monkeypatch.undo()
    ws, we = max(0, pos - 1 - flank), min(len(seq), pos - 1 + len(ref) + flank)
    ref_win = seq[ws:we]
    alt_win = seq[ws: pos - 1] + alt.encode() + seq[pos - 1 + len(ref): we]
    common = len(os.path.commonprefix([ref.upper(), alt.upper()]))
    # the left flank and the alleles' common prefix went through the model once
    assert sum(fed) == len(ref_win) + len(alt_win) - (pos - 1 - ws + common)
    ind_ref, ind_alt = sequence_loglik(fm, ref_win, K, W, 13), sequence_loglik(fm, alt_win, K, W, 13)
    np.testing.assert_allclose(s.ref_scores, ind_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(s.alt_scores, ind_alt, atol=1e-5, rtol=0)
    assert s.ll_ref == pytest.approx(float(np.nansum(ind_ref, dtype=np.float64)), abs=1e-4)
    assert s.ll_alt == pytest.approx(float(np.nansum(ind_alt, dtype=np.float64)), abs=1e-4)


def test_forked_stream_is_independent(fm):
    a = LoglikStream(fm, K, W, chunk_size=5)
    a.feed(random_dna(23, 5))
    b = a.fork()
    tail = np.frombuffer(random_dna(30, 6), np.uint8)
    first = a.feed(tail)
    a.feed(random_dna(9, 7))  # advancing one copy leaves the other untouched
    np.testing.assert_array_equal(b.feed(tail), first)
    assert b.offset == 53 and a.offset == 62


def test_ref_mismatch_error_names_the_row_and_skip_flags_it(fm, fasta, tmp_path):
    wrong = "A" if chr(CHR1[9]) != "A" else "C"
    variants = write_tsv(tmp_path / "v.tsv", [("chr1", 5, chr(CHR1[4]).lower(), "A" if CHR1[4] != 65 else "C", "ok"),
                                              ("chr1", 10, wrong, "G" if wrong != "G" else "T", "bad"),
                                              ("chr2", 3, chr(CHR2[2]), "T" if CHR2[2] != 84 else "A", "ok2")])
    out = tmp_path / "s.tsv"
    with pytest.raises(ScoringError) as e:
        score_variants(variants, fasta, out, fm, flank=8, progress=False)
    msg = str(e.value)
    assert f"{variants} line 3" in msg and f"chr1:10 {wrong}>" in msg
    assert f"does not match the reference {chr(CHR1[9])!r}" in msg
    assert not out.exists() and not list(tmp_path.glob(".s.tsv.*"))
    counts = score_variants(variants, fasta, out, fm, flank=8, on_ref_mismatch="skip", progress=False)
    assert (counts["ok"], counts["ref_mismatch"]) == (2, 1)
    rows = read_tsv(out)
    assert [r["label"] for r in rows] == ["ok", "bad", "ok2"]  # every input row, in order
    assert rows[1]["status"] == "ref_mismatch" and rows[1]["delta_ll"] == "" and "does not match" in rows[1]["note"]
    assert rows[0]["status"] == rows[2]["status"] == "ok" and rows[0]["delta_ll"] != ""


def test_vcf_multiallelic_split_and_unsupported_alleles(fm, fasta, tmp_path):
    r5, r20 = chr(CHR1[4]), chr(CHR1[19])
    alts5 = [b for b in "ACGT" if b != r5][:2]
    vcf = tmp_path / "calls.vcf.gz"
    with gzip.open(vcf, "wt") as f:
        f.write("##fileformat=VCFv4.2\n##contig=<ID=chr1>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n")
        f.write(f"1\t5\trs5\t{r5}\t{alts5[0]},{alts5[1]}\t50\tPASS\t.\tGT\t0/1\n")
        f.write(f"chr1\t20\t.\t{r20}\t<DEL>\t.\t.\tSVTYPE=DEL\tGT\t0/1\n")
    cols, variants = read_variants(vcf)
    assert cols == ["chrom", "pos", "id", "ref", "alt"]
    assert [(v.chrom, v.pos, v.alt) for v in variants] == [("1", 5, alts5[0]), ("1", 5, alts5[1]),
                                                           ("chr1", 20, "<DEL>")]
    out = tmp_path / "s.tsv"
    where = rf"calls\.vcf\.gz line 5 \(chr1:20 {r20}><DEL>\)"
    with pytest.raises(ScoringError, match=rf"{where}: cannot score: ALT '<DEL>' is a symbolic allele"):
        score_variants(vcf, fasta, out, fm, flank=10, on_unsupported="error", progress=False)
    counts = score_variants(vcf, fasta, out, fm, flank=10, progress=False)  # real VCFs: flagged by default
    assert (counts["ok"], counts["unsupported"], counts["unsupported_kinds"]) == (2, 1, {"symbolic": 1})
    rows = read_tsv(out)
    assert [r["alt"] for r in rows] == [*alts5, "<DEL>"] and rows[2]["status"] == "unsupported"
    genome = open_genome(fasta)
    for r, a in zip(rows[:2], alts5, strict=True):  # chr aliasing: "1" is scored on chr1
        s = score_variant(fm, genome, "chr1", 5, r5, a, 10, K, W)
        assert float(r["delta_ll"]) == pytest.approx(s.delta_ll, abs=1e-5)
    with pytest.raises(ScoringError, match="output file exists"):
        score_variants(vcf, fasta, out, fm, flank=10, on_unsupported="skip", progress=False)


@pytest.mark.parametrize("rows,pattern", [
    ([("chr9", 5, "A", "C", "x")], r"v\.tsv line 2 \(chr9:5 A>C\): .*no record 'chr9'"),
    ([("chr2", 59, "AAAA", "C", "x")], r"v\.tsv line 2 .*runs past the end of record 'chr2' \(length 60\)"),
    ([("chr2", "0", "A", "C", "x")], r"v\.tsv line 2: POS '0' is not a 1-based position"),
    ([("chr2", 4, "A", "C")], r"v\.tsv line 2: 4 tab-separated fields, the header has 5"),
    ([("chr2", 4, "N", "C", "x")], r"v\.tsv line 2 \(chr2:4 N>C\): cannot score: REF 'N' has a base other"),
    ([("chr2", 4, "A", "a", "x")], r"ALT equals REF"),
])
def test_bad_rows_are_errors_naming_the_row(fm, fasta, tmp_path, rows, pattern):
    variants = write_tsv(tmp_path / "v.tsv", rows)
    with pytest.raises(ScoringError, match=pattern):
        score_variants(variants, fasta, tmp_path / "s.tsv", fm, flank=5, on_unsupported="error", progress=False)


def test_malformed_variant_files(tmp_path):
    bad_header = tmp_path / "a.tsv"
    bad_header.write_text("chrom\tposition\tref\talt\n1\t2\tA\tC\n")
    with pytest.raises(ScoringError, match=r"a\.tsv line 1: header .* lacks column\(s\) \['pos'\]"):
        read_variants(bad_header)
    no_header = tmp_path / "b.vcf"
    no_header.write_text("##fileformat=VCFv4.2\nchr1\t5\t.\tA\tC\t.\t.\t.\n")
    with pytest.raises(ScoringError, match=r"b\.vcf line 2: data line before the #CHROM header"):
        read_variants(no_header)
    short = tmp_path / "c.vcf"
    short.write_text("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\nchr1\t5\t.\tA\tC\n")
    with pytest.raises(ScoringError, match=r"c\.vcf line 2: 5 tab-separated fields"):
        read_variants(short)
    clash = tmp_path / "d.tsv"
    clash.write_text("#chrom\tpos\tref\talt\tdelta_ll\n")
    with pytest.raises(ScoringError, match=r"output column names \['delta_ll'\]"):
        read_variants(clash)
    with pytest.raises(ScoringError, match="does not exist"):
        read_variants(tmp_path / "missing.vcf")


def test_cli_writes_the_same_scores(fm, fasta, tmp_path):
    spec = importlib.util.spec_from_file_location("score_variants_cli", ROOT / "recipes" / "score_variants.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    alt = "A" if CHR2[29] != 65 else "C"
    variants = write_tsv(tmp_path / "v.tsv", [("chr2", 30, chr(CHR2[29]), alt, "x")])
    out = tmp_path / "cli.tsv"
    cli.main(["--variants", str(variants), "--fasta", str(fasta), "--out", str(out), "--flank", "12",
              "--checkpoint", "random:tiny", "--adapter", "none", "--k", "4", "--window", "16", "--no-progress"])
    (row,) = read_tsv(out)
    from focus_nemo.scoring import load_scoring_model

    model, k, window = load_scoring_model("random:tiny", None, k=4, window=16)
    s = score_variant(model, open_genome(fasta), "chr2", 30, chr(CHR2[29]), alt, 12, k, window)
    assert float(row["delta_ll"]) == pytest.approx(s.delta_ll, abs=1e-5)
    assert (int(row["window_start"]), int(row["window_end"])) == (17, 42)


def test_flank_and_mean_columns_are_the_documented_sums(fm, fasta, tmp_path):
    genome = open_genome(fasta)
    cases = [(100, CHR1[99:100].decode(), "A" if CHR1[99] != 65 else "C"),  # SNV
             (80, CHR1[79:80].decode(), CHR1[79:80].decode() + "ACGTT"),      # insertion
             (150, CHR1[149:155].decode(), CHR1[149:150].decode()),           # deletion
             (58, CHR2[57:60].decode(), "GA")]                                # at the record's end: no flank
    for pos, ref, alt in cases:
        chrom = "chr2" if pos == 58 else "chr1"
        s = score_variant(fm, genome, chrom, pos, ref, alt, 30, K, W, chunk_size=7, keep_scores=True)
        right = min(genome.length(chrom), pos - 1 + len(ref) + 30) - (pos - 1 + len(ref))
        ref_flank = s.ref_scores[len(s.ref_scores) - right:].astype(np.float64)
        alt_flank = s.alt_scores[len(s.alt_scores) - right:].astype(np.float64)
        assert np.array_equal(np.isnan(ref_flank), np.isnan(alt_flank))  # same bases, same scored positions
        assert s.scored_flank == int((~np.isnan(ref_flank)).sum())
        if right:
            assert s.delta_ll_flank == pytest.approx(np.nansum(alt_flank) - np.nansum(ref_flank), abs=1e-6)
        else:
            assert s.scored_flank == 0 and np.isnan(s.delta_ll_flank)
        assert s.delta_mean_ll == pytest.approx(s.ll_alt / s.scored_alt - s.ll_ref / s.scored_ref, abs=1e-9)
    variants = write_tsv(tmp_path / "v.tsv", [("chr1", p, r, a, "x") for p, r, a in cases[:3]])
    score_variants(variants, fasta, tmp_path / "s.tsv", fm, flank=30, progress=False)
    for row, (pos, ref, alt) in zip(read_tsv(tmp_path / "s.tsv"), cases[:3], strict=True):
        s = score_variant(fm, genome, "chr1", pos, ref, alt, 30, K, W)
        assert float(row["delta_ll_flank"]) == pytest.approx(s.delta_ll_flank, abs=1e-5)
        assert float(row["delta_mean_ll"]) == pytest.approx(s.delta_mean_ll, abs=1e-6)
        assert int(row["scored_flank"]) == s.scored_flank >= 29  # 30 flank bases, at most one N


REAL_VCF_ROWS = [  # (chrom, pos, ref, alt): what gnomAD / ClinVar files hold besides plain alleles
    ("chr1", 20, None, "<DEL>"), ("chr1", 21, None, "*"), ("chr1", 22, None, "."), ("chr1", 23, None, "N"),
    ("chr1", 24, None, "G]chr2:5]"), ("chr1", 25, None, "<INS:ME:ALU>"),
]


def real_vcf(path: Path, with_plain: bool = True) -> Path:
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    rows = [(c, p, chr(CHR1[p - 1]), a) for c, p, _, a in REAL_VCF_ROWS]
    if with_plain:
        rows.insert(2, ("chr1", 30, chr(CHR1[29]), "A" if CHR1[29] != 65 else "C"))
    lines += [f"{c}\t{p}\t.\t{r}\t{a}\t.\tPASS\t." for c, p, r, a in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_unsupported_alleles_of_real_vcfs_are_flagged_and_counted_by_default(fm, fasta, tmp_path, capsys):
    vcf = real_vcf(tmp_path / "real.vcf")
    counts = score_variants(vcf, fasta, tmp_path / "s.tsv", fm, flank=8, progress=False)
    assert (counts["rows"], counts["ok"], counts["unsupported"]) == (7, 1, 6)
    assert counts["unsupported_kinds"] == {"symbolic": 2, "spanning_deletion": 1, "missing": 1, "not_acgt": 1,
                                           "breakend": 1}
    rows = read_tsv(tmp_path / "s.tsv")
    assert [r["status"] for r in rows] == ["unsupported"] * 2 + ["ok"] + ["unsupported"] * 4
    assert all(r["note"] and r["delta_ll"] == "" for r in rows if r["status"] == "unsupported")
    # the command line counts them at the end; --strict stops at the first, naming the row
    cli = load_recipe("score_variants")
    args = ["--variants", str(vcf), "--fasta", str(fasta), "--flank", "8", "--checkpoint", "random:tiny",
            "--adapter", "none", "--k", "4", "--window", "16", "--no-progress"]
    cli.main([*args, "--out", str(tmp_path / "cli.tsv")])
    assert ("7 row(s): 1 scored, 0 REF mismatch, 6 unsupported (1 missing, 1 spanning_deletion, 2 symbolic, "
            "1 breakend, 1 not_acgt)") in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"real\.vcf line 3 \(chr1:20 .><DEL>\): cannot score: ALT '<DEL>'"):
        cli.main([*args, "--out", str(tmp_path / "strict.tsv"), "--strict"])
    assert not (tmp_path / "strict.tsv").exists()
    with pytest.raises(SystemExit, match="--strict .* cannot be combined"):
        cli.main([*args, "--out", str(tmp_path / "x.tsv"), "--strict", "--on-ref-mismatch", "skip"])


def test_variant_run_that_scores_nothing_is_an_error_unless_allowed(fm, fasta, tmp_path):
    vcf = real_vcf(tmp_path / "none.vcf", with_plain=False)
    out = tmp_path / "s.tsv"
    with pytest.raises(ScoringError, match=r"none\.vcf: no variant was scored \(6 row\(s\): 0 REF mismatch, "
                                           r"6 unsupported\); each row's reason is in .*s\.tsv.*--allow-empty"):
        score_variants(vcf, fasta, out, fm, flank=8, progress=False)
    assert [r["status"] for r in read_tsv(out)] == ["unsupported"] * 6  # written, with the reasons
    counts = score_variants(vcf, fasta, out, fm, flank=8, progress=False, overwrite=True, allow_empty=True)
    assert counts["ok"] == 0
    empty = tmp_path / "empty.tsv"
    empty.write_text("chrom\tpos\tref\talt\n")
    with pytest.raises(ScoringError, match=r"empty\.tsv: no variant was scored \(0 row\(s\)"):
        score_variants(empty, fasta, tmp_path / "e.tsv", fm, flank=8, progress=False)
    cli = load_recipe("score_variants")
    args = ["--variants", str(vcf), "--fasta", str(fasta), "--checkpoint", "random:tiny", "--adapter", "none",
            "--k", "4", "--window", "16", "--no-progress"]
    with pytest.raises(SystemExit, match="no variant was scored"):
        cli.main([*args, "--out", str(tmp_path / "cli.tsv")])
    cli.main([*args, "--out", str(tmp_path / "cli2.tsv"), "--allow-empty"])


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_cli", ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flank_column_tells_a_neutral_insertion_from_a_random_one_where_delta_ll_cannot():
    """Embedded model on real DNA (held-out chr20). Neutral insertions copy the adjacent sequence: one more
    stretch of a microsatellite (12 bases: six units of a dinucleotide repeat) and a tandem duplication of
    30 bases of unique sequence. Random insertions of 12 bases go into the same microsatellites, where they
    break the repeat that the following bases continue (in unique sequence the 1.7 M-parameter model
    predicts what follows an insertion about as well whatever was inserted, so such sites say nothing
    about either column). Ranked by delta_ll, a 30-base duplication falls below the random insertions (the
    raw delta is mostly length); delta_ll_flank puts every neutral insertion above every random one."""
    import re

    from focus_nemo.data import bundled_dna
    from focus_nemo.loading import load_focus_model

    fm = load_focus_model()
    genome = open_genome(bundled_dna("chr20_heldout"))
    rec = genome.names[0]
    seq = genome.fetch(rec, 0, 420_000).tobytes().decode().upper()
    rng = np.random.default_rng(0)
    flank, k, window = 32, fm.config.k, fm.config.window

    def score(pos: int, inserted: str):
        anchor = seq[pos - 1]
        return score_variant(fm, genome, rec, pos, anchor, anchor + inserted, flank, k, window)

    neutral, random_ = [], []
    repeats = [m for m in re.finditer(r"([ACGT])(?!\1)([ACGT])(?:\1\2){14,}", seq)][:4]
    assert len(repeats) == 4
    for m in repeats:
        pos = m.start() + (m.end() - m.start()) // 4 * 2  # 1-based anchor: the last base of a repeat unit
        neutral.append(score(pos, seq[pos - 12: pos]))
        random_.append(score(pos, "".join(rng.choice(list("ACGT"), 12))))
    for pos in (20_000, 43_757, 67_514):  # unique sequence: duplicate the 30 bases ending at the anchor
        assert not re.search(r"([ACGT]{1,2})\1{5,}", seq[pos - 60: pos + flank])
        neutral.append(score(pos, seq[pos - 30: pos]))
    flank_n, flank_r = [s.delta_ll_flank for s in neutral], [s.delta_ll_flank for s in random_]
    raw_n, raw_r = [s.delta_ll for s in neutral], [s.delta_ll for s in random_]
    assert max(abs(x) for x in flank_n) < 1.5  # a copy of the adjacent sequence leaves what follows alone
    assert max(flank_r) < min(flank_n) - 0.5  # the flank column separates the two kinds
    assert min(raw_n) < max(raw_r) - 2  # no threshold on the raw delta does
    assert all(s.delta_ll < -25 for s in neutral[4:])  # ... because it is mostly the duplication's length
