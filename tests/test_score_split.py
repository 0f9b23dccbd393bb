"""Long records split into segments (`focus_nemo.scoring.segments`): the same files as an unsplit run,
exact scores when every warm-up reaches the record's start, resume by segment, settings checked."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import random_dna

from focus_nemo import cli
from focus_nemo.scoring import ScoringError, load_scores, load_scoring_model, read_tsv, score_fasta, segments
from focus_nemo.scoring.fasta import add_score_fasta_arguments

MODEL = ("random:tiny", None, 4, 16, "float32", "cpu")
SIZE = 512


@pytest.fixture(scope="module")
def model():
    return load_scoring_model(*MODEL)


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("split") / "g.fa"
    path.write_bytes(b">long\n" + random_dna(2000, 1) + b"\n>short\n" + random_dna(300, 2) + b"\n")
    return path


def run(model, genome, out, **kw):
    fm, k, window = model
    return score_fasta(genome, out, fm, k=k, window=window, chunk_size=64, formats="both", progress=False, **kw)


@pytest.fixture(scope="module")
def whole(model, genome, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "scores"
    run(model, genome, out)
    return out


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_split_run_writes_the_unsplit_files_and_with_full_warm_up_the_same_scores(model, genome, whole, tmp_path):
    out = tmp_path / "split"
    done = run(model, genome, out, split_records=SIZE, split_overlap=5000)
    assert done.scored == ["long", "short"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())
    for name in ("long", "short"):
        a, meta_a = load_scores(whole / f"{name}.npz")
        b, meta_b = load_scores(out / f"{name}.npz")
        assert a.shape == b.shape and a.dtype == b.dtype and meta_a == meta_b
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    m = manifest(out)
    assert m["settings"]["split_records"] == SIZE and m["settings"]["split_overlap"] == 5008  # rounded up to W
    assert m["records"]["long"]["split"] == {"size": SIZE, "overlap": 5008, "segments": 4}
    assert "split" not in m["records"]["short"] and not m.get("segments")
    assert (out / "long.bedgraph.gz").read_bytes()[:10] == (whole / "long.bedgraph.gz").read_bytes()[:10]


def test_small_overlap_changes_scores_only_after_segment_starts_most_near_them(model, genome, whole, tmp_path):
    out = tmp_path / "split"
    run(model, genome, out, split_records=SIZE, split_overlap=64)
    a, _ = load_scores(whole / "long.npz")
    b, _ = load_scores(out / "long.npz")
    diff = np.abs(np.nan_to_num(a) - np.nan_to_num(b))
    assert not diff[:SIZE].any()  # the first segment is the unsplit stream
    for start in range(SIZE, 2000, SIZE):
        seg = diff[start: min(2000, start + SIZE)]
        assert seg[:64].max() > seg[-64:].max() > 0
    assert diff.mean() < 0.05 and diff.max() < 0.5


def test_split_settings_are_checked_before_anything_is_written(model, genome, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(ScoringError, match=r"split_records \(--split-records\).*W=16, got 500"):
        run(model, genome, out, split_records=500)
    with pytest.raises(ScoringError, match=r"split_overlap \(--split-overlap\).*got -16"):
        run(model, genome, out, split_records=SIZE, split_overlap=-16)
    assert not out.exists()
    p = cli.parser("x")
    add_score_fasta_arguments(p)
    for bad in (["--split-records", "0"], ["--split-overlap", "-5"]):
        with pytest.raises(SystemExit):
            p.parse_args(["--fasta", "x", "--out", "y", *bad])
        assert bad[0] in capsys.readouterr().err


def test_resume_keeps_finished_segments_and_refuses_other_split_settings(model, genome, tmp_path, monkeypatch):
    out, clean = tmp_path / "out", tmp_path / "clean"
    run(model, genome, clean, split_records=SIZE, split_overlap=64)
    scored, real = [], segments.score_segment

    def stop_on_third(job, fm, seg, advance):
        if len(scored) == 2:
            raise KeyboardInterrupt
        scored.append(seg.start)
        return real(job, fm, seg, advance)

    monkeypatch.setattr(segments, "score_segment", stop_on_third)
    with pytest.raises(KeyboardInterrupt):
        run(model, genome, out, split_records=SIZE, split_overlap=64)
    m = manifest(out)
    assert m["complete"] is False and "long" not in m["records"] and len(m["segments"]["long"]) == 2
    row = {r["record"]: r for r in read_tsv(out / "summary.tsv")}["long"]
    assert row["status"] == "pending" and "2 segment(s) scored, kept" in row["note"]
    assert not list(out.glob("long.*"))

    for bad, name in (({"split_records": 1024, "split_overlap": 64}, "split_records"),
                      ({"split_records": SIZE, "split_overlap": 128}, "split_overlap"), ({}, "split_records")):
        with pytest.raises(ScoringError, match=rf"different scoring settings \(.*{name}: \d+ in the directory"):
            run(model, genome, out, resume=True, **bad)

    first = sorted(scored)
    scored.clear()
    monkeypatch.setattr(segments, "score_segment", lambda job, fm, seg, advance: scored.append(seg.start)
                        or real(job, fm, seg, advance))
    run(model, genome, out, split_records=SIZE, split_overlap=64, resume=True)
    assert sorted(scored + first) == [0, 512, 1024, 1536] and not set(scored) & set(first)
    assert manifest(out)["complete"] is True and not manifest(out).get("segments")
    assert not list(out.glob(".*segment*"))
    for name in ("long.npz", "long.bedgraph.gz", "short.npz", "short.bedgraph.gz"):
        assert (out / name).read_bytes() == (clean / name).read_bytes()


def test_two_workers_score_the_segments_of_one_record_into_the_single_process_files(genome, tmp_path):
    import functools

    single, out = tmp_path / "single", tmp_path / "workers"
    run(load_scoring_model(*MODEL), genome, single, split_records=SIZE, split_overlap=64, records=["long"])
    done = score_fasta(genome, out, None, k=4, window=16, chunk_size=64, formats="both", progress=False,
                       records=["long"], workers=2, threads=2, split_records=SIZE, split_overlap=64,
                       model_factory=functools.partial(load_scoring_model, *MODEL))
    assert done.scored == ["long"] and manifest(out)["info"]["workers"] == 2
    for name in ("long.npz", "long.bedgraph.gz"):
        assert (out / name).read_bytes() == (single / name).read_bytes()


def test_torchrun_two_groups_score_the_segments_of_one_record(genome, tmp_path):
    from test_score_workers import recipe

    args = ["--fasta", str(genome), "--checkpoint", "random:tiny", "--adapter", "none", "--k", "4", "--window", "16",
            "--chunk-size", "64", "--threads", "1", "--format", "both", "--split-records", str(SIZE),
            "--split-overlap", "64"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert recipe(*args, "--out", str(one), log=tmp_path / "one.log").returncode == 0
    assert recipe(*args, "--out", str(two), log=tmp_path / "two.log", torchrun=2).returncode == 0, \
        (tmp_path / "two.log").read_text()[-3000:]
    assert manifest(two)["info"]["data_parallel"] == 2
    for name in ("long.npz", "long.bedgraph.gz", "short.npz"):
        assert (two / name).read_bytes() == (one / name).read_bytes()
