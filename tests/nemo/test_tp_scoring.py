"""Whole-record FASTA scoring with the model split over two tensor-parallel ranks (torchrun) gives the
single-device scores, the same manifest settings and one set of outputs written by rank 0."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import perturb_focus_, require_nemo, stressed_model

from focus_nemo.scoring import load_scores, read_tsv

pytestmark = pytest.mark.nemo

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "score_fasta.py"
PATTERN = "SDH*SD*"  # two attention blocks
K, W = 16, 128
CHUNK = 100  # several model calls per record, a size dividing neither k nor W
# Lengths >= 300: NeMo's medium filter wraps around below 127 tokens.
RECORDS = {"rec1": 333, "chr2:alt": 410}  # the second one's file stem is chr2_alt
ATOL = 1e-4


def _recipe():
    spec = importlib.util.spec_from_file_location("score_fasta_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               **extra)
    return env


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """A tiny base checkpoint, a perturbed adapter for it and a two-record FASTA (lower case and an N included)."""
    from focus_nemo.evo2.checkpoint import save_evo2
    from focus_nemo.focus import FocusConfig, FocusModel

    root = tmp_path_factory.mktemp("tp_inputs")
    base = stressed_model(pattern=PATTERN, seed=3)
    save_evo2(base, root / "base")
    fm = FocusModel(base, FocusConfig(k=K, window=W)).eval()
    perturb_focus_(fm, seed=5)
    fm.save_adapter(root / "adapter")
    rng = np.random.default_rng(0)
    with open(root / "x.fa", "w") as f:
        for name, n in RECORDS.items():
            seq = bytearray(np.frombuffer(b"ACGT", np.uint8)[rng.integers(4, size=n)].tobytes())
            seq[40:60] = seq[40:60].lower()
            seq[200] = ord("N")
            f.write(f">{name}\n" + "\n".join(seq[i: i + 60].decode() for i in range(0, n, 60)) + "\n")
    return {"checkpoint": str(root / "base"), "adapter": str(root / "adapter"), "fasta": str(root / "x.fa")}


def _args(inputs: dict[str, str], out: Path, *extra: str) -> list[str]:
    return ["--fasta", inputs["fasta"], "--checkpoint", inputs["checkpoint"], "--adapter", inputs["adapter"],
            "--out", str(out), "--chunk-size", str(CHUNK), "--format", "both", "--no-progress", *extra]


@pytest.fixture(scope="module")
def single(inputs, tmp_path_factory) -> Path:
    """The single-device run's output directory."""
    out = tmp_path_factory.mktemp("single") / "scores"
    _recipe().main(_args(inputs, out, "--device", "cpu"))
    return out


def _torchrun(inputs, out: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(RECIPE),
         *_args(inputs, out, "--tensor-parallel", "2", *extra)],
        cwd=out.parent, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _max_diff(a: Path, b: Path) -> float:
    x, y = load_scores(a)[0], load_scores(b)[0]
    assert x.shape == y.shape and np.array_equal(np.isnan(x), np.isnan(y))
    return float(np.nanmax(np.abs(x - y)))


def test_tp2_scores_equal_single_device(inputs, single, tmp_path, capsys):
    """torchrun --nproc_per_node 2 ... --tensor-parallel 2: the same per-base scores, summary and manifest
    settings as the single-device run; only rank 0 writes; the single-device model resumes its directory."""
    require_nemo()
    tp = tmp_path / "tp" / "scores"
    tp.parent.mkdir()
    capsys.readouterr()
    proc = _torchrun(inputs, tp)
    # One report, from rank 0.
    assert proc.stdout.count("2 record(s) scored, 0 already finished") == 1, proc.stdout

    # One set of outputs, in --out only: the same files as the single-device run.
    assert sorted(p.name for p in tp.iterdir()) == sorted(p.name for p in single.iterdir())
    assert [p.name for p in tp.parent.iterdir()] == ["scores"]
    assert [p.name for p in tmp_path.iterdir()] == ["tp"]

    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (single, tp))
    assert m2["settings"] == m1["settings"]  # fingerprints of full tensors: independent of the TP size
    assert m2["info"]["tensor_parallel"] == 2 and "tensor_parallel" not in m1["info"]
    assert list(m2["records"]) == list(m1["records"]) == list(RECORDS)

    for name in RECORDS:
        stem = m1["records"][name]["stem"]
        a, meta_a = load_scores(single / f"{stem}.npz")
        b, meta_b = load_scores(tp / f"{stem}.npz")
        assert a.shape == b.shape == (RECORDS[name],)
        assert np.isnan(a).sum() == 2  # the first base and the N
        assert _max_diff(single / f"{stem}.npz", tp / f"{stem}.npz") <= ATOL, name
        assert meta_a == meta_b
        for key in ("length", "sequence_sha256"):
            assert m2["records"][name][key] == m1["records"][name][key]
    rows1, rows2 = read_tsv(single / "summary.tsv"), read_tsv(tp / "summary.tsv")
    assert [r["record"] for r in rows2] == [r["record"] for r in rows1] == list(RECORDS)
    for r1, r2 in zip(rows1, rows2, strict=True):
        for col in ("length", "scored", "not_scored", "n_bases", "iupac_bases", "soft_masked", "soft_masked_scored"):
            assert r1[col] == r2[col], col
        assert abs(float(r1["sum_ll_nats"]) - float(r2["sum_ll_nats"])) <= ATOL * int(r1["scored"])
        assert abs(float(r1["bits_per_base"]) - float(r2["bits_per_base"])) <= ATOL

    # Equal settings: the single-device model resumes the TP run's directory, every record finished.
    _recipe().main(_args(inputs, tp, "--device", "cpu", "--resume"))
    assert "0 record(s) scored, 2 already finished" in capsys.readouterr().out
    assert json.loads((tp / "manifest.json").read_text())["info"]["tensor_parallel"] == 1


def test_tp2_resumes_a_single_device_directory(inputs, single, tmp_path):
    """--resume at TP=2 in a single-device run's directory: rank 0 finds one record finished and one output
    missing, and every rank streams just the missing record."""
    require_nemo()
    out = tmp_path / "scores"
    shutil.copytree(single, out)
    (out / "chr2_alt.npz").unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith("rec1")}
    proc = _torchrun(inputs, out, "--resume")
    assert proc.stdout.count("1 record(s) scored, 1 already finished") == 1, proc.stdout
    assert proc.stderr.count("npz output of record chr2:alt is missing") == 1  # decided on rank 0 only
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith("rec1")} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single.iterdir())
    assert _max_diff(single / "chr2_alt.npz", out / "chr2_alt.npz") <= ATOL
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (single, out))
    assert m2["settings"] == m1["settings"] and list(m2["records"]) == ["rec1", "chr2:alt"]
    assert m2["records"]["rec1"] == m1["records"]["rec1"]
    assert m2["info"]["tensor_parallel"] == 2


def test_world_size_mismatch_is_a_clear_error(inputs, tmp_path, monkeypatch):
    """--tensor-parallel N outside torchrun, or with another number of processes, stops before any work."""
    proc = subprocess.run([sys.executable, str(RECIPE), *_args(inputs, tmp_path / "a", "--tensor-parallel", "2")],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "--tensor-parallel 2 needs 2 processes (or a multiple" in proc.stderr
    assert "but this process was not started by torchrun" in proc.stderr
    assert "torchrun --nproc_per_node 2" in proc.stderr

    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(SystemExit, match=r"--tensor-parallel 2 needs 2 processes \(or a multiple.*torchrun started 3"):
        _recipe().main(_args(inputs, tmp_path / "b", "--tensor-parallel", "2"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_other_ranks_follow_rank0_and_write_nothing(inputs, tmp_path, monkeypatch):
    """A rank other than 0 (simulated, single-device model) streams exactly the records rank 0 sends, touches
    no file, and stops with rank 0's message when rank 0 could not start."""
    import focus_nemo.scoring as scoring
    from focus_nemo.focus import FocusConfig, FocusModel
    from focus_nemo.scoring import parallel

    fm = FocusModel(stressed_model(), FocusConfig(k=4, window=16)).eval()
    fm.tensor_parallel = 2  # a shard of a model split over both ranks
    calls = []
    forward_chunk = fm.forward_chunk
    monkeypatch.setattr(fm, "forward_chunk", lambda t, st: calls.append(t.shape[1]) or forward_chunk(t, st))
    sent = []
    monkeypatch.setattr(parallel, "rank_world", lambda: (1, 2))
    # Rank 0 broadcasts the plan first, then whether the run scored nothing (None: it scored something).
    monkeypatch.setattr(parallel, "from_rank0", lambda obj, world: sent.append(obj) or (plan if len(sent) == 1
                                                                                         else None))
    out = tmp_path / "scores"

    plan = ("ok", ["chr2:alt"], ["rec1"])
    run = scoring.score_fasta(inputs["fasta"], out, fm, chunk_size=CHUNK, formats="both")
    assert sent == [None, None] and not out.exists() and list(tmp_path.iterdir()) == []
    assert run.scored == ["chr2:alt"] and run.skipped == ["rec1"] and run.summary == []
    assert calls == [100, 100, 100, 100, 10]  # record chr2:alt (410 bases) only

    plan = ("error", "ScoringError: scores: output directory exists and is not empty")
    sent.clear()
    with pytest.raises(scoring.ScoringError, match="rank 0 could not start scoring: ScoringError: scores: output"):
        scoring.score_fasta(inputs["fasta"], out, fm, chunk_size=CHUNK)
    assert not out.exists()


def _torchrun_world(inputs, run: Path, nproc: int, tp: int,
                    timeout: float) -> tuple[Path, subprocess.CompletedProcess]:
    """`torchrun --nproc_per_node nproc ... --tensor-parallel tp` into <run>/scores: (the scores directory, the
    finished process), which must have succeeded."""
    out = run / "scores"
    run.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(RECIPE),
         *_args(inputs, out, "--tensor-parallel", str(tp))],
        cwd=run, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out, proc


@pytest.mark.slow
def test_two_data_parallel_groups_of_the_nemo_model_equal_one(inputs, tmp_path):
    """torchrun --nproc_per_node 2 ... --tensor-parallel 1: two groups of one rank (DP=2 x TP=1, gloo), each
    with the NeMo model; the record files and checksums equal those of one rank (--nproc_per_node 1)."""
    require_nemo()
    outs = {nproc: _torchrun_world(inputs, tmp_path / f"dp{nproc}", nproc, 1, 600)[0] for nproc in (1, 2)}
    for name in ("rec1.npz", "rec1.bedgraph.gz", "chr2_alt.npz", "chr2_alt.bedgraph.gz"):
        assert (outs[1] / name).read_bytes() == (outs[2] / name).read_bytes(), name
    m1, m2 = (json.loads((o / "manifest.json").read_text()) for o in (outs[1], outs[2]))
    assert m2["complete"] and m2["info"]["data_parallel"] == 2 and m2["settings"] == m1["settings"]
    assert {n: e["files"] for n, e in m1["records"].items()} == {n: e["files"] for n, e in m2["records"].items()}


@pytest.mark.slow
def test_two_data_parallel_groups_of_two_tensor_parallel_ranks_equal_one_group(inputs, tmp_path):
    """torchrun --nproc_per_node 4 ... --tensor-parallel 2: two groups of two ranks (DP=2 x TP=2, gloo); each
    record is scored by one group, and its files and checksums equal those of one TP=2 group (2 processes)."""
    require_nemo()
    outs = {}
    for nproc in (2, 4):
        outs[nproc], proc = _torchrun_world(inputs, tmp_path / f"n{nproc}", nproc, 2, 900)
        assert proc.stdout.count("2 record(s) scored, 0 already finished") == 1, proc.stdout
    for name in ("rec1.npz", "rec1.bedgraph.gz", "chr2_alt.npz", "chr2_alt.bedgraph.gz"):
        assert (outs[2] / name).read_bytes() == (outs[4] / name).read_bytes(), name
    m2, m4 = (json.loads((o / "manifest.json").read_text()) for o in (outs[2], outs[4]))
    assert m4["complete"] and m4["info"]["data_parallel"] == 2 and m4["info"]["tensor_parallel"] == 2
    assert m4["settings"] == m2["settings"]
    assert {n: e["files"] for n, e in m2["records"].items()} == {n: e["files"] for n, e in m4["records"].items()}
