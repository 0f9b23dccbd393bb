"""Whole-record FASTA scoring: values against the one-pass forward, NaN/count rules, output files,
resume (in process and after a real SIGKILL), settings checks, bounded reads."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from Bio import bgzf
from conftest import random_dna, stressed_model

from focus_nemo.data import FastaWarning
from focus_nemo.focus import FocusConfig, FocusModel
from focus_nemo.scoring import (
    SUMMARY_COLUMNS,
    LoglikStream,
    ScoringError,
    load_scores,
    read_tsv,
    safe_stem,
    score_fasta,
    sequence_loglik,
)

ROOT = Path(__file__).resolve().parents[1]
K, W = 4, 16


def write_fasta(path: Path, records: dict[str, bytes], width: int = 50) -> Path:
    with open(path, "wb") as f:
        for name, seq in records.items():
            f.write(b">" + name.encode() + b" test record\n")
            f.write(b"".join(seq[i: i + width] + b"\n" for i in range(0, len(seq), width)))
    return path


def reference_scores(fm, seq: bytes, k: int = K, window: int = W) -> np.ndarray:
    """log p(base_t | bases < t) from ONE one-pass forward over the upper-cased sequence."""
    tokens = torch.tensor([list(seq.upper())])
    with torch.no_grad():
        lp = fm(tokens, k=k, window=window).float().log_softmax(-1)[0]
    out = np.full(len(seq), np.nan, dtype=np.float32)
    out[1:] = lp[:-1].gather(1, tokens[0, 1:, None])[:, 0].numpy()
    out[[b not in b"ACGT" for b in seq.upper()]] = np.nan
    return out


def read_bedgraph(path: Path) -> list[tuple[str, int, int, float]]:
    with gzip.open(path, "rt") as f:
        return [(c, int(s), int(e), float(v)) for c, s, e, v in (line.rstrip("\n").split("\t") for line in f)]


@pytest.fixture
def fm() -> FocusModel:
    """Tiny stressed base; Focus parameters perturbed so the compressed memory differs from the base's."""
    model = FocusModel(stressed_model(), FocusConfig(k=K, window=W)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.focus_parameters().values():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.fixture
def two_records(tmp_path) -> tuple[Path, dict[str, bytes]]:
    recs = {"chrA": random_dna(150, 1), "chrB": random_dna(37, 2)}
    return write_fasta(tmp_path / "two.fa", recs), recs


def test_scores_equal_one_pass_forward_and_files_round_trip(fm, two_records, tmp_path):
    fasta, recs = two_records
    out = tmp_path / "out"
    run = score_fasta(fasta, out, fm, formats="both", chunk_size=10, read_size=23, progress=False)
    assert run.scored == ["chrA", "chrB"] and run.skipped == []
    summary = {r["record"]: r for r in read_tsv(out / "summary.tsv")}
    assert list(read_tsv(out / "summary.tsv")[0]) == list(SUMMARY_COLUMNS)
    for name, seq in recs.items():
        ll, meta = load_scores(out / f"{name}.npz")
        assert ll.dtype == np.float32 and ll.shape == (len(seq),)
        assert meta["record"] == name and meta["units"] == "nat" and (meta["k"], meta["window"]) == (K, W)
        want = reference_scores(fm, seq)
        assert np.isnan(ll[0]) and not np.isnan(ll[1:]).any()
        np.testing.assert_allclose(ll, want, atol=1e-4, rtol=0)
        # bedGraph: 0-based half-open, one line per scored base, values parse back to the same float32
        lines = read_bedgraph(out / f"{name}.bedgraph.gz")
        assert [(c, s, e) for c, s, e, _ in lines] == [(name, p, p + 1) for p in range(1, len(seq))]
        assert np.array_equal(np.array([v for *_, v in lines], dtype=np.float32), ll[1:])
        # summary.tsv totals
        row = summary[name]
        total = float(ll[1:].astype(np.float64).sum())
        assert int(row["length"]) == len(seq) and int(row["scored"]) == len(seq) - 1
        assert int(row["not_scored"]) == 1 and int(row["n_bases"]) == 0
        assert float(row["sum_ll_nats"]) == pytest.approx(total, abs=1e-5)
        mean = total / (len(seq) - 1)
        assert float(row["mean_ll_nats"]) == pytest.approx(mean, abs=1e-6)
        assert float(row["bits_per_base"]) == pytest.approx(-mean / math.log(2), abs=1e-6)
        assert float(row["perplexity"]) == pytest.approx(math.exp(-mean), rel=1e-6)
        assert float(row["seconds"]) > 0 and float(row["bases_per_s"]) > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["k"] == K and manifest["settings"]["formats"] == ["bedgraph", "npz"]
    assert sorted(manifest["records"]) == ["chrA", "chrB"]


def test_n_iupac_lowercase_are_nan_and_counted(fm, tmp_path):
    seq = b"NACGTNNacgtRYAcgtnnACGTAkGT" + random_dna(30, 3) + b"acgtTTGCA"
    fasta = write_fasta(tmp_path / "n.fa", {"chrN": seq, "chrL": seq.lower(), "chrU": seq.upper()})
    out = tmp_path / "out"
    score_fasta(fasta, out, fm, formats="both", chunk_size=7, read_size=11, progress=False)
    ll, meta = load_scores(out / "chrN.npz")
    up = seq.upper()
    not_acgt = np.array([b not in b"ACGT" for b in up])
    assert np.array_equal(np.isnan(ll), not_acgt | (np.arange(len(seq)) == 0))
    np.testing.assert_allclose(ll, reference_scores(fm, seq), atol=1e-4, rtol=0)
    # case changes nothing but the counts: the model reads upper-cased bases
    np.testing.assert_array_equal(load_scores(out / "chrL.npz")[0], ll)
    np.testing.assert_array_equal(load_scores(out / "chrU.npz")[0], ll)
    row = {r["record"]: r for r in read_tsv(out / "summary.tsv")}["chrN"]
    n_n = sum(b in b"Nn" for b in seq)
    n_iupac = sum(b in b"RYKMSWBDHVrykmswbdhv" for b in seq)
    lower = np.array([chr(b).islower() for b in seq])
    assert (int(row["n_bases"]), int(row["iupac_bases"])) == (n_n, n_iupac) == (5, 3)
    assert int(row["scored"]) == int((~np.isnan(ll)).sum()) == len(seq) - n_n - n_iupac  # first base is N
    assert int(row["not_scored"]) == n_n + n_iupac
    assert int(row["soft_masked"]) == int(lower.sum())
    assert int(row["soft_masked_scored"]) == int((lower & ~np.isnan(ll)).sum())
    assert meta["n_bases"] == n_n and meta["first_base_acgt"] is False
    # bedGraph has exactly the scored positions
    starts = [s for _, s, _, _ in read_bedgraph(out / "chrN.bedgraph.gz")]
    assert starts == np.flatnonzero(~np.isnan(ll)).tolist()
    row_u = {r["record"]: r for r in read_tsv(out / "summary.tsv")}["chrU"]
    assert int(row_u["soft_masked"]) == 0 and float(row_u["sum_ll_nats"]) == float(row["sum_ll_nats"])


def test_gzip_and_bgzip_inputs_score_like_plain(fm, two_records, tmp_path):
    fasta, recs = two_records
    text = fasta.read_bytes()
    gz = tmp_path / "two_gz.fa.gz"
    gz.write_bytes(gzip.compress(text))
    bgz = tmp_path / "two_bgz.fa.gz"
    with bgzf.BgzfWriter(str(bgz), "wb") as w:
        w.write(text)
    score_fasta(fasta, tmp_path / "plain", fm, progress=False)
    for src in (gz, bgz):
        score_fasta(src, tmp_path / src.stem, fm, progress=False)
        for name in recs:
            np.testing.assert_array_equal(load_scores(tmp_path / src.stem / f"{name}.npz")[0],
                                          load_scores(tmp_path / "plain" / f"{name}.npz")[0])


def test_record_subset_with_chr_aliases(fm, tmp_path):
    fasta = write_fasta(tmp_path / "ens.fa", {"1": random_dna(40, 4), "2": random_dna(30, 5), "MT": random_dna(20, 6)})
    run = score_fasta(fasta, tmp_path / "out", fm, records=["chrMT", "chr1"], progress=False)
    assert run.scored == ["MT", "1"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".npz") == ["1.npz", "MT.npz"]


def test_reads_and_model_calls_are_bounded(fm, two_records, tmp_path, monkeypatch):
    from focus_nemo.data import open_genome

    fasta, recs = two_records
    genome = open_genome(fasta)
    reads, calls = [], []
    real_fetch, real_chunk = genome.fetch, fm.forward_chunk
    monkeypatch.setattr(genome, "fetch", lambda n, s=0, e=None: reads.append((n, s, e)) or real_fetch(n, s, e))
    monkeypatch.setattr(fm, "forward_chunk", lambda t, st: calls.append(t.shape[1]) or real_chunk(t, st))
    score_fasta(genome, tmp_path / "out", fm, chunk_size=9, read_size=20, progress=False)
    scoring_reads = [(n, s, e) for n, s, e in reads if e is not None]
    assert max(e - s for _, s, e in scoring_reads) <= 20
    assert sorted(s for n, s, _ in scoring_reads if n == "chrA") == list(range(0, 150, 20))
    assert max(calls) <= 9 and sum(calls) == sum(len(s) for s in recs.values())


def test_stream_pieces_of_any_size_equal_one_pass(fm):
    seq = random_dna(101, 7, b"ACGTNacgt")
    whole = sequence_loglik(fm, seq, chunk_size=1000)
    stream = LoglikStream(fm, K, W, chunk_size=5)
    pieces, cuts = [], [0, 1, 2, 17, 33, 64, 65, 101]
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        pieces.append(stream.feed(np.frombuffer(seq[a:b], np.uint8)))
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-5, rtol=0)
    np.testing.assert_allclose(whole, reference_scores(fm, seq), atol=1e-4, rtol=0)


def test_resume_skips_finished_records_and_matches_fresh_run(fm, two_records, tmp_path):
    fasta, _ = two_records
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    first = score_fasta(fasta, out, fm, records=["chrA"], formats="both", progress=False)
    assert first.scored == ["chrA"]
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("chrA.*")}
    run = score_fasta(fasta, out, fm, formats="both", resume=True, progress=False)
    assert run.skipped == ["chrA"] and run.scored == ["chrB"]
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("chrA.*")} == before
    score_fasta(fasta, fresh, fm, formats="both", progress=False)
    for name in ("chrA", "chrB"):
        np.testing.assert_array_equal(load_scores(out / f"{name}.npz")[0], load_scores(fresh / f"{name}.npz")[0])
        assert read_bedgraph(out / f"{name}.bedgraph.gz") == read_bedgraph(fresh / f"{name}.bedgraph.gz")
    cols = ("record", "length", "scored", "sum_ll_nats")
    assert [[r[c] for c in cols] for r in read_tsv(out / "summary.tsv")] == \
        [[r[c] for c in cols] for r in read_tsv(fresh / "summary.tsv")]
    again = score_fasta(fasta, out, fm, formats="both", resume=True, progress=False)
    assert again.scored == [] and again.skipped == ["chrA", "chrB"]


def test_resume_rescores_an_output_that_fails_its_checksum(fm, two_records, tmp_path):
    fasta, _ = two_records
    out = tmp_path / "out"
    score_fasta(fasta, out, fm, progress=False)
    good = (out / "chrB.npz").read_bytes()
    (out / "chrB.npz").write_bytes(good[:-10])  # truncated by something outside the run
    run = score_fasta(fasta, out, fm, resume=True, progress=False)
    assert run.skipped == ["chrA"] and run.scored == ["chrB"]
    assert (out / "chrB.npz").read_bytes() == good


def test_output_files_do_not_depend_on_the_clock(fm, two_records, tmp_path, monkeypatch):
    """Same scores, same bytes: zip entries and the gzip header carry a fixed date, not the wall clock."""
    fasta, _ = two_records
    score_fasta(fasta, tmp_path / "a", fm, records=["chrB"], formats="both", progress=False)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 86_400 * 400)
    monkeypatch.setattr(time, "localtime", lambda t=None: time.gmtime(real() + 86_400 * 400))
    score_fasta(fasta, tmp_path / "b", fm, records=["chrB"], formats="both", progress=False)
    for name in ("chrB.npz", "chrB.bedgraph.gz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with zipfile.ZipFile(tmp_path / "a" / "chrB.npz") as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert (tmp_path / "a" / "chrB.bedgraph.gz").read_bytes()[4:8] == bytes(4)  # gzip MTIME field


def test_settings_mismatch_and_existing_directory_are_errors(fm, two_records, tmp_path):
    fasta, recs = two_records
    out = tmp_path / "out"
    score_fasta(fasta, out, fm, records=["chrA"], progress=False)
    with pytest.raises(ScoringError, match=r"not empty.*--resume") as e:
        score_fasta(fasta, out, fm, progress=False)
    assert str(out) in str(e.value)
    with pytest.raises(ScoringError, match=r"different scoring settings \(k: 4 in the directory, 8 now\)"):
        score_fasta(fasta, out, fm, k=8, resume=True, progress=False)
    with pytest.raises(ScoringError, match=r"formats"):
        score_fasta(fasta, out, fm, formats="both", resume=True, progress=False)
    original = fm.focus_embedding.detach().clone()
    with torch.no_grad():
        fm.focus_embedding.add_(0.01)  # another adapter
    with pytest.raises(ScoringError, match=r"adapter_fingerprint"):
        score_fasta(fasta, out, fm, resume=True, progress=False)
    with torch.no_grad():
        fm.focus_embedding.copy_(original)
    original_bytes = fasta.read_bytes()
    changed = write_fasta(tmp_path / "changed.fa", {"chrA": recs["chrA"][:-1] + b"N", "chrB": recs["chrB"]})
    with pytest.raises(ScoringError, match=r"another FASTA input \(FASTA .*two\.fa in the directory, .*changed\.fa"):
        score_fasta(changed, out, fm, resume=True, progress=False)
    write_fasta(fasta, {"chrA": recs["chrA"][:-1] + b"N", "chrB": recs["chrB"]})  # same file, same size
    with pytest.raises(ScoringError, match=r"record 'chrA' was scored from a different sequence"):
        score_fasta(fasta, out, fm, resume=True, progress=False)
    write_fasta(fasta, {"chrA": recs["chrA"] + b"A", "chrB": recs["chrB"], "chrC": b"ACGT"})
    with pytest.raises(ScoringError) as e:
        score_fasta(fasta, out, fm, resume=True, progress=False)
    assert "size of" in str(e.value) and "record(s) new in the FASTA: chrC" in str(e.value)
    assert "length of chrA: 150 in the directory, 151 now" in str(e.value)
    fasta.write_bytes(original_bytes)
    assert score_fasta(fasta, out, fm, resume=True, progress=False).scored == ["chrB"]  # unchanged settings work
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ScoringError, match=r"no manifest\.json"):
        score_fasta(fasta, tmp_path / "other", fm, resume=True, progress=False)


def test_output_names_are_safe_and_unique(fm, tmp_path):
    assert safe_stem("chrUn_gl000220|ref/x") == "chrUn_gl000220_ref_x" and safe_stem(".hidden") == "_.hidden"
    fasta = write_fasta(tmp_path / "odd.fa", {"a|b": random_dna(20, 8), "a/b": random_dna(20, 9)})
    with pytest.raises(ScoringError, match=r"'a\|b' and 'a/b' map to the same output file name 'a_b'"):
        score_fasta(fasta, tmp_path / "out", fm, progress=False)
    score_fasta(fasta, tmp_path / "out", fm, records=["a|b"], progress=False)
    with pytest.raises(ScoringError, match=r"records 'a\|b' and 'a/b' map to the same output file name"):
        score_fasta(fasta, tmp_path / "out", fm, records=["a/b"], resume=True, progress=False)


def _cli():
    spec = importlib.util.spec_from_file_location("score_fasta_cli", ROOT / "recipes" / "score_fasta.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sigkill_mid_record_then_resume_equals_uninterrupted_run(tmp_path):
    recs = {"r0": random_dna(120, 10), "r1": random_dna(2500, 11), "r2": random_dna(2500, 12)}
    fasta = write_fasta(tmp_path / "three.fa", recs)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    common = ["--fasta", str(fasta), "--checkpoint", "random:tiny", "--adapter", "none", "--k", "8",
              "--window", "32", "--chunk-size", "64", "--format", "both", "--threads", "1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "recipes" / "score_fasta.py"), *common, "--out", str(killed)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:  # kill once r0 is finished and r1's temporary outputs are being written
            assert proc.poll() is None, f"scoring ended before it could be killed: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "r0 never appeared in the manifest"
            try:
                done = json.loads((killed / "manifest.json").read_text())["records"]
            except (OSError, ValueError):
                done = {}
            partial = list(killed.glob(".r1.npz.*.tmp"))
            if "r0" in done and partial:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = json.loads((killed / "manifest.json").read_text())["records"]
    assert list(done) == ["r0"] and not (killed / "r1.npz").exists() and partial[0].exists()
    # what a reader of the directory sees: a partial run, every requested record with its status
    assert json.loads((killed / "manifest.json").read_text())["complete"] is False
    assert [(r["record"], r["status"]) for r in read_tsv(killed / "summary.tsv")] == \
        [("r0", "scored"), ("r1", "pending"), ("r2", "pending")]

    cli = _cli()
    cli.main([*common, "--out", str(killed), "--resume"])
    assert not [p.name for p in killed.iterdir() if p.name.endswith(".tmp")]
    cli.main([*common, "--out", str(clean)])
    for name, seq in recs.items():
        got, want = load_scores(killed / f"{name}.npz")[0], load_scores(clean / f"{name}.npz")[0]
        assert got.shape == (len(seq),)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
        a, b = read_bedgraph(killed / f"{name}.bedgraph.gz"), read_bedgraph(clean / f"{name}.bedgraph.gz")
        assert [x[:3] for x in a] == [x[:3] for x in b]
        np.testing.assert_allclose([x[3] for x in a], [x[3] for x in b], atol=1e-6, rtol=0)
    manifest = json.loads((killed / "manifest.json").read_text())
    assert list(manifest["records"]) == ["r0", "r1", "r2"] and manifest["complete"] is True
    assert manifest["settings"] == json.loads((clean / "manifest.json").read_text())["settings"]


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("newline", [b"\r", b"\r\n", b"mixed"])
@pytest.mark.parametrize("bom", [False, True])
def test_fasta_from_other_systems_scores_like_lf(fm, two_records, tmp_path, newline, bom):
    fasta, recs = two_records
    text = fasta.read_bytes()
    if newline == b"mixed":
        lines = text.split(b"\n")[:-1]
        text = b"".join(line + (b"\r", b"\n", b"\r\n")[i % 3] for i, line in enumerate(lines))
    else:
        text = text.replace(b"\n", newline)
    other = tmp_path / "other.fa.gz"
    other.write_bytes(gzip.compress((b"\xef\xbb\xbf" if bom else b"") + text))
    score_fasta(fasta, tmp_path / "lf", fm, progress=False)
    run = score_fasta(other, tmp_path / "other", fm, progress=False)
    assert run.scored == list(recs)
    for name in recs:
        np.testing.assert_array_equal(load_scores(tmp_path / "other" / f"{name}.npz")[0],
                                      load_scores(tmp_path / "lf" / f"{name}.npz")[0])


def test_records_not_scored_are_in_the_summary_with_the_reason(fm, tmp_path):
    fasta = tmp_path / "mixed.fa"
    fasta.write_bytes(b">empty\n>ok\n" + random_dna(40, 3) + b"\n>only_n\nNNNNNNNNNN\n>one\nA\n")
    with pytest.warns(FastaWarning, match="empty"):
        run = score_fasta(fasta, tmp_path / "out", fm, progress=False)
    assert run.scored == ["ok", "only_n", "one"]
    rows = {r["record"]: r for r in read_tsv(tmp_path / "out" / "summary.tsv")}
    assert list(rows) == ["empty", "ok", "only_n", "one"]  # the FASTA's order
    assert (rows["ok"]["status"], int(rows["ok"]["scored"])) == ("scored", 39)
    assert rows["ok"]["flag"] == "above_max_bits_per_base"  # a random model: worse than a uniform guess
    assert rows["only_n"]["status"] == "nothing_scored" and "no A/C/G/T base" in rows["only_n"]["note"]
    assert "10 N" in rows["only_n"]["note"]
    assert rows["one"]["status"] == "nothing_scored" and "single base" in rows["one"]["note"]
    assert rows["empty"]["status"] == "skipped" and "empty record" in rows["empty"]["note"]
    assert int(rows["empty"]["length"]) == 0 and not (tmp_path / "out" / "empty.npz").exists()


def test_run_that_scores_nothing_is_an_error_unless_allowed(fm, tmp_path):
    fasta = tmp_path / "nothing.fa"
    fasta.write_bytes(b">gap\n" + b"N" * 30 + b"\n>blank\n>iupac\nRYKM\n")
    with pytest.warns(FastaWarning), pytest.raises(ScoringError) as e:
        score_fasta(fasta, tmp_path / "out", fm, progress=False)
    msg = str(e.value)
    assert "nothing was scored" in msg and "--allow-empty" in msg
    assert "gap: no A/C/G/T base" in msg and "blank: empty record" in msg and "iupac: no A/C/G/T" in msg
    rows = read_tsv(tmp_path / "out" / "summary.tsv")  # written before the error, with every reason
    assert [(r["record"], r["status"]) for r in rows] == [("gap", "nothing_scored"), ("blank", "skipped"),
                                                          ("iupac", "nothing_scored")]
    with pytest.warns(FastaWarning):
        run = score_fasta(fasta, tmp_path / "allowed", fm, progress=False, allow_empty=True)
    assert run.scored == ["gap", "iupac"] and all(r["scored"] == 0 for r in run.summary)
    # the command line: status 1 with the message, or 0 with --allow-empty
    cli = load_recipe("score_fasta")
    args = ["--fasta", str(fasta), "--checkpoint", "random:tiny", "--adapter", "none", "--k", "4", "--window", "16",
            "--no-progress"]
    with pytest.warns(FastaWarning), pytest.raises(SystemExit) as e:
        cli.main([*args, "--out", str(tmp_path / "cli")])
    assert "nothing was scored" in str(e.value.code)
    with pytest.warns(FastaWarning):
        cli.main([*args, "--out", str(tmp_path / "cli_allowed"), "--allow-empty"])


def test_horizon_option_bounds_memory_and_is_recorded(tmp_path, capsys):
    """--horizon: auto is the base's trained context, none the unbounded memory, bases a bounded one;
    scores equal the one-pass forward with that horizon, the manifest records it, a resume with
    another horizon is refused and a bad value names the option."""
    seq = random_dna(200, 7)
    fasta = write_fasta(tmp_path / "h.fa", {"chrH": seq})
    cli = load_recipe("score_fasta")
    args = ["--fasta", str(fasta), "--checkpoint", "random:tiny", "--adapter", "none", "--k", "4", "--window", "16",
            "--no-progress"]
    cli.main([*args, "--out", str(tmp_path / "h32"), "--horizon", "32"])
    cli.main([*args, "--out", str(tmp_path / "none"), "--horizon", "none"])
    cli.main([*args, "--out", str(tmp_path / "auto")])
    from focus_nemo.scoring import load_scoring_model

    fm, k, window = load_scoring_model("random:tiny", None, k=4, window=16, horizon=32)
    assert fm.config.horizon == 32
    bounded = load_scores(tmp_path / "h32" / "chrH.npz")[0]
    np.testing.assert_allclose(bounded, reference_scores(fm, seq), atol=2e-5, equal_nan=True)
    unbounded = load_scores(tmp_path / "none" / "chrH.npz")[0]
    assert np.nanmax(np.abs(bounded - unbounded)) > 1e-4  # 200 bases > horizon + W: the horizon changes scores
    np.testing.assert_array_equal(load_scores(tmp_path / "auto" / "chrH.npz")[0], unbounded)  # trained context >> 200
    manifests = {d: json.loads((tmp_path / d / "manifest.json").read_text())["settings"]
                 for d in ("h32", "none", "auto")}
    assert manifests["h32"]["horizon"] == 32 and "horizon" not in manifests["none"]
    fm_auto, _, _ = load_scoring_model("random:tiny", None, k=4, window=16, horizon="auto")
    assert manifests["auto"]["horizon"] == fm_auto.config.horizon == fm_auto.base.config.max_seqlen // 16 * 16 - 16
    with pytest.raises(SystemExit) as e:
        cli.main([*args, "--out", str(tmp_path / "h32"), "--horizon", "48", "--resume"])
    assert "horizon" in str(e.value.code)
    # By default an adapter's own horizon, local band and second level are used and recorded; a second
    # level without a horizon is refused by name.
    fm_a, _, _ = load_scoring_model("random:tiny", None, k=4, window=16, horizon=None)
    fm_a.config.horizon, fm_a.config.level2, fm_a.config.local = 48, 2, 1
    fm_a.add_level2_queries()
    adapter = fm_a.save_adapter(tmp_path / "adapter")
    own = ["--fasta", str(fasta), "--checkpoint", "random:tiny", "--adapter", str(adapter), "--no-progress"]
    cli.main([*own, "--out", str(tmp_path / "own")])
    settings = json.loads((tmp_path / "own" / "manifest.json").read_text())["settings"]
    got = (settings["horizon"], settings["local"], settings["level2"], settings["level2_pool"])
    assert got == (48, 1, 2, "trained")
    np.testing.assert_allclose(load_scores(tmp_path / "own" / "chrH.npz")[0], reference_scores(fm_a, seq), atol=2e-5,
                               equal_nan=True)
    with pytest.raises(SystemExit) as e:
        cli.main([*own, "--out", str(tmp_path / "own_none"), "--horizon", "none"])
    assert "FocusConfig.level2: 2 needs a horizon" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        cli.main([*args, "--out", str(tmp_path / "bad"), "--horizon", "24"])
    assert "FocusConfig.horizon: 24 is not a multiple of the window 16" in str(e.value.code)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main([*args, "--out", str(tmp_path / "bad2"), "--horizon", "far"])
    assert "--horizon: horizon: expected none, auto or a number of bases, got 'far'" in capsys.readouterr().err


def test_progress_in_a_batch_log_is_a_line_per_interval(caplog):
    """Off a terminal the progress is logged: a line per interval and per finished record, with the
    position, the rate of the interval and overall, memory and time left."""
    import logging

    from focus_nemo.scoring.outputs import LogProgress, progress_bar

    assert isinstance(progress_bar(True, interactive=False), LogProgress)
    assert not isinstance(progress_bar(True, interactive=True), LogProgress)
    now = [0.0]
    with caplog.at_level(logging.INFO, logger="focus_nemo.scoring"), \
            LogProgress(every_s=60, clock=lambda: now[0]) as bar:
        task = bar.add_task("scoring", total=1000)
        bar.update(task, description="chrA")
        for _ in range(4):  # 100 bases every 30 s: a line at 60 s and at 120 s
            now[0] += 30
            bar.advance(task, 100)
        bar.update(task, description="chrB")  # chrA's last bases (none since the last line): no line
        now[0] += 10
        bar.advance(task, 200)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("chrA: 200/1,000 bases (20.0%), 3 bases/s (overall 3), RSS ")
    assert lines[1].startswith("chrA: 400/1,000 bases (40.0%), 3 bases/s")
    assert lines[2].startswith("chrB: 600/1,000 bases (60.0%), 20 bases/s (overall 5)") and "min left" in lines[2]
    assert len(lines) == 3
