"""Train / val / test splits: chromosome lists, regions, aliases, tail hold-out, overlap errors."""

from __future__ import annotations

import pytest

from focus_nemo.data import (
    FastaFile,
    Genome,
    Region,
    WindowSampler,
    bundled_dna,
    make_splits,
    parse_region,
    splits_from_config,
    tail_holdout,
)


@pytest.fixture
def genome(tmp_path) -> FastaFile:
    (tmp_path / "g.fa").write_bytes(b">1\n" + b"A" * 1000 + b"\n>2\n" + b"C" * 500 + b"\n>X\n" + b"G" * 200 + b"\n")
    return FastaFile(tmp_path / "g.fa")


def test_parse_region():
    assert parse_region("chr20") == "chr20"
    assert parse_region("chr20:30,000,001-32,000,000") == Region("chr20", 30_000_000, 32_000_000)
    assert str(Region("chr20", 30_000_000, 32_000_000)) == "chr20:30000001-32000000"
    with pytest.raises(ValueError, match="1-based"):
        parse_region("chr1:0-10")


def test_chromosome_lists_with_aliases(genome):
    s = make_splits(genome, train=["chr1"], val=["chr2"], test=["chrX"])
    assert s.train == [Region("1", 0, 1000)] and s.val == [Region("2", 0, 500)] and s.test == [Region("X", 0, 200)]
    assert s.bases("train") == 1000 and "val: 2:1-500 (500 bases)" in s.describe()


def test_train_defaults_to_every_other_record(genome):
    s = make_splits(genome, val=["chr2"])
    assert [r.chrom for r in s.train] == ["1", "X"] and not s.test


def test_tail_holdout_of_a_single_chromosome(genome):
    s = make_splits(genome, train=["chr1"], val_fraction=0.1, test_fraction=0.05)
    assert s.train == [Region("1", 0, 850)] and s.val == [Region("1", 850, 950)] and s.test == [Region("1", 950, 1000)]
    head, val, test = tail_holdout(Region("c", 100, 200), 0.2)
    assert (head, val, test) == (Region("c", 100, 180), Region("c", 180, 200), Region("c", 200, 200))
    with pytest.raises(ValueError, match="less than one base"):
        tail_holdout(Region("c", 0, 5), 0.1)
    with pytest.raises(ValueError, match="val \\+ test < 1"):
        tail_holdout(Region("c", 0, 100), 0.6, 0.4)


def test_overlap_is_an_error(genome):
    with pytest.raises(ValueError, match=r"splits overlap: train region 1:1-1000 and val region 1:901-1000"):
        make_splits(genome, train=["chr1"], val=["1:901-1000"])
    with pytest.raises(ValueError, match="overlap"):
        make_splits(genome, train=["chr1", "chr2"], val=["2"])


def test_missing_chromosome_in_config(genome):
    with pytest.raises(KeyError, match=r"no record 'chr7'; available records \(3\): 1, 2, X"):
        make_splits(genome, train=["chr7"])
    with pytest.raises(ValueError, match="ends beyond record '2'"):
        make_splits(genome, train=["chr2:1-501"])


def test_splits_from_config(genome):
    cfg = {"train": ["chr1:1-800", "chrX"], "val": "chr2", "test": None}
    s = splits_from_config(genome, cfg)
    assert s.train == [Region("1", 0, 800), Region("X", 0, 200)] and s.val == [Region("2", 0, 500)] and not s.test
    with pytest.raises(ValueError, match="unknown key.*'tran'"):
        splits_from_config(genome, {"tran": ["chr1"]})


def test_bundled_demo_splits():
    g = Genome([bundled_dna("chr20_train"), bundled_dna("chr20_heldout")])
    s = make_splits(g, train=["chr20_train"], val=["chr20_heldout"])
    assert s.bases("train") == 2_000_000 and s.bases("val") == 1_000_000
    one = make_splits(FastaFile(bundled_dna("chr20_train")), val_fraction=0.05)
    assert one.train == [Region("chr20_train", 0, 1_900_000)]
    assert one.val == [Region("chr20_train", 1_900_000, 2_000_000)]
    sampler = WindowSampler(g, one.train, 4096, seed=0)
    assert all(w.end <= 1_900_000 for w in (next(sampler) for _ in range(50)))
