"""Windows and batches: reverse complement, loss weights, seeded sampling, exact resume, tiling, N policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from focus_nemo.data import (
    FastaFile,
    FastaWarning,
    Region,
    TileDataset,
    TrainWindowDataset,
    Window,
    WindowSampler,
    bundled_dna,
    loss_weights,
    make_batch,
    reverse_complement,
)
from focus_nemo.focus.loss import split_case


def write_fasta(path, records: dict[str, bytes]) -> FastaFile:
    path.write_bytes(b"".join(b">" + k.encode() + b"\n" + v + b"\n" for k, v in records.items()))
    return FastaFile(path)


def random_dna(n: int, seed: int, alphabet: bytes = b"ACGTacgt") -> bytes:
    rng = np.random.default_rng(seed)
    return np.frombuffer(alphabet, np.uint8)[rng.integers(len(alphabet), size=n)].tobytes()


@pytest.fixture
def genome(tmp_path) -> FastaFile:
    return write_fasta(tmp_path / "g.fa", {"chr1": random_dna(3000, 1), "chr2": random_dna(1000, 2)})


def windows_equal(a: Window, b: Window) -> bool:
    return (a.chrom, a.start, a.end, a.strand, a.index, a.n_skipped) == (b.chrom, b.start, b.end, b.strand, b.index,
                                                                         b.n_skipped) and np.array_equal(a.seq, b.seq)


def batches_equal(a, b) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in a._TENSORS) and (
        a.chrom, a.strand, a.step, a.n_skipped) == (b.chrom, b.strand, b.step, b.n_skipped)


# -- reverse complement, weights, batch layout ---------------------------------------------------------------------


def test_reverse_complement_iupac_and_case():
    assert reverse_complement(b"ACGTRYKMSWBDHVN") == b"NBDHVWSKMRYACGT"
    assert reverse_complement(b"aacGTn") == b"nACgtt"
    arr = np.frombuffer(b"ACGTRYKMSWBDHVNacgtrykmswbdhvn", np.uint8)
    out = reverse_complement(arr)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    assert np.array_equal(reverse_complement(out), arr)  # round trip
    assert np.array_equal(np.char.isupper(out.tobytes().decode()), np.char.isupper(arr.tobytes().decode()))


def test_reverse_complement_round_trip_random():
    seq = random_dna(10_000, 3, b"ACGTNRYKMSWBDHVacgtnrykmswbdhv")
    assert reverse_complement(reverse_complement(seq)) == seq


def test_loss_weights_by_hand():
    raw = np.frombuffer(b"ACgtNRan", np.uint8)
    assert loss_weights(raw, 0.1).tolist() == pytest.approx([1, 1, 0.1, 0.1, 0, 0, 0.1, 0])
    b = make_batch([Window("chrT", 10, 18, "+", raw.copy())], lowercase_weight=0.25)
    assert b.tokens.dtype == torch.int64 and b.tokens.shape == (1, 8)
    assert bytes(b.tokens[0].tolist()) == b"ACGTNRAN"  # inputs upper-cased, IUPAC kept
    assert bytes(b.raw[0].tolist()) == b"ACgtNRan"
    # Targets are the next base: input i predicts target i = base i+1.
    assert bytes(b.targets[0].tolist()) == b"CGTNRAN"
    assert b.loss_weight.dtype == torch.float32 and b.loss_weight.shape == (1, 7)
    assert b.loss_weight[0].tolist() == pytest.approx([1, 0.25, 0.25, 0, 0, 0.25, 0])
    assert b.chrom == ["chrT"] and b.start.tolist() == [10] and b.strand == ["+"]


def test_batch_agrees_with_the_loss_conventions():
    raw = np.frombuffer(random_dna(4 * 64, 4, b"ACGTacgtNnRy"), np.uint8).reshape(4, 64)
    b = make_batch([Window("c", 0, 64, "+", r.copy()) for r in raw], lowercase_weight=0.1)
    tokens, weight = split_case(b.raw, 0.1)
    assert torch.equal(tokens, b.tokens) and torch.equal(tokens[:, 1:], b.targets)
    assert torch.allclose(weight[:, 1:], b.loss_weight)


def test_make_batch_rejects_ragged_or_tiny():
    a = Window("c", 0, 4, "+", np.frombuffer(b"ACGT", np.uint8).copy())
    with pytest.raises(ValueError, match="different lengths"):
        make_batch([a, Window("c", 0, 3, "+", np.frombuffer(b"ACG", np.uint8).copy())])
    with pytest.raises(ValueError, match="at least 2"):
        make_batch([Window("c", 0, 1, "+", np.frombuffer(b"A", np.uint8).copy())])


# -- random windows --------------------------------------------------------------------------------------------------


def test_sampler_is_seeded_and_pure(genome):
    a = WindowSampler(genome, ["chr1", "chr2"], 100, seed=7, rc_prob=0.5)
    b = WindowSampler(genome, ["chr1", "chr2"], 100, seed=7, rc_prob=0.5)
    first = [next(a) for _ in range(20)]
    assert all(windows_equal(x, next(b)) for x in first)
    assert windows_equal(a.sample(13), first[13])  # window i does not depend on what was drawn before
    other = WindowSampler(genome, ["chr1", "chr2"], 100, seed=8, rc_prob=0.5)
    assert not all(windows_equal(x, next(other)) for x in first)


def test_sampler_windows_match_the_file_on_both_strands(genome):
    s = WindowSampler(genome, ["chr1", "chr2"], 50, seed=1, rc_prob=0.5)
    strands = set()
    for _ in range(40):
        w = next(s)
        plus = genome.fetch(w.chrom, w.start, w.end)
        assert np.array_equal(w.seq, plus if w.strand == "+" else reverse_complement(plus))
        strands.add(w.strand)
    assert strands == {"+", "-"}
    assert all(next(WindowSampler(genome, ["chr1"], 50, rc_prob=1.0)).strand == "-" for _ in range(3))


def test_sampler_is_uniform_over_starts(tmp_path):
    g = write_fasta(tmp_path / "u.fa", {"a": b"A" * 1099, "b": b"C" * 3099})
    s = WindowSampler(g, ["a", "b"], 100, seed=0)
    chroms = [next(s).chrom for _ in range(2000)]
    share_a = chroms.count("a") / len(chroms)
    assert abs(share_a - 1000 / 4000) < 0.04  # 1000 and 3000 valid starts
    starts = np.array([s.sample(i).start for i in range(2000) if s.sample(i).chrom == "b"])
    assert starts.min() >= 0 and starts.max() <= 3099 - 100
    assert abs(starts.mean() - 1499.5) < 100


def test_sampler_exact_resume(genome):
    a = WindowSampler(genome, ["chr1", Region("chr2", 100, 900)], 64, seed=3, rc_prob=0.3)
    for _ in range(11):
        next(a)
    state = a.state_dict()
    rest = [next(a) for _ in range(15)]
    b = WindowSampler(genome, ["chr1", Region("chr2", 100, 900)], 64, seed=3, rc_prob=0.3)
    b.load_state_dict(state)
    assert b.step == 11 and b.stats.yielded == 11
    assert all(windows_equal(x, next(b)) for x in rest)
    with pytest.raises(ValueError, match="saved seed 3"):
        WindowSampler(genome, ["chr1", Region("chr2", 100, 900)], 64, seed=4, rc_prob=0.3).load_state_dict(state)
    c = WindowSampler(genome, ["chr1"], 64, seed=3, rc_prob=0.3)
    with pytest.raises(ValueError, match="different configuration.*regions"):
        c.load_state_dict(state)


def test_train_dataset_exact_resume_and_layout(genome):
    ds = TrainWindowDataset(WindowSampler(genome, ["chr1", "chr2"], 32, seed=5, rc_prob=0.5), batch_size=3,
                            lowercase_weight=0.1)
    it = iter(ds)
    seen = [next(it) for _ in range(4)]
    assert [b.step for b in seen] == [0, 1, 2, 3] and ds.state_dict()["step"] == 4
    assert seen[0].tokens.shape == (3, 32) and seen[0].targets.shape == (3, 31)
    assert seen[1].index.tolist() == [3, 4, 5]
    state = ds.state_dict()
    expected = [next(it) for _ in range(3)]
    resumed = TrainWindowDataset(WindowSampler(genome, ["chr1", "chr2"], 32, seed=5, rc_prob=0.5), batch_size=3)
    resumed.load_state_dict(state)
    got = iter(resumed)
    assert all(batches_equal(e, next(got)) for e in expected)
    wrong = TrainWindowDataset(WindowSampler(genome, ["chr1", "chr2"], 32, seed=6, rc_prob=0.5), batch_size=3)
    with pytest.raises(ValueError, match="seed"):
        wrong.load_state_dict(state)
    bigger = TrainWindowDataset(WindowSampler(genome, ["chr1", "chr2"], 32, seed=5, rc_prob=0.5), batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        bigger.load_state_dict(state)


def test_ranks_get_disjoint_windows(genome):
    def indices(rank):
        ds = TrainWindowDataset(WindowSampler(genome, ["chr1"], 32, seed=0), batch_size=2, rank=rank, world_size=2,
                                num_steps=3)
        return [i for b in ds for i in b.index.tolist()]

    r0, r1 = indices(0), indices(1)
    assert r0 == [0, 1, 4, 5, 8, 9] and r1 == [2, 3, 6, 7, 10, 11]


def test_dataloader_workers_give_the_same_stream(genome):
    def make():
        return TrainWindowDataset(WindowSampler(genome, ["chr1", "chr2"], 48, seed=2, rc_prob=0.5), batch_size=2,
                                  num_steps=6)

    in_process = list(make())
    genome.fetch("chr1", 0, 10)  # an open handle is inherited by the forked workers: each must reopen its own
    loader = DataLoader(make(), batch_size=None, num_workers=2, multiprocessing_context="fork")
    from_workers = list(loader)
    assert [b.step for b in from_workers] == list(range(6))
    assert all(batches_equal(a, b) for a, b in zip(in_process, from_workers, strict=True))


# -- N runs, short and empty regions ---------------------------------------------------------------------------------


def test_windows_with_too_many_n_are_skipped_and_counted(tmp_path):
    seq = random_dna(600, 9, b"ACGT") + b"N" * 600 + random_dna(600, 10, b"ACGT")
    g = write_fasta(tmp_path / "gap.fa", {"chr1": seq})
    s = WindowSampler(g, ["chr1"], 100, seed=0, max_n_fraction=0.1)
    ds = TrainWindowDataset(s, batch_size=8, num_steps=10)
    batches = list(ds)
    n_frac = [(b.raw == ord("N")).float().mean(1).max().item() for b in batches]
    assert max(n_frac) <= 0.1
    skipped = sum(b.n_skipped for b in batches)
    assert skipped > 0 and s.stats.skipped_n == skipped and s.stats.yielded == 80
    assert s.stats.skipped_by_chrom == {"chr1": skipped}
    assert "skipped for N" in s.stats.report()
    loose = WindowSampler(g, ["chr1"], 100, seed=0, max_n_fraction=1.0)
    assert all(next(loose).n_skipped == 0 for _ in range(50))


def test_only_n_is_an_error_naming_the_regions(tmp_path):
    g = write_fasta(tmp_path / "allN.fa", {"chrN": b"N" * 500})
    s = WindowSampler(g, ["chrN"], 100, max_draws=50)
    with pytest.raises(ValueError, match=r"50 windows in a row .*chrN:1-500.*allN\.fa"):
        next(s)
    with pytest.raises(ValueError, match=r"every tile of chrN:1-500 has more than 10% N"):
        TileDataset(g, ["chrN"], 100)


def test_short_and_empty_records_skip_or_error(tmp_path):
    g = write_fasta(tmp_path / "mixed.fa", {"long": random_dna(500, 1), "tiny": b"ACGT", "void": b""})
    with pytest.warns(FastaWarning) as rec:
        s = WindowSampler(g, ["long", "tiny", "void"], 100)
    messages = " | ".join(str(w.message) for w in rec)
    assert "'void'" in messages and "tiny:1-4" in messages and "mixed.fa" in messages
    assert [str(r) for r in s.regions] == ["long:1-500"]
    with pytest.raises(ValueError, match=r"shorter than the window of 100 bases: tiny:1-4"):
        WindowSampler(g, ["long", "tiny"], 100, short_region="error")
    with pytest.raises(ValueError, match="no region holds a full window"), pytest.warns(FastaWarning):
        WindowSampler(g, ["tiny"], 100)
    with pytest.raises(ValueError, match="ends beyond record 'long'"):
        WindowSampler(g, [Region("long", 0, 501)], 100)


def test_missing_record_in_sampler_lists_records(genome):
    with pytest.raises(KeyError, match="no record 'chr9'.*chr1, chr2"):
        WindowSampler(genome, ["chr9"], 10)


# -- evaluation tiles ------------------------------------------------------------------------------------------------


def test_tiles_are_deterministic_and_counted(tmp_path):
    seq = random_dna(1000, 11, b"ACGT")
    seq = seq[:300] + b"N" * 100 + seq[400:]
    g = write_fasta(tmp_path / "t.fa", {"chr1": seq, "chr2": random_dna(250, 12)})
    t = TileDataset(g, ["chr1", "chr2"], 100)
    assert t.tiles == [("chr1", s) for s in (0, 100, 200, 400, 500, 600, 700, 800, 900)] + [("chr2", 0), ("chr2", 100)]
    assert t.stats == {"tiles": 12, "kept": 11, "skipped_n": 1, "tail_bases_not_covered": 50}
    w = t[3]
    assert (w.chrom, w.start, w.strand) == ("chr1", 400) + ("+",) and w.seq.tobytes() == seq[400:500]
    strided = TileDataset(g, ["chr1:1-1000"], 100, stride=250, max_n_fraction=1.0)
    assert [s for _, s in strided.tiles] == [0, 250, 500, 750]
    batches = list(t.batches(4))
    assert [len(b) for b in batches] == [4, 4, 3] and batches[0].targets.shape == (4, 99)
    loader = DataLoader(t, batch_size=4, collate_fn=t.collate)
    assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(loader, batches, strict=True))
    with pytest.raises(ValueError, match="would overlap"):
        TileDataset(g, ["chr1"], 100, stride=50)


# -- bundled real DNA ------------------------------------------------------------------------------------------------


def test_bundled_training_slice_sampling_skips_the_real_gap():
    g = FastaFile(bundled_dna("chr20_train"))
    s = WindowSampler(g, ["chr20_train"], 1024, seed=0, rc_prob=0.5)
    ds = TrainWindowDataset(s, batch_size=4, num_steps=8)
    batches = list(ds)
    assert all(b.tokens.shape == (4, 1024) for b in batches)
    assert all(int((b.raw == ord("N")).sum(1).max()) <= 102 for b in batches)
    region = Region("chr20_train", 1_880_000, 1_960_000)  # around the 50 kb gap at 1,897,085-1,947,085
    tiles = TileDataset(g, [region], 1024)
    covered = g.fetch("chr20_train", region.start, region.start + 78 * 1024)
    n_per_tile = (covered == ord("N")).reshape(78, 1024).sum(1)
    kept, skipped = int((n_per_tile <= 102).sum()), int((n_per_tile > 102).sum())
    assert tiles.stats == {"tiles": 78, "kept": kept, "skipped_n": skipped, "tail_bases_not_covered": 128}
    assert 45 < tiles.stats["skipped_n"] < 52
