"""FASTA reading: formats (plain, gzip, bgzip), bad input, aliases, policies, bundled files."""

from __future__ import annotations

import bz2
import gzip
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from Bio import bgzf

from focus_nemo.data import (
    BUNDLED_DNA,
    FastaFile,
    FastaFormatError,
    FastaPolicy,
    FastaWarning,
    Genome,
    RecordNotFoundError,
    bundled_dna,
    bundled_dna_dir,
    canonical_name,
)
from focus_nemo.data.fasta import FastaError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def fasta_text(records: dict[str, bytes], width: int = 60, newline: bytes = b"\n") -> bytes:
    out = b""
    for name, seq in records.items():
        out += b">" + name.encode() + b" some description" + newline
        out += b"".join(seq[i: i + width] + newline for i in range(0, len(seq), width))
    return out


def random_dna(n: int, seed: int = 0, alphabet: bytes = b"ACGTacgtN") -> bytes:
    rng = np.random.default_rng(seed)
    return np.frombuffer(alphabet, np.uint8)[rng.integers(len(alphabet), size=n)].tobytes()


def write_bgzip(path: Path, data: bytes) -> Path:
    with bgzf.BgzfWriter(str(path), "wb") as w:
        w.write(data)
    return path


# -- formats -----------------------------------------------------------------------------------------------------


def test_plain_fetch_is_case_preserving_bytes(tmp_path):
    seq = random_dna(1000)
    f = FastaFile(write(tmp_path / "x.fa", fasta_text({"chr1": seq})))
    out = f.fetch("chr1", 10, 200)
    assert out.dtype == np.uint8 and out.tobytes() == seq[10:200]
    assert f.read("chr1").tobytes() == seq
    assert f.fetch("chr1", 5, 5).size == 0
    with pytest.raises(IndexError, match="outside record 'chr1'"):
        f.fetch("chr1", 990, 1001)


def test_bgzip_random_access_equals_plain(tmp_path):
    records = {"chr1": random_dna(150_000, 1), "chr2": random_dna(70_001, 2)}
    text = fasta_text(records)
    plain = FastaFile(write(tmp_path / "g.fa", text))
    packed = FastaFile(write_bgzip(tmp_path / "g.fa.gz", text))
    assert packed.kind == "bgzf" and packed.read_path == packed.path  # no decompressed copy
    assert (tmp_path / "g.fa.gz.gzi").exists() and (tmp_path / "g.fa.gz.fai").exists()
    assert packed.lengths == plain.lengths == {"chr1": 150_000, "chr2": 70_001}
    rng = np.random.default_rng(0)
    for _ in range(40):
        name = ["chr1", "chr2"][int(rng.integers(2))]
        a = int(rng.integers(plain.lengths[name]))
        b = int(rng.integers(a, plain.lengths[name] + 1))
        assert np.array_equal(packed.fetch(name, a, b), plain.fetch(name, a, b))
    assert packed.read("chr2").tobytes() == records["chr2"]


def test_gzip_is_decompressed_once_into_the_cache(tmp_path, caplog):
    seq = random_dna(5000, 3)
    src = write(tmp_path / "chr1.fa.gz", gzip.compress(fasta_text({"chr1": seq})))
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="focus_nemo.data.fasta"):
        f = FastaFile(src, cache_dir=cache)
    assert f.kind == "gzip" and f.read_path.is_relative_to(cache) and f.read_path.name == "chr1.fa"
    assert any("plain gzip" in r.message and str(src) in r.message for r in caplog.records)
    assert f.read("chr1").tobytes() == seq
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="focus_nemo.data.fasta"):
        again = FastaFile(src, cache_dir=cache)
    assert again.read_path == f.read_path and not caplog.records  # reused, not decompressed again
    seq2 = random_dna(4000, 4)  # the source changes: the copy is refreshed
    write(src, gzip.compress(fasta_text({"chr1": seq2})))
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    assert FastaFile(src, cache_dir=cache).read("chr1").tobytes() == seq2


def test_gzip_default_cache_dir_is_next_to_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("FOCUS_NEMO_CACHE", raising=False)
    src = write(tmp_path / "hg.fa.gz", gzip.compress(b">chr1\nACGT\n"))
    assert FastaFile(src).read_path.is_relative_to(tmp_path / "focus_nemo_cache")
    monkeypatch.setenv("FOCUS_NEMO_CACHE", str(tmp_path / "elsewhere"))
    assert FastaFile(src).read_path.is_relative_to(tmp_path / "elsewhere")


def test_read_only_folder_gets_its_index_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("FOCUS_NEMO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    ro = tmp_path / "ro"
    ro.mkdir()
    write(ro / "x.fa", b">chr1\nACGTACGT\n")
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        f = FastaFile(ro / "x.fa")
        assert f.fetch("chr1", 2, 6).tobytes() == b"GTAC"
        assert sorted(p.name for p in ro.iterdir()) == ["x.fa"]  # nothing written there
        assert f._fai.is_relative_to(tmp_path / "xdg" / "focus_nemo")
    finally:
        ro.chmod(stat.S_IRWXU)


def test_bgzip_with_another_name_and_plain_named_gz(tmp_path):
    text = fasta_text({"chr1": b"ACGTNNacgt"})
    odd = FastaFile(write_bgzip(tmp_path / "odd.fasta", text), cache_dir=tmp_path / "c")
    assert odd.fetch("chr1").tobytes() == b"ACGTNNacgt"
    with pytest.raises(FastaFormatError, match=r"plain\.fa\.gz.*not gzip-compressed"):
        FastaFile(write(tmp_path / "plain.fa.gz", text))
    with pytest.raises(FastaFormatError, match=r"x\.fa\.bz2.*bzip2"):
        FastaFile(write(tmp_path / "x.fa.bz2", bz2.compress(text)))


# -- bad input ---------------------------------------------------------------------------------------------------


def test_empty_file(tmp_path):
    with pytest.raises(FastaFormatError, match=r"empty\.fa: file is empty"):
        FastaFile(write(tmp_path / "empty.fa", b""))


def test_empty_gzip_file(tmp_path):
    with pytest.raises(FastaFormatError, match=r"empty\.fa\.gz: file is empty after decompression"):
        FastaFile(write(tmp_path / "empty.fa.gz", gzip.compress(b"")), cache_dir=tmp_path / "c")


@pytest.mark.parametrize("content", [b"hello\nworld\n", bytes(range(256)) * 8, b";only a comment\n\n"])
def test_not_fasta(tmp_path, content):
    with pytest.raises(FastaFormatError, match=r"notfasta\.fa: not a .*FASTA file"):
        FastaFile(write(tmp_path / "notfasta.fa", content))


def test_not_fasta_inside_gzip_names_the_users_file(tmp_path):
    src = write(tmp_path / "text.fa.gz", gzip.compress(b"just some text\n"))
    with pytest.raises(FastaFormatError) as e:
        FastaFile(src, cache_dir=tmp_path / "c")
    assert str(src) in str(e.value) and str(tmp_path / "c") not in str(e.value)


def test_truncated_gzip(tmp_path):
    data = gzip.compress(fasta_text({"chr1": random_dna(200_000, 5)}))
    src = write(tmp_path / "cut.fa.gz", data[: len(data) // 2])
    with pytest.raises(FastaFormatError, match=r"cut\.fa\.gz: gzip stream is truncated"):
        FastaFile(src, cache_dir=tmp_path / "c")
    assert not [p for p in (tmp_path / "c").rglob("*.fa*") if p.is_file()]  # no half-written copy left


def test_truncated_bgzip(tmp_path):
    full = write_bgzip(tmp_path / "full.fa.gz", fasta_text({"chr1": random_dna(300_000, 6)})).read_bytes()
    with pytest.raises(FastaFormatError, match=r"cut\.fa\.gz: bgzip file is truncated"):
        FastaFile(write(tmp_path / "cut.fa.gz", full[: len(full) // 2]))
    # Blocks lost in the middle behind an old index: the read fails with a named error, not struct/zlib noise.
    FastaFile(tmp_path / "full.fa.gz")
    hole = write(tmp_path / "hole.fa.gz", full[: len(full) // 3] + full[-28:])
    for suffix in (".fai", ".gzi"):
        write(Path(str(hole) + suffix), Path(str(tmp_path / "full.fa.gz") + suffix).read_bytes())
    f = FastaFile(hole)
    with pytest.raises(FastaFormatError, match=r"hole\.fa\.gz: could not read record 'chr1'"):
        f.fetch("chr1", 250_000, 260_000)


def test_crlf_line_endings(tmp_path):
    seq = random_dna(1234, 7)
    lf = FastaFile(write(tmp_path / "lf.fa", fasta_text({"chr1": seq, "chr2": seq[:70]})))
    crlf = FastaFile(write(tmp_path / "crlf.fa", fasta_text({"chr1": seq, "chr2": seq[:70]}, newline=b"\r\n")))
    assert crlf.lengths == lf.lengths == {"chr1": 1234, "chr2": 70}
    assert crlf.read("chr1").tobytes() == seq
    assert np.array_equal(crlf.fetch("chr1", 55, 1000), lf.fetch("chr1", 55, 1000))


def write_kind(path: Path, data: bytes, kind: str) -> Path:
    """`data` as a plain, gzip or bgzip file."""
    if kind == "bgzip":
        return write_bgzip(path, data)
    return write(path, gzip.compress(data) if kind == "gzip" else data)


LINE_ENDINGS = {"LF": b"\n", "CRLF": b"\r\n", "CR": b"\r"}


@pytest.mark.parametrize("kind", ["plain", "gzip", "bgzip"])
@pytest.mark.parametrize("ending", ["CR", "mixed_lines", "mixed_records"])
def test_cr_and_mixed_line_endings_read_like_lf(tmp_path, caplog, kind, ending):
    seq = random_dna(1234, 7)
    records = {"chr1": seq, "chr2": seq[:70]}
    lf = FastaFile(write(tmp_path / "lf.fa", fasta_text(records)))
    if ending == "CR":
        text = fasta_text(records, newline=b"\r")
    elif ending == "mixed_lines":  # LF, CRLF and CR lines inside one record
        lines = fasta_text(records).split(b"\n")
        text = b"".join(line + list(LINE_ENDINGS.values())[i % 3] for i, line in enumerate(lines[:-1]))
    else:  # records written on different systems, concatenated
        text = fasta_text({"chr1": seq}, newline=b"\r\n") + fasta_text({"chr2": seq[:70]}, newline=b"\r")
    name = "x.fa.gz" if kind != "plain" else "x.fa"
    with caplog.at_level(logging.INFO, logger="focus_nemo.data.fasta"):
        f = FastaFile(write_kind(tmp_path / name, text, kind), cache_dir=tmp_path / "c")
    assert f.lengths == lf.lengths == {"chr1": 1234, "chr2": 70}
    assert f.read("chr1").tobytes() == seq and f.read("chr2").tobytes() == seq[:70]
    assert np.array_equal(f.fetch("chr1", 55, 1000), lf.fetch("chr1", 55, 1000))
    assert "line endings" in caplog.text and "rewriting it once" in caplog.text and str(f.path) in caplog.text
    assert f.read_path != f.path and (tmp_path / "c") in f.read_path.parents  # read through the LF copy
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="focus_nemo.data.fasta"):
        again = FastaFile(f.path, cache_dir=tmp_path / "c")
    assert again.read_path == f.read_path and "rewriting" not in caplog.text  # the copy is reused


def test_mixed_line_endings_far_into_the_file_are_found_when_indexing(tmp_path, caplog):
    seq = random_dna(200_000, 3)  # CRLF lines start after the first 64 KiB: only the full scan sees them
    text = fasta_text({"chr1": seq}) + fasta_text({"chr2": seq[:1000]}, newline=b"\r\n").replace(
        b"\r\n", b"\n", 3)
    with caplog.at_level(logging.INFO, logger="focus_nemo.data.fasta"):
        f = FastaFile(write(tmp_path / "late.fa", text), cache_dir=tmp_path / "c")
    assert "mixed line endings" in caplog.text
    assert f.read("chr1").tobytes() == seq and f.read("chr2").tobytes() == seq[:1000]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="focus_nemo.data.fasta"):
        assert FastaFile(f.path, cache_dir=tmp_path / "c").read_path == f.read_path
    assert "rewriting" not in caplog.text


def test_rewriting_handles_line_ends_split_between_reads(tmp_path, monkeypatch):
    from focus_nemo.data import fasta_io as fasta_module

    monkeypatch.setattr(fasta_module, "COPY_CHUNK", 5)  # every CR/LF pair and the mark straddle reads
    seq = random_dna(300, 9)
    text = b"\xef\xbb\xbf" + fasta_text({"chr1": seq, "chr2": seq[:33]}, width=7, newline=b"\r\n")
    text = text.replace(b"\r\n", b"\r", 5)  # a few classic-Mac line ends among them
    f = FastaFile(write(tmp_path / "split.fa", text), cache_dir=tmp_path / "c")
    assert f.read("chr1").tobytes() == seq and f.read("chr2").tobytes() == seq[:33]
    assert b"\r" not in f.read_path.read_bytes() and not f.read_path.read_bytes().startswith(b"\xef")


@pytest.mark.parametrize("kind", ["plain", "gzip", "bgzip"])
def test_utf8_byte_order_mark_is_removed(tmp_path, caplog, kind):
    seq = random_dna(500, 4)
    text = b"\xef\xbb\xbf" + fasta_text({"chr1": seq}, newline=b"\r\n")
    with caplog.at_level(logging.INFO, logger="focus_nemo.data.fasta"):
        f = FastaFile(write_kind(tmp_path / ("bom.fa.gz" if kind != "plain" else "bom.fa"), text, kind),
                      cache_dir=tmp_path / "c")
    assert f.names == ["chr1"] and f.read("chr1").tobytes() == seq
    assert "UTF-8 byte-order mark" in caplog.text


@pytest.mark.parametrize(("mark", "encoding"), [(b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"),
                                                (b"\xff\xfe\x00\x00", "UTF-32")])
@pytest.mark.parametrize("kind", ["plain", "gzip"])
def test_wide_byte_order_mark_is_named(tmp_path, mark, encoding, kind):
    text = mark + ">chr1\nACGT\n".encode("utf-16-le" if encoding == "UTF-16" else "utf-32-le")
    path = write_kind(tmp_path / ("w.fa.gz" if kind == "gzip" else "w.fa"), text, kind)
    with pytest.raises(FastaFormatError, match=rf"w\.fa(\.gz)?: starts with a {encoding} .*byte-order mark"):
        FastaFile(path, cache_dir=tmp_path / "c")


def test_only_a_byte_order_mark_is_an_empty_file(tmp_path):
    with pytest.raises(FastaFormatError, match=r"bom_only\.fa: file is empty after removing its byte-order mark"):
        FastaFile(write(tmp_path / "bom_only.fa", b"\xef\xbb\xbf"), cache_dir=tmp_path / "c")


def test_mixed_line_endings_behind_a_foreign_index_are_named(tmp_path):
    # a CR past the first 64 KiB, in a file whose index another tool wrote taking the CR for a base
    seq = bytearray(random_dna(100_000, 5))
    seq[80_050] = ord("\r")
    path = write(tmp_path / "odd.fa", fasta_text({"chr1": bytes(seq)}, width=100))
    write(tmp_path / "odd.fa.fai", f"chr1\t100000\t{len('>chr1 some description') + 1}\t100\t101\n")
    f = FastaFile(path, cache_dir=tmp_path / "c")
    assert f.fetch("chr1", 0, 80_050).tobytes() == bytes(seq[:80_050])
    with pytest.raises(FastaFormatError, match=r"odd\.fa: record 'chr1' \[0, 100000\) read 99999 bases: .*mixed line"):
        f.read("chr1")


def test_very_long_single_line(tmp_path):
    seq = random_dna(3_000_000, 8)
    f = FastaFile(write(tmp_path / "oneline.fa", b">chr1\n" + seq + b"\n>chr2\n" + seq[:10] + b"\n"))
    assert f.lengths == {"chr1": 3_000_000, "chr2": 10}
    assert f.fetch("chr1", 2_999_990).tobytes() == seq[-10:]
    assert f.read("chr1").tobytes() == seq


def test_lower_case_is_kept(tmp_path):
    f = FastaFile(write(tmp_path / "soft.fa", b">chr1\nACGTacgtnN\n"))
    assert f.fetch("chr1").tobytes() == b"ACGTacgtnN"
    assert f.base_counts("chr1") == {"ACGT": 4, "acgt": 4, "N": 2, "iupac": 0, "total": 10}


def test_iupac_kept_or_mapped_to_n(tmp_path):
    text = b">chr1\nACRYKMSWBDHVNacrykmswbdhvn\n"
    keep = FastaFile(write(tmp_path / "iupac.fa", text))
    assert keep.fetch("chr1").tobytes() == b"ACRYKMSWBDHVNacrykmswbdhvn"
    assert keep.base_counts("chr1")["iupac"] == 20
    to_n = FastaFile(tmp_path / "iupac.fa", policy=FastaPolicy(iupac="to_n"))
    assert to_n.fetch("chr1").tobytes() == b"ACNNNNNNNNNNNacnnnnnnnnnnn"
    with pytest.raises(ValueError, match="FastaPolicy.iupac"):
        FastaPolicy(iupac="drop")


@pytest.mark.parametrize(("bad", "shown"), [(b"-", "'-'"), (b"U", "'U'"), (b"5", "'5'"), (b" ", "' '"),
                                            (b"*", "'*'")])
def test_character_that_is_not_a_base(tmp_path, bad, shown):
    seq = bytearray(b"ACGT" * 40)
    seq[97] = bad[0]
    f = FastaFile(write(tmp_path / "bad.fa", fasta_text({"chrA": b"ACGT", "chrB": bytes(seq)})))
    with pytest.raises(FastaFormatError) as e:
        f.fetch("chrB", 60, 120)
    msg = str(e.value)
    assert "bad.fa" in msg and "record 'chrB'" in msg and "position 97" in msg and shown in msg
    assert f.fetch("chrB", 0, 97).size == 97  # the bytes before it are fine


def test_non_ascii_byte(tmp_path):
    with pytest.raises(FastaFormatError, match=r"nonascii\.fa: not a FASTA file: non-ASCII byte 0xff at line 3.*chr1"):
        FastaFile(write(tmp_path / "nonascii.fa", b">chr1\nACGTACGT\nACG\xffACGT\nAC\n"))


def test_empty_record_skip_or_error(tmp_path):
    path = write(tmp_path / "gaps.fa", b">chr1\n>chr2\nACGT\n>chr3\n")
    f = FastaFile(path)
    assert f.lengths == {"chr1": 0, "chr2": 4, "chr3": 0}
    with pytest.warns(FastaWarning, match=r"gaps\.fa: empty record\(s\).*'chr1', 'chr3'"):
        assert f.records() == ["chr2"]
    strict = FastaFile(path, policy=FastaPolicy(empty_record="error"))
    with pytest.raises(FastaFormatError, match=r"gaps\.fa: empty record\(s\) with no sequence: \['chr3'\]"):
        strict.records(["chr2", "chr3"])
    assert strict.records(["chr2"]) == ["chr2"]


def test_only_n_record_reads(tmp_path):
    f = FastaFile(write(tmp_path / "n.fa", b">chrN\n" + b"N" * 500 + b"\n"))
    assert f.base_counts("chrN")["N"] == 500  # reading is fine; the samplers refuse it (test_data_windows)


def test_duplicate_names_and_layout_errors(tmp_path):
    with pytest.raises(FastaFormatError, match=r"dup\.fa: .*chr1"):
        FastaFile(write(tmp_path / "dup.fa", b">chr1\nACGT\n>chr1\nGG\n"))
    with pytest.raises(FastaFormatError, match=r"uneven\.fa: .*not consistent"):
        FastaFile(write(tmp_path / "uneven.fa", b">chr1\nACGT\nAC\nACGT\n"))
    with pytest.raises(FastaFormatError, match=r"blanks\.fa: .*blank lines .*'chr1'"):
        FastaFile(write(tmp_path / "blanks.fa", b">chr1\nACGT\n\n\n>chr2\nGG\n"))
    with pytest.raises(FastaFormatError, match=r"noname\.fa: .*Bad sequence name"):
        FastaFile(write(tmp_path / "noname.fa", b">\nACGT\n"))
    with pytest.raises(FileNotFoundError, match="missing.fa"):
        FastaFile(tmp_path / "missing.fa")


# -- names -------------------------------------------------------------------------------------------------------


def test_missing_chromosome_lists_records(tmp_path):
    f = FastaFile(write(tmp_path / "x.fa", b">chr1\nACGT\n>chr2\nAC\n>chrM\nA\n"))
    with pytest.raises(RecordNotFoundError, match=r"no record 'chr7'; available records \(3\): chr1, chr2, chrM"):
        f.fetch("chr7", 0, 1)
    with pytest.raises(KeyError):
        f.resolve("chr7")
    assert "chr7" not in f and "chr2" in f


def test_missing_chromosome_list_is_truncated(tmp_path):
    f = FastaFile(write(tmp_path / "many.fa", "".join(f">chrUn_{i}\nACGT\n" for i in range(100))))
    with pytest.raises(RecordNotFoundError, match=r"available records \(100\): .*\(60 more\)"):
        f.resolve("chr1")


def test_chromosome_aliases(tmp_path):
    ens = FastaFile(write(tmp_path / "ensembl.fa", b">1\nAAAA\n>MT\nCC\n>X\nG\n"))
    assert ens.resolve("chr1") == "1" and ens.resolve("chrM") == "MT" and ens.resolve("chrMT") == "MT"
    assert ens.resolve("chrX") == "X" and ens.fetch("chrM").tobytes() == b"CC"
    ucsc = FastaFile(write(tmp_path / "ucsc.fa", b">chr1\nAAAA\n>chrM\nCC\n"))
    assert ucsc.resolve("1") == "chr1" and ucsc.resolve("MT") == "chrM" and ucsc.resolve("M") == "chrM"
    both = FastaFile(write(tmp_path / "both.fa", b">chr1\nAAAA\n>1\nCC\n"))
    assert both.resolve("1") == "1" and both.resolve("chr1") == "chr1"  # exact names win
    with pytest.raises(RecordNotFoundError, match="ambiguous"):
        FastaFile(write(tmp_path / "amb.fa", b">chrM\nA\n>MT\nC\n")).resolve("M")
    assert canonical_name("chr1_KI270706v1_random") == "1_KI270706v1_random"
    assert canonical_name("chr") == "chr"


def test_genome_of_per_chromosome_files(tmp_path):
    write(tmp_path / "chr1.fa", b">chr1\nAAAA\n")
    write_bgzip(tmp_path / "chr2.fa.gz", b">chr2\nCCCCCC\n")
    write(tmp_path / "notes.txt", b"not a fasta file")
    g = Genome(tmp_path)
    assert g.names == ["chr1", "chr2"] and g.lengths == {"chr1": 4, "chr2": 6}
    assert g.fetch("2", 1, 3).tobytes() == b"CC" and g.file_of("1").path.name == "chr1.fa"
    assert Genome(str(tmp_path / "chr*.fa*")).names == ["chr1", "chr2"]
    with pytest.raises(RecordNotFoundError, match="no record 'chr3'.*chr1, chr2"):
        g.resolve("chr3")
    write(tmp_path / "other.fa", b">1\nGG\n")
    with pytest.raises(FastaError, match="clashes"):
        Genome([tmp_path / "chr1.fa", tmp_path / "other.fa"])


def test_pickled_file_reopens(tmp_path):
    import pickle

    f = FastaFile(write(tmp_path / "x.fa", b">chr1\nACGTACGT\n"))
    f.fetch("chr1", 0, 2)
    g = pickle.loads(pickle.dumps(f))
    assert g.fetch("chr1", 4, 8).tobytes() == b"ACGT"


# -- bundled real DNA --------------------------------------------------------------------------------------------

BUNDLED_LENGTHS = {
    "chr20_train": {"chr20_train": 2_000_000},
    "chr20_heldout": {"chr20_heldout": 1_000_000},
    "chr17_softmasked": {"chr17": 40_000},
    "chr1_chr2_first100kb": {"1": 100_080, "2": 100_080, "3": 120},
    "phage_lambda": {"NC_001416.1": 48_502},
}


@pytest.mark.parametrize("name", sorted(BUNDLED_DNA))
def test_bundled_files_open_with_documented_lengths(name):
    before = sorted(p.name for p in bundled_dna_dir().iterdir())
    f = FastaFile(bundled_dna(name))
    assert f.lengths == BUNDLED_LENGTHS[name]
    assert f.kind == ("plain" if name == "chr17_softmasked" else "bgzf")
    assert sorted(p.name for p in bundled_dna_dir().iterdir()) == before  # indexes ship; nothing is written
    readme = (bundled_dna_dir() / "README.md").read_text()
    assert BUNDLED_DNA[name] in readme


def test_bundled_base_counts():
    chr17 = FastaFile(bundled_dna("chr17_softmasked"))
    assert chr17.base_counts("chr17") == {"ACGT": 22_605, "acgt": 17_395, "N": 0, "iupac": 0, "total": 40_000}
    early = FastaFile(bundled_dna("chr1_chr2_first100kb"))
    assert early.base_counts("chr1")["N"] == 240 and early.base_counts("3")["N"] == 120
    heldout = FastaFile(bundled_dna("chr20_heldout"))
    assert heldout.base_counts("chr20_heldout")["ACGT"] == 1_000_000
    train = FastaFile(bundled_dna("chr20_train"))
    gap = train.fetch("chr20_train", 1_897_085, 1_947_085)  # chr20:34,897,086-34,947,085
    assert set(gap.tobytes()) == {ord("N")}
    assert train.base_counts("chr20_train")["N"] == 50_000


@pytest.mark.skipif(not (SHARED / "human" / "grch37_chr20.fa.gz.gzi").exists(), reason="shared GRCh37 chr20 absent")
def test_bundled_slice_equals_the_source_chromosome():
    chr20 = FastaFile(SHARED / "human" / "grch37_chr20.fa.gz")
    train = FastaFile(bundled_dna("chr20_train"))
    assert np.array_equal(train.fetch("chr20_train", 0, 100_000), chr20.fetch("chr20", 33_000_000, 33_100_000))
    assert np.array_equal(train.fetch("chr20_train", 1_990_000, 2_000_000), chr20.fetch("20", 34_990_000, 35_000_000))
