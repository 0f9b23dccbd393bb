"""The scoring commands as batch jobs run them: no terminal (stdin from /dev/null, output to a log file),
progress on, default options; stopped by a signal, an error or a full disk and resumed; long and
case-clashing record names; inputs that must never be written over; a manifest that must not be trusted
blindly; options and Hydra keys refused before anything is written; scores too bad to be right flagged."""

from __future__ import annotations

import json
import logging
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_dna, stressed_model
from hydra import compose, initialize_config_dir

from focus_nemo.focus import FocusConfig, FocusModel
from focus_nemo.scoring import ScoringError, load_scores, read_tsv, run_report, score_fasta, score_variants
from focus_nemo.scoring.outputs import MAX_STEM
from focus_nemo.scoring.tally import RecordTally

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--checkpoint", "random:tiny", "--adapter", "none", "--k", "8", "--window", "32", "--chunk-size", "64",
        "--threads", "1"]


def write_fasta(path: Path, records: dict[str, bytes]) -> Path:
    path.write_bytes(b"".join(b">" + n.encode() + b"\n" + s + b"\n" for n, s in records.items()))
    return path


def batch(recipe: str, *args: str, log: Path, preexec=None, wait: bool = True):
    """Run a recipe as a batch job: stdin /dev/null, stdout and stderr to `log`, progress on."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "recipes" / f"{recipe}.py"), *args], env=env,
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=preexec)
    if wait:
        proc.wait(timeout=300)
    return proc


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture
def fm() -> FocusModel:
    model = FocusModel(stressed_model(), FocusConfig(k=4, window=16)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.focus_parameters().values():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_readme_scoring_commands_run_as_batch_jobs(tmp_path):
    """score_variants and score_fasta as in the README (embedded model and adapter, default options), with
    no terminal: every line of progress goes to the log, the outputs are complete."""
    seq = random_dna(1500, 3)
    fasta = write_fasta(tmp_path / "ref.fa", {"chr1": seq})
    ref = chr(seq[700])
    alt = "A" if ref != "A" else "C"
    vcf = tmp_path / "calls.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   f"chr1\t701\trs1\t{ref}\t{alt}\t.\t.\t.\n")
    log = tmp_path / "variants.log"
    proc = batch("score_variants", "--variants", str(vcf), "--fasta", str(fasta), "--out",
                 str(tmp_path / "deltas.tsv"), "--flank", "500", log=log)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text() and "1/1 variants (100.0%)" in log.read_text()
    (row,) = read_tsv(tmp_path / "deltas.tsv")
    assert row["status"] == "ok" and float(row["delta_ll"]) != 0
    log = tmp_path / "fasta.log"
    proc = batch("score_fasta", "--fasta", str(fasta), "--out", str(tmp_path / "scores"), "--format", "both", log=log)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text() and "chr1: 1,500/1,500 bases (100.0%)" in log.read_text()
    assert manifest(tmp_path / "scores")["complete"] is True
    (row,) = read_tsv(tmp_path / "scores" / "summary.tsv")
    assert (row["status"], row["files"]) == ("scored", "chr1.bedgraph.gz,chr1.npz")


def test_sigterm_leaves_a_run_that_says_it_is_partial_and_resume_finishes_it(tmp_path):
    recs = {"r0": random_dna(100, 10), "r1": random_dna(3000, 11), "r2": random_dna(200, 12)}
    fasta = write_fasta(tmp_path / "three.fa", recs)
    out, clean = tmp_path / "out", tmp_path / "clean"
    args = ["--fasta", str(fasta), *TINY, "--format", "both"]
    proc = batch("score_fasta", *args, "--out", str(out), log=tmp_path / "killed.log", wait=False)
    try:
        deadline = time.monotonic() + 120
        while True:  # stop it once r0 is finished and r1 is being written
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "r0 never finished"
            try:
                done = manifest(out)["records"]
            except (OSError, ValueError, KeyError):
                done = {}
            if "r0" in done and list(out.glob(".r1.npz.*.tmp")):
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "killed.log").read_text()
    assert proc.returncode == 1 and "error: scoring stopped by SIGTERM" in log and "Traceback" not in log
    m = manifest(out)
    assert m["complete"] is False and list(m["records"]) == ["r0"]
    rows = read_tsv(out / "summary.tsv")
    assert [(r["record"], r["status"]) for r in rows] == [("r0", "scored"), ("r1", "pending"), ("r2", "pending")]
    assert "interrupted after" in rows[1]["note"] and "--resume" in rows[2]["note"]
    assert not list(out.glob("*.tmp"))

    proc = batch("score_fasta", *args, "--out", str(out), "--resume", log=tmp_path / "resumed.log")
    assert proc.returncode == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    assert batch("score_fasta", *args, "--out", str(clean), log=tmp_path / "clean.log").returncode == 0
    assert manifest(out)["complete"] is True
    for name in recs:
        for suffix in (".npz", ".bedgraph.gz"):
            assert (out / f"{name}{suffix}").read_bytes() == (clean / f"{name}{suffix}").read_bytes()
    drop = ("seconds", "bases_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in read_tsv(out / "summary.tsv")] == \
        [{k: v for k, v in r.items() if k not in drop} for r in read_tsv(clean / "summary.tsv")]


def test_an_error_in_one_record_marks_it_failed_and_the_rest_pending(fm, tmp_path, monkeypatch):
    fasta = write_fasta(tmp_path / "x.fa", {"a": random_dna(40, 1), "b": random_dna(40, 2), "c": random_dna(40, 3)})
    real = fm.forward_chunk
    calls = []

    def flaky(tokens, state):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("device lost")
        return real(tokens, state)

    monkeypatch.setattr(fm, "forward_chunk", flaky)
    with pytest.raises(RuntimeError, match="device lost"):
        score_fasta(fasta, tmp_path / "out", fm, chunk_size=16, progress=False)
    rows = read_tsv(tmp_path / "out" / "summary.tsv")
    assert [(r["record"], r["status"]) for r in rows] == [("a", "scored"), ("b", "failed"), ("c", "pending")]
    assert "RuntimeError: device lost" in rows[1]["note"]
    assert manifest(tmp_path / "out")["complete"] is False
    monkeypatch.setattr(fm, "forward_chunk", real)
    run = score_fasta(fasta, tmp_path / "out", fm, chunk_size=16, resume=True, progress=False)
    assert run.skipped == ["a"] and run.scored == ["b", "c"]
    assert [r["status"] for r in read_tsv(tmp_path / "out" / "summary.tsv")] == ["scored"] * 3


def test_long_record_names_get_short_file_names_and_case_clashes_are_refused(fm, tmp_path):
    long_name = "contig_" + "x" * 223  # 230 characters
    recs = {long_name: random_dna(30, 1), "after": random_dna(30, 2)}
    fasta = write_fasta(tmp_path / "long.fa", recs)
    run = score_fasta(fasta, tmp_path / "out", fm, formats="both", progress=False)
    assert run.scored == [long_name, "after"]
    rows = {r["record"]: r for r in read_tsv(tmp_path / "out" / "summary.tsv")}
    files = rows[long_name]["files"].split(",")
    assert all(len(f) <= MAX_STEM + len(".bedgraph.gz") and f.startswith("contig_xxx") for f in files)
    assert load_scores(tmp_path / "out" / files[1])[1]["record"] == long_name
    # names that differ only in case are refused before anything is written, whatever the file system
    clash = write_fasta(tmp_path / "clash.fa", {"chrA": random_dna(20, 3), "chra": random_dna(20, 4)})
    with pytest.raises(ScoringError, match=r"'chrA' and 'chra' map to output file names that differ only in case"):
        score_fasta(clash, tmp_path / "clash", fm, progress=False)
    assert not (tmp_path / "clash").exists()
    score_fasta(clash, tmp_path / "one", fm, records=["chrA"], progress=False)
    with pytest.raises(ScoringError, match=r"differ only in case"):
        score_fasta(clash, tmp_path / "one", fm, records=["chra"], resume=True, progress=False)


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_out_of_space_is_one_error_naming_the_file_and_directory(tmp_path):
    """A write that fails (here: a file-size limit, as a full disk or a quota fails it) ends the run with
    one line naming the file and directory; what was finished stays, and --resume completes the run."""
    recs = {"small": random_dna(100, 1), "big": random_dna(6000, 2)}
    fasta = write_fasta(tmp_path / "x.fa", recs)
    out = tmp_path / "out"
    args = ["--fasta", str(fasta), *TINY, "--format", "bedgraph", "--out", str(out)]
    log = tmp_path / "full.log"
    proc = batch("score_fasta", *args, log=log, preexec=_file_size_limit(16_384))
    text = log.read_text()
    assert proc.returncode == 1 and "Traceback" not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith(f"error: {out / 'big.bedgraph.gz'}: could not write this output file in {out}: ")
    assert "File too large" in last and "--resume" in last
    rows = read_tsv(out / "summary.tsv")
    assert [(r["record"], r["status"]) for r in rows] == [("small", "scored"), ("big", "failed")]
    assert manifest(out)["complete"] is False and not list(out.glob("*.tmp"))
    assert batch("score_fasta", *args, "--resume", log=tmp_path / "resume.log").returncode == 0
    assert manifest(out)["complete"] is True


def test_no_command_writes_over_its_inputs(fm, tmp_path):
    seq = random_dna(60, 5)
    fasta = write_fasta(tmp_path / "ref.fa", {"chr1": seq})
    variants = tmp_path / "v.tsv"
    variants.write_text(f"chrom\tpos\tref\talt\nchr1\t30\t{chr(seq[29])}\t{'A' if seq[29] != 65 else 'C'}\n")
    score_variants(variants, fasta, tmp_path / "ok.tsv", fm, flank=8, progress=False)  # builds ref.fa.fai
    before = {p: p.read_bytes() for p in (fasta, variants, tmp_path / "ref.fa.fai")}
    for target in before:
        with pytest.raises(ScoringError, match=r"the output file \(--out\) is an input of this run"):
            score_variants(variants, fasta, target, fm, flank=8, overwrite=True, progress=False)
    link = tmp_path / "link.tsv"
    link.symlink_to(variants)
    with pytest.raises(ScoringError, match="is an input"):
        score_variants(variants, fasta, link, fm, flank=8, overwrite=True, progress=False)
    assert {p: p.read_bytes() for p in before} == before
    # score_fasta never writes into the directory that holds its FASTA
    with pytest.raises(ScoringError, match=r"output directory holds the input"):
        score_fasta(fasta, tmp_path, fm, resume=True, progress=False)
    assert not (tmp_path / "manifest.json").exists()


def test_the_manifest_is_checked_and_summary_figures_come_from_the_outputs(fm, tmp_path):
    fasta = write_fasta(tmp_path / "x.fa", {"chrA": random_dna(50, 1), "chrB": random_dna(40, 2)})
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    score_fasta(fasta, out, fm, records=["chrB"], progress=False)
    run = score_fasta(fasta, out, fm, resume=True, progress=False)
    score_fasta(fasta, fresh, fm, progress=False)
    assert run.skipped == ["chrB"]
    cols = ("record", "length", "scored", "sum_ll_nats", "bits_per_base", "status")
    table = [[r[c] for c in cols] for r in read_tsv(out / "summary.tsv")]
    assert table == [[r[c] for c in cols] for r in read_tsv(fresh / "summary.tsv")]  # the FASTA's order
    # an edited figure: the manifest no longer matches its checksum and is refused
    path = out / "manifest.json"
    m = json.loads(path.read_text())
    m["records"]["chrA"]["stats"]["sum_ll_nats"] = -1.0
    path.write_text(json.dumps(m))
    with pytest.raises(ScoringError, match=r"does not match its own checksum"):
        score_fasta(fasta, out, fm, resume=True, progress=False)
    # even a manifest rewritten with a matching checksum cannot change the figures: they are recomputed
    from focus_nemo.scoring.outputs import manifest_checksum

    m["checksum"] = manifest_checksum(m)
    path.write_text(json.dumps(m))
    score_fasta(fasta, out, fm, resume=True, progress=False)
    assert [[r[c] for c in cols] for r in read_tsv(out / "summary.tsv")] == table


def test_bad_options_are_named_before_anything_is_written(fm, tmp_path):
    fasta = write_fasta(tmp_path / "x.fa", {"r": random_dna(40, 1)})
    out = tmp_path / "out"
    with pytest.raises(ScoringError, match=r"chunk_size \(--chunk-size\): must be >= 1, got 0"):
        score_fasta(fasta, out, fm, chunk_size=0, progress=False)
    with pytest.raises(ValueError, match=r"max_bits_per_base \(--max-bits-per-base\).*got -1"):
        score_fasta(fasta, out, fm, max_bits_per_base=-1, progress=False)
    assert not out.exists()
    base = ["--fasta", str(fasta), "--checkpoint", "random:tiny", "--adapter", "none", "--out", str(out)]
    cases = [(["--chunk-size", "0"], "argument --chunk-size: must be >= 1, got 0"),
             (["--threads", "-1"], "argument --threads: must be >= 1, got -1"),
             (["--max-bits-per-base", "0"], "argument --max-bits-per-base: expected a number > 0, got '0'")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "argument --device: 'cuda': no CUDA device is available"))
    for extra, message in cases:
        proc = batch("score_fasta", *base, *extra, log=tmp_path / "bad.log")
        text = (tmp_path / "bad.log").read_text()
        assert proc.returncode == 2 and message in text and "Traceback" not in text, text[-2000:]
        assert not out.exists()
    # a NeMo 2 checkpoint whose metadata pickle is refused: one line naming the option, the payload never runs
    ckpt = tmp_path / "nemo2"
    (ckpt / "weights").mkdir(parents=True)
    (ckpt / "context").mkdir()
    (ckpt / "context" / "model.yaml").write_text("x: 1\n")
    (ckpt / "weights" / ".metadata").write_bytes(pickle.dumps(_Payload(tmp_path / "ran")))
    proc = batch("score_fasta", *base[:2], "--checkpoint", str(ckpt), "--config", "tiny", "--adapter", "none",
                 "--out", str(out), log=tmp_path / "pickle.log")
    text = (tmp_path / "pickle.log").read_text()
    assert proc.returncode == 1 and "Traceback" not in text, text[-2000:]
    assert f"error: --checkpoint {ckpt}: cannot be loaded: checkpoint metadata refers to" in text
    assert not (tmp_path / "ran").exists() and not out.exists()


class _Payload:
    """Unpickling it would create a file: the test checks that it never does."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


CONF = ROOT / "conf"


@pytest.mark.parametrize(("config", "override", "message"), [
    ("train_focus", "data.sample_len=0", "data.sample_len: must be >= 1 base, got 0"),
    ("train_focus", "eval_len=0", "eval_len: must be >= 1 base, got 0"),
    ("train_focus", "trainer.lr=-1", "trainer.lr: must be > 0, got -1.0"),
    ("train_focus", "+threads=-3", "threads: must be >= 1 (or 0 for torch's default), got -3"),
    ("evaluate_focus", "threads=-3", "threads: must be >= 1 (or 0 for torch's default), got -3"),
    ("evaluate_focus", "device=gpu0", "device: 'gpu0' is not a device"),
])
def test_bad_hydra_values_name_the_key(config, override, message):
    from focus_nemo.evaluate import config_from_hydra as eval_config
    from focus_nemo.train import config_from_hydra as train_config

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config, overrides=[override])
    with pytest.raises(ValueError) as e:
        (train_config if config == "train_focus" else eval_config)(cfg)
    assert message in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_evaluation_on_a_missing_cuda_device_names_the_key(tmp_path):
    from focus_nemo.evaluate import EvalConfig, evaluate

    with pytest.raises(ValueError, match=r"device: 'cuda': no CUDA device is available"):
        evaluate(EvalConfig(device="cuda", run_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_scores_worse_than_a_uniform_guess_are_flagged(fm, tmp_path, caplog):
    """A random model is worse than 2 bits/base: the summary flags the record with the plain reason and the
    log names each span (a megabase in real runs) over the threshold; a higher threshold flags nothing."""
    fasta = write_fasta(tmp_path / "x.fa", {"r": random_dna(80, 1)})
    with caplog.at_level(logging.WARNING, logger="focus_nemo.scoring"):
        run = score_fasta(fasta, tmp_path / "out", fm, progress=False)
    (row,) = read_tsv(tmp_path / "out" / "summary.tsv")
    assert float(row["bits_per_base"]) > 2 and row["status"] == "scored" and row["flag"] == "above_max_bits_per_base"
    assert "worse than a uniform guess: outside the model's domain, or a model whose state drifts" in row["note"]
    assert any(line.startswith("r:0-80: ") and "bits/base > 2" in line for line in caplog.messages)
    assert "FLAGGED" in "\n".join(run_report(run))
    score_fasta(fasta, tmp_path / "lenient", fm, progress=False, max_bits_per_base=100)
    (row,) = read_tsv(tmp_path / "lenient" / "summary.tsv")
    assert row["flag"] == "" and row["note"] == ""
    # spans: each one over the threshold is logged with its coordinates, the good ones are not
    tally = RecordTally("chrX", 30, max_bits=2.0, span=10)
    good, bad = np.log(0.5), np.log(0.1)  # 1 and 3.3 bits
    ll = np.array([good] * 10 + [bad] * 10 + [good] * 5 + [bad] * 5, dtype=np.float32)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="focus_nemo.scoring"):
        for a, b in ((0, 7), (7, 14), (14, 30)):  # reads that do not align with the spans
            tally.add(np.frombuffer(b"A" * (b - a), np.uint8), ll[a:b])
    assert [m.split(": ")[0] for m in caplog.messages] == ["chrX:10-20", "chrX:20-30"]
