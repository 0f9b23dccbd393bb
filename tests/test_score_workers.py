"""Data-parallel FASTA scoring: records spread over worker processes (--workers) or torchrun groups give files
byte-identical to a single process, one writer per file, and a run that survives the kill -9 of a worker."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import random_dna

from focus_nemo.scoring import (
    ScoringError,
    dataparallel,
    fasta,
    load_scoring_model,
    outputs,
    read_tsv,
    records,
    score_fasta,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "score_fasta.py"
TINY = ["--checkpoint", "random:tiny", "--adapter", "none", "--k", "8", "--window", "32", "--chunk-size", "64",
        "--threads", "1", "--format", "both"]
TIMING = ("seconds", "bases_per_s")
MODEL = ("random:tiny", None, 8, 32, "float32", "cpu")


def write_fasta(path: Path, lengths: dict[str, int]) -> Path:
    path.write_bytes(b"".join(b">" + n.encode() + b"\n" + random_dna(n_, i) + b"\n"
                              for i, (n, n_) in enumerate(lengths.items())))
    return path


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def outputs_of(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".npz", ".gz")}


def checksums(out: Path) -> dict:
    return {name: entry["files"] for name, entry in manifest(out)["records"].items()}


def summary_without_timing(out: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_tsv(out / "summary.tsv")]


def env() -> dict[str, str]:
    drop = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT)}


def recipe(*args: str, log: Path, wait: bool = True, torchrun: int = 0):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] \
        if torchrun else [sys.executable]
    with open(log, "wb") as fh:
        proc = subprocess.Popen([*launcher, str(RECIPE), *args], env=env(), stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT)
    if wait:
        proc.wait(timeout=300)
    return proc


# --------------------------------------------------------------------------- one writer per file, traced
def _traced(log: Path, fn):
    @functools.wraps(fn)
    def traced(*args, **kwargs):
        target = Path(args[1] if fn.__name__ == "publish" else args[0])
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\t{target.name}\n")
        return fn(*args, **kwargs)

    return traced


def trace_writes(log: Path, patch=None) -> None:
    """Log (pid, file) of every output file this process publishes: record files (`records.publish`) and the
    manifest and summary (`outputs.durable_write_bytes`)."""
    patch = patch or (lambda obj, name, value: setattr(obj, name, value))
    patch(records, "publish", _traced(log, records.publish))
    patch(outputs, "durable_write_bytes", _traced(log, outputs.durable_write_bytes))


def traced_model(log: str):
    """A worker's model factory that also traces the worker's writes (runs in the worker process)."""
    trace_writes(Path(log))
    return load_scoring_model(*MODEL)


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> Path:
    return write_fasta(tmp_path_factory.mktemp("genome") / "g.fa",
                       {"chrA": 1200, "chrB": 300, "chrC": 900, "chrD": 200, "chrE": 700})


@pytest.fixture(scope="module")
def single(genome, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "scores"
    fm, k, window = load_scoring_model(*MODEL)
    score_fasta(genome, out, fm, k=k, window=window, chunk_size=64, formats="both", progress=False)
    return out


def test_records_go_longest_first_to_the_least_loaded_group():
    lengths = {"a": 10, "b": 50, "c": 30, "d": 30, "e": 5, "f": 40}
    assert dataparallel.assign(lengths, 2) == [["b", "d", "e"], ["f", "c", "a"]]
    assert dataparallel.assign(lengths, 1) == [["b", "f", "c", "d", "a", "e"]]
    assert dataparallel.assign({"a": 7}, 3) == [["a"], [], []]
    mb = [248, 242, 198, 190, 181, 171, 159, 145, 138, 134, 135, 133, 114, 107, 102, 90, 83, 80, 59, 64, 47, 51,
          156, 57]  # GRCh38's chromosomes in Mb
    genome = {f"chr{i + 1}": n for i, n in enumerate(mb)}
    plan = dataparallel.assign(genome, 4)
    assert sorted(n for p in plan for n in p) == sorted(genome)
    loads = [sum(genome[n] for n in p) for p in plan]
    assert max(loads) / (sum(loads) / len(loads)) < 1.02
    assert dataparallel.worker_threads(8, 2) == 4 and dataparallel.worker_threads(3, 2) == 1
    assert dataparallel.worker_threads(1, 4) == 1


def test_two_workers_write_the_single_process_files_each_file_by_one_process(genome, single, tmp_path,
                                                                             monkeypatch):
    """--workers 2: byte-identical record files, the same checksums in the manifest and the same summary as
    one process; every file written by exactly one process: records by the worker that scored them, the
    manifest and summary by the coordinator alone."""
    log = tmp_path / "writes.log"
    trace_writes(log, monkeypatch.setattr)
    out = tmp_path / "scores"
    fm, k, window = load_scoring_model(*MODEL)
    run = score_fasta(genome, out, fm, k=k, window=window, chunk_size=64, formats="both", progress=False,
                      workers=2, model_factory=functools.partial(traced_model, str(log)), threads=2)
    assert outputs_of(out) == outputs_of(single) and len(outputs_of(out)) == 10
    assert checksums(out) == checksums(single)
    assert summary_without_timing(out) == summary_without_timing(single)
    m = manifest(out)
    assert m["complete"] is True and list(m["records"]) == list(manifest(single)["records"])  # input order
    assert m["info"]["workers"] == 2 and m["info"]["threads_per_worker"] == 1
    assert sorted(run.scored) == sorted(m["records"]) and [r["record"] for r in run.summary] == list(m["records"])

    writers: dict[str, set[int]] = {}
    for line in log.read_text().splitlines():
        pid, name = line.split("\t")
        writers.setdefault(name, set()).add(int(pid))
    assert set(writers) == {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert all(len(pids) == 1 for pids in writers.values()), writers
    me = os.getpid()
    assert writers["manifest.json"] == writers["summary.tsv"] == {me}
    workers = {pid for name, pids in writers.items() if name not in ("manifest.json", "summary.tsv") for pid in pids}
    assert len(workers) == 2 and me not in workers
    # each record's two files come from one worker; longest first: chrA, chrB, chrD on one, chrC, chrE on the other
    by_record = {n: writers[f"{n}.npz"] | writers[f"{n}.bedgraph.gz"] for n in m["records"]}
    assert all(len(p) == 1 for p in by_record.values())
    assert by_record["chrA"] == by_record["chrB"] == by_record["chrD"] != by_record["chrC"] == by_record["chrE"]


def test_only_the_coordinator_writes_the_manifest_and_summary(tmp_path, monkeypatch):
    """A worker (or a rank other than 0) cannot write the run's manifest or summary, and a RunBook writes
    from the process that opened the run alone."""
    (tmp_path / "d").mkdir()
    monkeypatch.setattr(outputs, "_RUN_FILES_FORBIDDEN", None)
    outputs.forbid_run_files("worker 1 scores records")
    m = {"format": outputs.MANIFEST_FORMAT, "requested": [], "records": {}, "inputs": {"records": {}}}
    with pytest.raises(ScoringError, match=r"manifest.json: not written by this process .*worker 1"):
        outputs.write_manifest(tmp_path / "d", m)
    with pytest.raises(ScoringError, match=r"summary.tsv: not written by this process"):
        outputs.write_summary(tmp_path / "d", m, 2.0)
    monkeypatch.setattr(outputs, "_RUN_FILES_FORBIDDEN", None)
    book = records.RunBook(tmp_path / "d", m, 2.0)
    book.write()
    book.pid = -1  # as if this were a forked copy of the coordinator
    with pytest.raises(ScoringError, match="written by the process that opened the run"):
        book.write()


def test_workers_option_is_checked_before_anything_is_written(genome, tmp_path):
    fm, k, window = load_scoring_model(*MODEL)
    with pytest.raises(ScoringError, match="workers"):
        score_fasta(genome, tmp_path / "a", fm, workers=0, progress=False)
    with pytest.raises(ValueError, match="model_factory"):
        score_fasta(genome, tmp_path / "b", fm, workers=2, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def failing_model(bad: str):
    """A worker's model whose calls fail while it scores record `bad` (the worker reads the FASTA itself)."""
    fm, k, window = load_scoring_model(*MODEL)
    real = fm.forward_chunk

    def forward_chunk(tokens, state):
        if fasta.score_record.current == bad:
            raise RuntimeError("device lost")
        return real(tokens, state)

    fm.forward_chunk = forward_chunk
    score_record = fasta.score_record

    def tracking(genome, name, *args, **kwargs):
        tracking.current = name
        return score_record(genome, name, *args, **kwargs)

    tracking.current = None
    fasta.score_record = dataparallel.score_record = tracking
    return fm, k, window


def test_a_record_that_fails_in_a_worker_stops_the_run_naming_it(genome, tmp_path):
    """An error while a worker scores a record: the run ends with one error naming the record, the worker and
    the cause; the record is failed, the others finished or pending, and --resume finishes the run."""
    out = tmp_path / "scores"
    fm, k, window = load_scoring_model(*MODEL)
    with pytest.raises(dataparallel.WorkerFailed, match=r"record 'chrC' failed on worker 1: RuntimeError: device"):
        score_fasta(genome, out, fm, k=k, window=window, chunk_size=64, formats="both", progress=False, workers=2,
                    model_factory=functools.partial(failing_model, "chrC"))
    m = manifest(out)
    rows = {r["record"]: r for r in read_tsv(out / "summary.tsv")}
    assert m["complete"] is False and rows["chrC"]["status"] == "failed"
    assert "RuntimeError: device lost" in rows["chrC"]["note"] and "chrC" not in m["records"]
    assert all(rows[n]["status"] in ("scored", "pending") for n in rows if n != "chrC")
    assert not list(out.glob(".*.tmp"))
    run = score_fasta(genome, out, fm, k=k, window=window, chunk_size=64, formats="both", progress=False,
                      workers=2, model_factory=functools.partial(load_scoring_model, *MODEL), resume=True)
    assert "chrC" in run.scored and manifest(out)["complete"] is True


def test_sigterm_to_the_coordinator_stops_the_workers_and_resume_finishes(genome, single, tmp_path):
    """SIGTERM (a scheduler's stop) to the coordinator: the workers stop, the records they were scoring are
    pending ("interrupted after ..."), no temporary file is left; --resume ends byte-identical."""
    out, log = tmp_path / "out", tmp_path / "stopped.log"
    proc = recipe("--fasta", str(genome), *TINY, "--out", str(out), "--workers", "2", log=log, wait=False)
    try:
        _wait_for(lambda: bool(list(out.glob(".chrA.npz.*.tmp"))), proc, log, "chrA being written")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 1 and "error: scoring stopped by SIGTERM" in text and "Traceback" not in text, text
    m = manifest(out)
    rows = {r["record"]: r for r in read_tsv(out / "summary.tsv")}
    assert m["complete"] is False and rows["chrA"]["status"] == "pending"
    assert "interrupted after" in rows["chrA"]["note"] and "failed" not in {r["status"] for r in rows.values()}
    assert not list(out.glob(".*.tmp"))
    log2 = tmp_path / "resumed.log"
    assert recipe("--fasta", str(genome), *TINY, "--out", str(out), "--workers", "2", "--resume",
                  log=log2).returncode == 0, log2.read_text()[-3000:]
    assert outputs_of(out) == outputs_of(single) and checksums(out) == checksums(single)


def test_workers_whose_model_is_not_the_coordinators_are_refused_before_anything_is_written(genome, tmp_path):
    from conftest import stressed_model

    from focus_nemo.focus import FocusConfig, FocusModel

    other = FocusModel(stressed_model(), FocusConfig(k=8, window=32)).eval()
    with pytest.raises(dataparallel.WorkerFailed, match=r"worker \d could not start: .*not the coordinator's "
                       r"\(.*model_fingerprint"):
        score_fasta(genome, tmp_path / "out", other, k=8, window=32, chunk_size=64, progress=False, workers=2,
                    model_factory=functools.partial(load_scoring_model, *MODEL))
    assert not (tmp_path / "out").exists()


def _wait_for(cond, proc, log: Path, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.02)


def test_kill_9_of_a_worker_stops_the_run_and_resume_finishes_it_without_rescoring(tmp_path):
    """kill -9 one of two workers mid-record: the run stops naming the record and the signal, the directory
    says it is partial; --resume scores only what was not finished (finished files keep their inode and
    mtime) and ends byte-identical to an uninterrupted single-process run."""
    fa = write_fasta(tmp_path / "g.fa", {"big": 2400, "mid": 1500, "r3": 700, "r4": 600, "r5": 500})
    # longest first: worker 0 gets big, r5; worker 1 gets mid, r3, r4
    out, clean = tmp_path / "out", tmp_path / "clean"
    log = tmp_path / "killed.log"
    proc = recipe("--fasta", str(fa), *TINY, "--out", str(out), "--workers", "2", log=log, wait=False)
    try:
        pids: list[int] = []

        def worker1_on_r3() -> bool:
            if not pids:
                found = re.search(r"worker\(s\) \(pids (\d+), (\d+)\)", log.read_text())
                pids.extend(int(p) for p in found.groups()) if found else None
            try:
                done = manifest(out)["records"]
            except (OSError, ValueError, KeyError):
                return False
            return bool(pids) and "mid" in done and bool(list(out.glob(".r3.npz.*.tmp")))

        _wait_for(worker1_on_r3, proc, log, "worker 1 reaching r3")
        os.kill(pids[1], signal.SIGKILL)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 1 and "Traceback" not in text, text[-3000:]
    assert re.search(rf"error: worker 1 \(pid {pids[1]}\) died \(killed by SIGKILL\) while scoring record 'r3'", text)
    m = manifest(out)
    assert m["complete"] is False and "mid" in m["records"] and "r3" not in m["records"]
    rows = {r["record"]: r for r in read_tsv(out / "summary.tsv")}
    assert rows["r3"]["status"] == "failed" and "killed by SIGKILL" in rows["r3"]["note"]
    assert rows["r4"]["status"] == "pending"
    assert not list(out.glob(".*.tmp"))
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for name in m["records"]
              for p in (out / f"{name}.npz", out / f"{name}.bedgraph.gz")}

    log2 = tmp_path / "resumed.log"
    assert recipe("--fasta", str(fa), *TINY, "--out", str(out), "--workers", "2", "--resume",
                  log=log2).returncode == 0, log2.read_text()[-3000:]
    finished_before = len(m["records"])
    assert f"{5 - finished_before} record(s) scored, {finished_before} already finished" in log2.read_text()
    assert {n: (out / n).stat().st_ino for n in before} == {n: v[0] for n, v in before.items()}
    assert {n: (out / n).stat().st_mtime_ns for n in before} == {n: v[1] for n, v in before.items()}
    assert recipe("--fasta", str(fa), *TINY, "--out", str(clean), log=tmp_path / "clean.log").returncode == 0
    assert manifest(out)["complete"] is True
    assert outputs_of(out) == outputs_of(clean) and checksums(out) == checksums(clean)
    assert summary_without_timing(out) == summary_without_timing(clean)


def test_torchrun_two_groups_of_one_rank_equal_one_process(genome, single, tmp_path):
    """torchrun --nproc_per_node 2 without --tensor-parallel: DP=2 x TP=1 (gloo), a single-device model per
    rank; the same files, checksums and summary as one process; rank 0 records the layout."""
    out = tmp_path / "scores"
    log = tmp_path / "torchrun.log"
    proc = recipe("--fasta", str(genome), *TINY, "--out", str(out), "--no-progress", log=log, torchrun=2)
    assert proc.returncode == 0, log.read_text()[-4000:]
    assert outputs_of(out) == outputs_of(single) and checksums(out) == checksums(single)
    assert summary_without_timing(out) == summary_without_timing(single)
    m = manifest(out)
    assert m["complete"] is True and m["info"]["data_parallel"] == 2 and "tensor_parallel" not in m["info"]
    assert log.read_text().count("5 record(s) scored") == 1  # rank 0 reports


FAIL_ON_RANK1 = """
import os
if os.environ.get("RANK") == "1":
    from focus_nemo.scoring import dataparallel

    real = dataparallel.score_record

    def failing(genome, name, *args, **kwargs):
        if name == os.environ["FAIL_RECORD"]:
            raise RuntimeError("device lost on rank 1")
        return real(genome, name, *args, **kwargs)

    dataparallel.score_record = failing
"""


def test_torchrun_a_record_failing_on_another_group_is_named_by_rank_0(genome, tmp_path):
    """Under torchrun, a record that fails on group 1 is reported to rank 0 before rank 1 exits: the
    summary has it failed and rank 0's error names it; the directory says the run is incomplete."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAIL_ON_RANK1)
    out, log = tmp_path / "scores", tmp_path / "torchrun.log"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    with open(log, "wb") as fh:
        proc = subprocess.run([*launcher, str(RECIPE), "--fasta", str(genome), *TINY, "--out", str(out),
                               "--no-progress"], env={**env(), "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}",
                                                      "FAIL_RECORD": "chrC"},
                              stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text()
    assert proc.returncode != 0
    assert "error: record 'chrC' failed on group 1: RuntimeError: device lost on rank 1" in text, text[-4000:]
    rows = {r["record"]: r for r in read_tsv(out / "summary.tsv")}
    assert rows["chrC"]["status"] == "failed" and "device lost" in rows["chrC"]["note"]
    assert manifest(out)["complete"] is False


# --------------------------------------------------------------------------- the genome batch script
def test_genome_script_scores_into_one_resumable_directory_as_one_rank_per_task(tmp_path):
    from test_cluster import run_script

    proc, srun = run_script("score_genome.sbatch", tmp_path, "--fasta", "/data/hg38.fa.gz", "--dtype", "bfloat16",
                            SLURM_JOB_NUM_NODES="2", FOCUS_TP="2")
    assert proc.returncode == 0, proc.stderr
    i = srun.index("bash")
    flags, (shell, script, arg0), command = srun[:i], srun[i + 1: i + 4], srun[i + 4:]
    assert arg0 == "rank"  # $0 of the task's shell
    assert "--container-image=/images/focus.sqsh" in flags and "--kill-on-bad-exit=1" in flags
    assert shell == "-c" and "RANK=${SLURM_PROCID}" in script and "WORLD_SIZE=${SLURM_NTASKS}" in script
    assert "LOCAL_RANK=${SLURM_LOCALID}" in script and script.rstrip().endswith('exec "$@"')
    assert command[:6] == ["score-fasta", "--out", "/runs/focus-test/scores", "--resume", "--threads", "12"]
    assert command[6:8] == ["--tensor-parallel", "2"]
    assert command[-4:] == ["--fasta", "/data/hg38.fa.gz", "--dtype", "bfloat16"]  # the caller's options last
    assert (tmp_path / "runs" / "focus-test").is_dir()
    # without FOCUS_TP: one single-device model per task, no --tensor-parallel
    (tmp_path / "x").mkdir()
    proc, srun = run_script("score_genome.sbatch", tmp_path / "x", "--fasta", "g.fa")
    assert proc.returncode == 0 and "--tensor-parallel" not in srun and srun[-2:] == ["--fasta", "g.fa"]


def test_genome_script_requeues_itself_near_the_time_limit(tmp_path):
    from test_cluster import start_blocking

    proc, log = start_blocking("score_genome.sbatch", tmp_path, SLURM_RESTART_COUNT="1")
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert (log / "scontrol").read_text().split() == ["requeue", "4242"] and "requeueing job 4242" in out


def test_sigterm_to_one_worker_stops_the_run_with_its_record_pending(genome, tmp_path):
    out, log = tmp_path / "out", tmp_path / "run.log"
    proc = recipe("--fasta", str(genome), *TINY, "--out", str(out), "--workers", "2", log=log, wait=False)
    try:
        pids: list[int] = []

        def worker1_on_chrC() -> bool:
            found = re.search(r"worker\(s\) \(pids (\d+), (\d+)\)", log.read_text())
            if found and not pids:
                pids.extend(int(p) for p in found.groups())
            return bool(pids) and bool(list(out.glob(".chrC.npz.*.tmp")))

        _wait_for(worker1_on_chrC, proc, log, "worker 1 scoring chrC")
        os.kill(pids[1], signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 1 and "Traceback" not in text, text[-3000:]
    assert "error: worker 1 was stopped by a signal while scoring record 'chrC' (interrupted after" in text
    rows = {r["record"]: r for r in read_tsv(out / "summary.tsv")}
    assert rows["chrC"]["status"] == "pending" and manifest(out)["complete"] is False
    assert not list(out.glob(".*.tmp"))
