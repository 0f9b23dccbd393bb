"""Data-parallel scoring on this machine's CPU: recipes/score_fasta.py with 1 and 2 workers, DP=2 x TP=1 under
torchrun (gloo), and the time to resume after a kill -9 of one worker in the middle of a run.

Usage:
    python benchmarks/score_scaling.py                                   # chr20 cut into 8 records, ~160 kb
    python benchmarks/score_scaling.py --lengths 400000,300000,200000,100000,50000
    python benchmarks/score_scaling.py --fasta 'focus_nemo/assets/dna/*.fa.gz'   # the bundled genomes (3.3 Mb)
    python benchmarks/score_scaling.py --skip torchrun,resume             # only the worker runs

Every run is the recipe as a user runs it (a fresh process, the embedded model and adapter, npz output),
timed from start to exit: throughput = bases scored / wall seconds, model loading and worker start-up
included; CPU seconds of all the run's processes are recorded too (under contention, the cost that does not
depend on what else runs). Load balance = the busiest worker's scoring seconds (the summary's per-record
seconds, records assigned as `focus_nemo.scoring.dataparallel.assign` does) / the mean over workers.
Parity: every output file of the 2-worker, torchrun and resumed runs is compared byte for byte with the
1-worker run's.
The machine's load average is recorded before each run: other work on the cores makes the 2-worker
ratio a lower bound. Writes benchmarks/results/score_scaling.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, write_results

from focus_nemo.scoring import read_tsv
from focus_nemo.scoring.dataparallel import assign

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "score_fasta.py"
CHR20 = ROOT / "focus_nemo" / "assets" / "dna" / "grch37_chr20_train.fa.gz"
DEFAULT_LENGTHS = "48000,40000,25000,20000,12000,8000,5000,2000"


def cut_chr20(path: Path, lengths: list[int]) -> Path:
    """Records seg1, seg2, ... of the given lengths, consecutive slices of the bundled chr20 training region."""
    from focus_nemo.data import open_genome

    g = open_genome(CHR20)
    name = g.names[0]
    if sum(lengths) > g.length(name):
        raise SystemExit(f"--lengths: {sum(lengths):,} bases, more than the {g.length(name):,} of {CHR20.name}")
    start = 0
    with open(path, "wb") as f:
        for i, n in enumerate(lengths):
            seq = g.fetch(name, start, start + n).tobytes()
            f.write(f">seg{i + 1}\n".encode() + b"\n".join(seq[j: j + 80] for j in range(0, n, 80)) + b"\n")
            start += n
    return path


def env() -> dict[str, str]:
    drop = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT)}


def command(fasta: str, out: Path, *extra: str, torchrun: int = 0) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] \
        if torchrun else [sys.executable]
    return [*launcher, str(RECIPE), "--fasta", fasta, "--out", str(out), "--no-progress", *extra]


def cpu_seconds() -> float:
    """User + system CPU seconds of the finished child processes (and theirs) so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.run(cmd, env=env(), stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return time.perf_counter() - t0


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".npz", ".gz")}


def record_seconds(out: Path) -> dict[str, float]:
    return {r["record"]: float(r["seconds"]) for r in read_tsv(out / "summary.tsv") if r["seconds"] != "nan"}


def balance(seconds: dict[str, float], lengths: dict[str, int], groups: int) -> tuple[float, list[float]]:
    busy = [sum(seconds.get(n, 0.0) for n in plan) for plan in assign(lengths, groups)]
    return max(busy) / (sum(busy) / len(busy)), busy


def kill_and_resume(fasta: str, work: Path, lengths: dict[str, int], reference: dict[str, bytes]) -> dict:
    """Start a 2-worker run, kill -9 worker 1 once some record is finished and worker 1 is writing another,
    then time --resume to the end."""
    out, log = work / "killed", work / "killed.log"
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(command(fasta, out, "--workers", "2", "--threads", "2"), env=env(),
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
    pids, killed_at = None, None
    try:
        while proc.poll() is None:
            found = re.search(r"worker\(s\) \(pids (\d+), (\d+)\)", log.read_text())
            pids = [int(p) for p in found.groups()] if found else None
            try:
                done = json.loads((out / "manifest.json").read_text())["records"]
            except (OSError, ValueError, KeyError):
                done = {}
            if pids and done and list(out.glob(".*.tmp")):
                os.kill(pids[1], signal.SIGKILL)
                killed_at = time.perf_counter() - t0
                break
            time.sleep(0.05)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if killed_at is None:
        return {"note": "the run ended before a worker could be killed mid-record (records too short)"}
    kept = json.loads((out / "manifest.json").read_text())["records"]
    stat = {n: (out / e["files"]["npz"]["file"]).stat().st_mtime_ns for n, e in kept.items()}
    left = sum(n for r, n in lengths.items() if r not in kept)
    resume_s = timed(command(fasta, out, "--workers", "2", "--threads", "2", "--resume"), work / "resume.log")
    after = json.loads((out / "manifest.json").read_text())
    untouched = all((out / kept[n]["files"]["npz"]["file"]).stat().st_mtime_ns == t for n, t in stat.items())
    return {"killed_after_s": round(killed_at, 2), "exit_status": proc.returncode,
            "error": next((line for line in log.read_text().splitlines() if line.startswith("error:")), ""),
            "records_finished_before_kill": len(kept), "bases_left": left, "resume_s": round(resume_s, 2),
            "resume_bases_per_s": round(left / resume_s, 1), "complete": after["complete"],
            "finished_records_untouched": untouched, "byte_identical": outputs(out) == reference}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fasta", help="a FASTA (file, directory or glob) to score instead of chr20 cut into records")
    p.add_argument("--lengths", default=DEFAULT_LENGTHS, help="record lengths cut from the bundled chr20 region")
    p.add_argument("--skip", default="", help="comma-separated runs to leave out: torchrun, resume")
    p.add_argument("--note", default="", help="a line for the results file (e.g. other work on the machine)")
    a = p.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    with tempfile.TemporaryDirectory(prefix="score_scaling_") as tmp:
        work = Path(tmp)
        fasta = a.fasta or str(cut_chr20(work / "chr20_records.fa", [int(x) for x in a.lengths.split(",")]))
        from focus_nemo.data import open_genome

        g = open_genome(fasta)
        lengths = {n: g.length(n) for n in g.names}
        total = sum(lengths.values())
        runs = {}
        plan = [("1 worker", "w1", ["--workers", "1", "--threads", "1"], 0, 1),
                ("2 workers", "w2", ["--workers", "2", "--threads", "2"], 0, 2)]
        if "torchrun" not in skip:
            plan.append(("torchrun DP=2 x TP=1 (gloo)", "dp2", ["--threads", "1"], 2, 2))
        for label, key, extra, nproc, groups in plan:
            load = round(os.getloadavg()[0], 2)
            cpu0 = cpu_seconds()
            wall = timed(command(fasta, work / key, *extra, torchrun=nproc), work / f"{key}.log")
            cpu = cpu_seconds() - cpu0
            ratio, busy = balance(record_seconds(work / key), lengths, groups)
            runs[key] = {"label": label, "wall_s": round(wall, 2), "bases_per_s": round(total / wall, 1),
                         "cpu_s": round(cpu, 2), "scoring_bases_per_s": round(total / max(busy), 1),
                         "load_average_before": load, "balance": round(ratio, 3),
                         "busy_s": [round(b, 2) for b in busy]}
            print(f"{label}: {wall:.1f} s, {total / wall:,.0f} bases/s, CPU {cpu:.1f} s, balance {ratio:.3f} "
                  f"(load {load})", flush=True)
        reference = outputs(work / "w1")
        for key in runs:
            runs[key]["byte_identical_to_1_worker"] = outputs(work / key) == reference
        resume = None if "resume" in skip else kill_and_resume(fasta, work, lengths, reference)
        if resume:
            print(f"kill -9 then --resume: {resume}", flush=True)
    speedup = runs["w1"]["wall_s"] / runs["w2"]["wall_s"]
    info = machine()
    payload = {"machine": info, "note": a.note, "fasta": a.fasta or f"{CHR20.name} cut into {a.lengths}",
               "records": lengths, "total_bases": total, "runs": runs, "speedup_2_workers": round(speedup, 3),
               "resume": resume}
    lines = [
        "# Data-parallel scoring on CPU (`benchmarks/score_scaling.py`)", "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, Python {info['python']}; "
        f"embedded model and adapter, npz output.",
        f"Input: {payload['fasta']}: {len(lengths)} records, {total:,} bases (longest {max(lengths.values()):,}, "
        f"shortest {min(lengths.values()):,}).", ""]
    if a.note:
        lines += [f"**{a.note}**", ""]
    lines += ["| run | wall s | bases/s | vs 1 worker | CPU s (all processes) | bases/s while scoring | "
              "load balance (max/mean busy) | busy s per group | load avg before | byte-identical to 1 worker |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs.values():
        lines.append(f"| {r['label']} | {r['wall_s']:.1f} | {r['bases_per_s']:,.0f} | "
                     f"{runs['w1']['wall_s'] / r['wall_s']:.2f}x | {r['cpu_s']:.1f} | "
                     f"{r['scoring_bases_per_s']:,.0f} | {r['balance']:.3f} | "
                     f"{', '.join(f'{b:.1f}' for b in r['busy_s'])} | {r['load_average_before']} | "
                     f"{'yes' if r['byte_identical_to_1_worker'] else 'NO'} |")
    lines.append("")
    if resume and "resume_s" in resume:
        lines += [f"kill -9 of worker 1 after {resume['killed_after_s']} s of a 2-worker run: exit status "
                  f"{resume['exit_status']} (`{resume['error'][:160]}`); {resume['records_finished_before_kill']} "
                  f"record(s) finished before it. `--resume` scored the other {resume['bases_left']:,} bases in "
                  f"{resume['resume_s']} s ({resume['resume_bases_per_s']:,.0f} bases/s, start-up included); "
                  f"finished records untouched: {resume['finished_records_untouched']}; complete: "
                  f"{resume['complete']}; byte-identical to the 1-worker run: {resume['byte_identical']}.", ""]
    elif resume:
        lines += [f"kill -9 then --resume: {resume['note']}", ""]
    lines += ["CPU s: user + system seconds of every process of the run (a contention-robust cost: equal CPU "
              "seconds per base for 1 and 2 workers mean the speed-up on free cores is bounded only by start-up). "
              "Bases/s while scoring: bases / the busiest group's summed per-record seconds (start-up left out).",
              "",
              "Wall time includes starting Python, loading the model (once per worker) and spawning the workers: "
              "on short inputs that fixed cost (a few seconds per run) lowers the measured speed-up; "
              "rerun with longer `--lengths` or the bundled genomes (`--fasta 'focus_nemo/assets/dna/*.fa.gz'`) "
              "for figures closer to a whole genome's.", ""]
    write_results("score_scaling", payload, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
