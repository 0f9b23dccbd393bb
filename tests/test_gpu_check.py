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
    assert (tmp_path / "gpu_check.md").read_text().startswith("# GPU check: tiny shape")
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
