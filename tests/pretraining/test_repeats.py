"""Planted repeats: copies are where they say, of the kind they say, and reproducible from the rng."""

from __future__ import annotations

import numpy as np
import pytest

from focus_nemo.data.edits import indels, reverse_complement, substitute
from focus_nemo.pretraining import ChromWindows, RepeatConfig, plant_repeats


def _dna(n, seed=0):
    return np.frombuffer(b"ACGT", dtype=np.uint8)[np.random.default_rng(seed).integers(0, 4, n)].copy()


def test_reverse_complement_keeps_case_and_other_bytes():
    seq = np.frombuffer(b"ACGTNacgtR", dtype=np.uint8)
    assert reverse_complement(seq).tobytes() == b"RacgtNACGT"
    assert reverse_complement(reverse_complement(seq)).tobytes() == seq.tobytes()


def test_substitute_changes_bases_at_the_rate_and_never_to_themselves():
    seq = _dna(20_000)
    seq[::10] = ord("N")
    out = substitute(seq, 0.2, np.random.default_rng(1))
    changed = out != seq
    assert not changed[::10].any()  # N never changes
    frac = changed.sum() / (len(seq) - len(seq[::10]))
    assert 0.18 < frac < 0.22
    assert set(np.unique(out[changed]).tolist()) <= set(b"ACGT")
    low = substitute(np.frombuffer(b"acgt" * 1000, dtype=np.uint8), 1.0, np.random.default_rng(2))
    assert set(np.unique(low).tolist()) <= set(b"acgt")  # soft-masking kept


def test_indels_change_length_by_small_events():
    seq = _dna(10_000)
    out = indels(seq, 0.01, 3, np.random.default_rng(3))
    assert out.tobytes() != seq.tobytes()
    assert abs(len(out) - len(seq)) < 300
    assert indels(seq, 0.0, 3, np.random.default_rng(3)).tobytes() == seq.tobytes()


def test_exact_copies_are_found_at_their_distance():
    seq = _dna(4096, seed=4)
    cfg = RepeatConfig(fraction=1.0, coverage=0.5, min_len=200, max_len=200, exact=1, diverged=0, reverse=0)
    out, planted = plant_repeats(seq, cfg, np.random.default_rng(5))
    assert len(out) == len(seq)
    assert planted >= 200
    # a planted 200-mer occurs twice in the output; random DNA has no 200-mer twice
    kmers = {}
    for i in range(len(out) - 200 + 1):
        kmers.setdefault(out[i: i + 200].tobytes(), []).append(i)
    assert any(len(v) >= 2 for v in kmers.values())


def test_reverse_copies_and_fraction_zero():
    seq = _dna(4096, seed=6)
    cfg = RepeatConfig(fraction=1.0, coverage=0.2, min_len=300, max_len=300, exact=0, diverged=0, reverse=1)
    out, planted = plant_repeats(seq, cfg, np.random.default_rng(7))
    assert planted >= 300
    rc = reverse_complement(out).tobytes()
    hits = [i for i in range(0, len(out) - 300) if out[i: i + 300].tobytes() in rc]
    assert hits  # the source and its reverse-complement copy
    none, n = plant_repeats(seq, RepeatConfig(fraction=0.0), np.random.default_rng(7))
    assert n == 0 and none.tobytes() == seq.tobytes()


def test_coverage_is_bounded_and_draws_are_reproducible():
    seq = _dna(8192, seed=8)
    cfg = RepeatConfig(fraction=1.0, coverage=0.3)
    a = [plant_repeats(seq, cfg, np.random.default_rng(9)) for _ in range(2)]
    assert a[0][0].tobytes() == a[1][0].tobytes() and a[0][1] == a[1][1]
    for s in range(20):
        _, planted = plant_repeats(seq, cfg, np.random.default_rng(s))
        assert planted <= 0.3 * len(seq) + cfg.max_len


def test_windows_sampler_plants_and_counts():
    seq = _dna(50_000, seed=10)
    w = ChromWindows(seq, 2049, 0.01, np.random.default_rng(11), repeats=RepeatConfig(fraction=1.0, coverage=0.4))
    samples = [w.sample() for _ in range(8)]
    assert all(len(s) == 2049 for s in samples)
    assert w.planted > 0
    plain = ChromWindows(seq, 2049, 0.01, np.random.default_rng(11))
    assert plain.sample().tobytes() in seq.tobytes()


@pytest.mark.parametrize("field,value", [("fraction", 1.5), ("coverage", 1.0), ("min_len", 0),
                                         ("substitution_rate", (0.2, 0.1)), ("indel_max", 0)])
def test_bad_settings_name_the_field(field, value):
    cfg = RepeatConfig(**{field: value})
    with pytest.raises(ValueError, match=r"PretrainConfig\.repeats\.\w+"):
        cfg.check("PretrainConfig.repeats")
