"""benchmarks/gpu_check.py in its CPU smoke mode: every section runs and writes its fields, lengths
grow monotonically, and the full-KV section's cache filling path runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_cpu_smoke(tmp_path):
    gpu_check = _load_gpu_check()
    gpu_check.main(["--device", "cpu", "--preset", "tiny", "--budget-s", "120", "--skip-tests", "--out", str(tmp_path),
                    "--k", "16", "--window", "256", "--start-length", "512", "--max-length", "2048",
                    "--kv-max-length", "4096", "--kv-chunk", "256", "--kv-compute-share", "0",
                    "--train-windows", "2", "--train-repeats", "1"])
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    report = (tmp_path / "gpu_check.md").read_text().splitlines()
    assert report[0] == "PASSED: tests skipped (--skip-tests), streaming ok, full_kv ok, train_step ok"
    assert report[2].startswith("# GPU check: tiny shape")
    assert result["config"]["preset"] == "tiny" and result["config"]["dtype"] == "float32"
    assert result["total_seconds"] <= 120  # the hard budget holds (the run itself takes a few seconds)
    s = result["sections"]
    assert s["tests"]["status"] == "skipped"

    st = s["streaming"]
    assert st["status"] == "ok" and st["focus_stopped"] == "done" and st["truncation_stopped"] == "done"
    lengths = [r["length"] for r in st["rows"]]
    assert lengths == [512, 1024, 2048]
    for r in st["rows"]:
        assert r["focus_bases_per_s"] > 0 and r["truncation_bases_per_s"] > 0
        assert r["time_ratio_to_truncation"] == r["focus_seconds"] / r["truncation_seconds"]
        assert r["focus_peak_gpu_bytes"] is None  # no GPU
    assert [r["focus_seconds"] for r in st["rows"]] == sorted(r["focus_seconds"] for r in st["rows"])
    assert st["focus_memory_entries_per_attention_block"] == 2048 // 16  # every completed window compressed

    kv = s["full_kv"]
    assert kv["status"] == "ok" and kv["stopped"] == "max_length" and kv["out_of_memory_at"] is None
    assert [r["length"] for r in kv["rows"]] == [512, 1024, 2048, 4096] and kv["max_length_reached"] == 4096
    assert not kv["rows"][0]["filled"] and all(r["filled"] for r in kv["rows"][1:])
    kv_bytes = [r["kv_bytes"] for r in kv["rows"]]
    assert kv_bytes == sorted(kv_bytes) and kv_bytes[0] > 0

    tr = s["train_step"]
    assert tr["status"] == "ok" and [r["how"] for r in tr["rows"]] == ["one_pass", "window_by_window"]
    one, wbw = tr["rows"]
    assert abs(one["loss"] - wbw["loss"]) <= 1e-4 * abs(one["loss"])  # the same objective both ways
    assert tr["window_by_window_over_one_pass"] == wbw["seconds"] / one["seconds"]


def test_gpu_check_lengths_double():
    gpu_check = _load_gpu_check()
    assert gpu_check.doubling(65536, 300000) == [65536, 131072, 262144]
    deadline = gpu_check.Deadline(100.0)
    assert 0 < deadline.section(0.3) <= 30.0


# --------------------------------------------------------------------------- the verdict and the exit status
SMOKE = ["--device", "cpu", "--preset", "tiny", "--budget-s", "120", "--k", "16", "--window", "256",
         "--start-length", "512", "--max-length", "1024", "--kv-max-length", "1024", "--kv-chunk", "256",
         "--kv-compute-share", "0", "--train-windows", "2", "--train-repeats", "0"]


def _tests_dir(tmp_path, body: str) -> str:
    d = tmp_path / "fake_gpu_tests"
    d.mkdir()
    (d / "test_fake.py").write_text("import pytest\n\n" + body)
    return str(d)


def test_passed_run_exits_zero_and_says_passed(tmp_path):
    gpu_check = _load_gpu_check()
    tests = _tests_dir(tmp_path, "def test_ok():\n    assert True\n\n\n"
                                 "def test_two_gpus():\n    pytest.skip('TP=2 needs 2 GPUs, 1 visible')\n")
    out = tmp_path / "out"
    assert gpu_check.cli([*SMOKE, "--out", str(out), "--tests", tests]) == 0
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["sections"]["tests"]["status"] == "ok"
    assert result["sections"]["tests"]["counts"]["skipped"] == 1  # an allowed skip: hardware
    assert (out / "gpu_check.md").read_text().splitlines()[0].startswith("PASSED")


def test_failed_test_fails_the_check(tmp_path):
    gpu_check = _load_gpu_check()
    tests = _tests_dir(tmp_path, "def test_gradients():\n    assert 0.85 > 0.9995, 'cosine'\n")
    out = tmp_path / "out"
    assert gpu_check.cli([*SMOKE, "--out", str(out), "--tests", tests]) == 1
    first = (out / "gpu_check.md").read_text().splitlines()[0]
    assert first.startswith("FAILED: tests failed") and "1 failed" in first and "test_gradients" in first


def test_disallowed_skip_fails_the_check(tmp_path):
    """A test skipped because something is missing (here the NeMo stack) is a failure of the check."""
    gpu_check = _load_gpu_check()
    tests = _tests_dir(tmp_path, "def test_nemo():\n    pytest.skip('the nemo extra is not installed')\n")
    out = tmp_path / "out"
    assert gpu_check.cli([*SMOKE, "--out", str(out), "--tests", tests]) == 1
    first = (out / "gpu_check.md").read_text().splitlines()[0]
    assert first.startswith("FAILED: tests failed") and "the nemo extra is not installed" in first
    assert gpu_check.cli([*SMOKE, "--out", str(out), "--tests", tests, "--allow-skip", "nemo extra"]) == 0


def test_section_error_fails_the_check(tmp_path, monkeypatch):
    gpu_check = _load_gpu_check()

    def broken(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_check, "run_full_kv", broken)
    out = tmp_path / "out"
    assert gpu_check.cli([*SMOKE, "--out", str(out), "--skip-tests"]) == 1
    first = (out / "gpu_check.md").read_text().splitlines()[0]
    assert first.startswith("FAILED: full_kv error (RuntimeError: CUDA error: an illegal memory access")
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["sections"]["train_step"]["status"] == "ok"  # the next section still ran


def test_model_build_crash_fails_the_check(tmp_path, monkeypatch, capsys):
    gpu_check = _load_gpu_check()
    monkeypatch.setattr(gpu_check, "random_focus_model", lambda *a: (_ for _ in ()).throw(MemoryError("7b")))
    out = tmp_path / "out"
    assert gpu_check.cli([*SMOKE, "--out", str(out), "--skip-tests"]) == 1
    assert (out / "gpu_check.md").read_text().splitlines()[0] == "FAILED: crashed: MemoryError: 7b"
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == "[gpu_check] FAILED: crashed: MemoryError: 7b"


def _run_sh(tmp_path, *args, timeout_env=None):
    import os
    import subprocess
    import sys

    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable, GPU_CHECK_SITE=str(tmp_path / "site"))
    env["GPU_CHECK_TIMEOUT"] = str(timeout_env or 300)
    return subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_shell_script_exit_status_and_first_line(tmp_path):
    """Through gpu_check.sh (which tees the output into its log): a failing test gives a non-zero status,
    the log's first line and the last line printed say FAILED and why; a passing run gives 0 and PASSED."""
    failing = _tests_dir(tmp_path, "def test_bad():\n    assert False, 'wrong gradients'\n")
    proc = _run_sh(tmp_path, *SMOKE, "--tests", failing)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = (tmp_path / "out" / "gpu_check.log").read_text().splitlines()
    assert log[0].startswith("FAILED: tests failed") and "test_bad" in log[0]
    assert proc.stdout.rstrip().splitlines()[-1] == log[0]

    passing = tmp_path / "ok"
    passing.mkdir()
    (passing / "test_ok.py").write_text("def test_ok():\n    pass\n")
    proc = _run_sh(tmp_path, *SMOKE, "--tests", str(passing))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "out" / "gpu_check.log").read_text().startswith("PASSED")


def test_shell_script_time_out_fails(tmp_path):
    """gpu_check.py killed at the wall-clock limit: non-zero status, FAILED and why."""
    hanging = _tests_dir(tmp_path, "def test_hangs():\n    import time\n    time.sleep(120)\n")
    proc = _run_sh(tmp_path, *SMOKE, "--tests", hanging, "--budget-s", "1000", timeout_env=12)
    assert proc.returncode in (124, 137), proc.stdout[-2000:]
    last = proc.stdout.rstrip().splitlines()[-1]
    assert last.startswith("FAILED: gpu_check.py timed out after")
    assert (tmp_path / "out" / "gpu_check.log").read_text().splitlines()[0] == last
