"""focus_nemo.profiling and recipes/profile_memory.py: argument parsing, power-law fits, the budget
rule, exact state bytes of each method, isolated runs and the output files."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import math
import os
from pathlib import Path

import pytest
import torch

from focus_nemo.evo2 import Evo2Config
from focus_nemo.focus import FocusConfig
from focus_nemo.focus.config import default_horizon
from focus_nemo.loading import load_focus_model
from focus_nemo.profiling import (
    CSV_COLUMNS,
    ProfileConfig,
    ProfileResult,
    fit_power_law,
    isolated,
    measure,
    method_label,
    parse_length,
    parse_lengths,
    parse_max_lengths,
    parse_methods,
    predict_seconds,
    profile,
    sequence_tokens,
    write_outputs,
)

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "profile_memory.py"
K, W, CHUNK = 10, 96, 40  # k does not divide W, chunks cross window boundaries, lengths end mid-window
LENGTHS = (256, 1024)


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def tiny(**kw) -> ProfileConfig:
    return ProfileConfig(**{"checkpoint": "random:tiny", "k": K, "window": W, "chunk_size": CHUNK, "threads": 1,
                            **kw})


def entry_bytes(preset: str, dtype_bytes: int = 4) -> tuple[int, int]:
    """(attention blocks, bytes of one key + value entry per attention block) of a preset."""
    cfg = Evo2Config.preset(preset)
    return len(cfg.attention_layers), 2 * cfg.hidden_size * dtype_bytes


# ---------------------------------------------------------------------- arguments
def test_parse_length_units():
    assert parse_length("4096") == 4096
    assert parse_length("1k") == 1024
    assert parse_length("64K") == 65536
    assert parse_length("4M") == 4 * 2**20
    assert parse_length("1.5M") == 3 * 2**19
    assert parse_lengths("4k, 1k,1k,256") == [256, 1024, 4096]
    for bad in ("", "0", "-3", "1.5", "4x", "k"):
        with pytest.raises(ValueError, match="length"):
            parse_length(bad)


def test_parse_methods():
    assert parse_methods("truncation,focus") == ["truncation", "focus"]
    assert parse_methods("focus_h") == ["focus_h"]
    with pytest.raises(ValueError, match="full_kv"):
        parse_methods("focus,full_kv")


# ---------------------------------------------------------------------- fitting and the budget rule
def test_fit_recovers_power_law_exponent():
    xs = [2**i for i in range(10, 23)]
    ys = [3e-7 * x**1.7 for x in xs]
    fit = fit_power_law(xs, ys)
    assert fit.exponent == pytest.approx(1.7, abs=1e-9)
    assert fit.coefficient == pytest.approx(3e-7, rel=1e-8)
    assert fit(2**24) == pytest.approx(3e-7 * 2**(24 * 1.7), rel=1e-8)
    # Short lengths dominated by a fixed cost bias the fit unless excluded by min_x.
    xs2, ys2 = [16, 64, *xs], [1.0, 1.0, *ys]
    assert abs(fit_power_law(xs2, ys2).exponent - 1.7) > 0.1
    held = fit_power_law(xs2, ys2, min_x=1024)
    assert held.exponent == pytest.approx(1.7, abs=1e-9)
    assert held.lengths == tuple(xs)


def test_fit_needs_two_positive_points():
    assert fit_power_law([1024], [1.0]) is None
    assert fit_power_law([1024, 2048, 4096], [1.0, 0.0, None]) is None
    assert fit_power_law([1024, 2048], [1.0, 2.0], min_x=2048) is None
    assert fit_power_law([1024, 1024], [1.0, 2.0]) is None


def test_predict_seconds_uses_the_steeper_of_prior_and_measured_slope():
    assert predict_seconds([], [], 4096) is None
    assert predict_seconds([1024], [2.0], 4096, exponent=1.0) == pytest.approx(8.0)
    assert predict_seconds([1024, 2048], [1.0, 4.0], 4096, exponent=1.0) == pytest.approx(16.0)  # measured 2
    assert predict_seconds([1024, 2048], [1.0, 1.5], 4096, exponent=2.0) == pytest.approx(6.0)  # prior 2


# ---------------------------------------------------------------------- a tiny run through the recipe
@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("profile_memory_recipe", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    out = tmp_path_factory.mktemp("profile")
    argv = ["--checkpoint", "random:tiny", "--lengths", ",".join(map(str, LENGTHS)),
            "--methods", "focus,full,truncation", "--k", str(K), "--window", str(W), "--chunk-size", str(CHUNK),
            "--threads", "1", "--isolation", "none", "--fit-min-length", "256", "--out", str(out), "--name", "tiny"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = recipe.main(argv)
    return result, out, printed.getvalue()


def rows_by(result: ProfileResult) -> dict:
    return {(r["method"], r["length"]): r for r in result.rows}


def test_recipe_writes_csv_json_markdown_and_plot(recipe_run):
    result, out, printed = recipe_run
    paths = {ext: out / f"tiny.{ext}" for ext in ("csv", "json", "md", "png")}
    for p in paths.values():
        assert str(p) in printed
    with open(paths["csv"]) as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = list(reader)
    assert [(r["method"], int(r["length"]), r["status"]) for r in rows] == [
        (m, n, "ok") for m in ("focus", "full", "truncation") for n in LENGTHS]
    assert all(float(r["seconds"]) > 0 and int(r["peak_rss_growth_bytes"]) >= 0 for r in rows)
    assert all(0 < float(r["cpu_seconds"]) for r in rows)
    assert all(r["peak_gpu_bytes"] == "" and r["device"] == "cpu" for r in rows)
    data = json.loads(paths["json"].read_text())
    assert data["config"]["k"] == K and data["config"]["window"] == W and data["config"]["chunk_size"] == CHUNK
    assert "chr20" in data["sequence"]
    assert set(data["fits"]) == {"focus", "full", "truncation"}
    assert all(data["fits"][m]["time"]["lengths"] == list(LENGTHS) for m in data["fits"])
    assert len(data["rows"]) == 6
    md = paths["md"].read_text()
    assert "| method | length | time s |" in md and "| truncation | 1,024 |" in md
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "fitted time exponent" in printed
    for m, e in result.time_exponents().items():
        assert f"{m:<10} {e:.2f} over 2 lengths" in printed


def test_focus_attention_state_is_the_formula_and_the_streaming_state(recipe_run):
    result, _, _ = recipe_run
    n_attn, per_entry = entry_bytes("tiny")
    fm = load_focus_model("random:tiny", None, focus=FocusConfig(k=K, window=W))
    for n in LENGTHS:
        row = rows_by(result)[("focus", n)]
        completed, part = divmod(n, W)
        expected = n_attn * completed * math.ceil(W / K) * per_entry + n_attn * part * per_entry
        assert row["attention_state_bytes"] == expected
        assert row["focus_memory_entries_per_attention_block"] == completed * math.ceil(W / K)
        state = fm.init_state(1)
        with torch.no_grad():
            for _ in fm.stream(sequence_tokens(n), CHUNK, state=state):
                pass
        nb = state.nbytes()
        assert row["attention_state_bytes"] == nb["focus_memory"] + nb["window"]
        assert row["hyena_state_bytes"] == nb["hyena"]


def test_full_kv_grows_linearly_and_truncation_and_hyena_stay_constant(recipe_run):
    result, _, _ = recipe_run
    n_attn, per_entry = entry_bytes("tiny")
    by = rows_by(result)
    for n in LENGTHS:
        assert by[("full", n)]["attention_state_bytes"] == n_attn * n * per_entry
        assert by[("truncation", n)]["attention_state_bytes"] == n_attn * (n % W or W) * per_entry
    fits = result.fits()
    assert fits["full"]["attention_state"].exponent == pytest.approx(1.0, abs=1e-12)
    assert fits["truncation"]["attention_state"].exponent == pytest.approx(0.0, abs=1e-12)
    assert len({r["hyena_state_bytes"] for r in result.rows}) == 1


def test_focus_formula_with_two_attention_blocks_and_bf16():
    n_attn, per_entry = entry_bytes("small", dtype_bytes=2)
    assert n_attn == 2
    n = 1000
    row = measure(tiny(checkpoint="random:small", dtype="bf16"), "focus", n)
    assert row["status"] == "ok", row
    completed, part = divmod(n, W)
    assert row["attention_state_bytes"] == n_attn * (completed * math.ceil(W / K) + part) * per_entry


def test_focus_with_the_local_band_counts_the_band_in_its_state():
    """With ``--local 1`` a FOCUS run keeps the previous window's keys/values besides the Focus memory of the
    older windows and the current window; the row counts all of them and records the band."""
    n_attn, per_entry = entry_bytes("tiny")
    n = 3 * W + 40  # three completed windows, 40 bases into the fourth
    row = measure(tiny(local=1), "focus", n)
    assert row["status"] == "ok", row
    assert row["local"] == 1
    band = W  # window 2's bases exactly (windows 0 and 1 are seen through their Focus entries)
    # every completed window's Focus entries are held (window 2's become visible once it leaves the band)
    assert row["focus_memory_entries_per_attention_block"] == 3 * math.ceil(W / K)
    assert row["attention_state_bytes"] == n_attn * (3 * math.ceil(W / K) + band + 40) * per_entry
    plain = measure(tiny(local=0), "focus", n)
    assert plain["local"] == 0
    assert row["attention_state_bytes"] - plain["attention_state_bytes"] == n_attn * band * per_entry
    with pytest.raises(ValueError, match="local: must be an integer >= 0"):
        tiny(local=-1)


# ---------------------------------------------------------------------- focus_h: FOCUS with a horizon
H = 2 * W  # two windows of Focus memory: ceil(W/K) = 10 entries each


@pytest.fixture(scope="module")
def horizon_run(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("profile_memory_recipe_h", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    out = tmp_path_factory.mktemp("profile_h")
    argv = ["--checkpoint", "random:tiny", "--lengths", ",".join(map(str, (*LENGTHS, 2048))),
            "--methods", "focus_h,focus,truncation", "--horizon", str(H), "--max-length", "focus=1024,truncation=256",
            "--k", str(K), "--window", str(W), "--chunk-size", str(CHUNK), "--threads", "1", "--isolation", "none",
            "--fit-min-length", "256", "--out", str(out), "--name", "tiny_h"]
    with contextlib.redirect_stdout(io.StringIO()):
        result = recipe.main(argv)
    return result, out


def test_focus_h_attention_state_is_bounded_by_the_horizon(horizon_run):
    result, _ = horizon_run
    n_attn, per_entry = entry_bytes("tiny")
    by = rows_by(result)
    bound = (H // W) * math.ceil(W / K)  # Focus entries per attention block, whatever the length
    for n in (*LENGTHS, 2048):
        row = by[("focus_h", n)]
        assert row["status"] == "ok", row
        completed, part = divmod(n, W)
        entries = min(completed, H // W) * math.ceil(W / K)
        assert row["focus_memory_entries_per_attention_block"] == entries <= bound
        assert row["attention_state_bytes"] == n_attn * (entries + part) * per_entry
        assert row["attention_state_bytes"] <= n_attn * (bound + W) * per_entry
        assert row["horizon"] == H
    # below the horizon focus_h is focus; beyond it focus keeps every entry
    assert by[("focus_h", 256)]["attention_state_bytes"] == by[("focus", 256)]["attention_state_bytes"]
    assert by[("focus", 1024)]["focus_memory_entries_per_attention_block"] == (1024 // W) * math.ceil(W / K) > bound
    assert result.fits()["focus_h"]["attention_state"].exponent < 0.2  # state flat in the length


def test_focus_h_rows_appear_in_csv_json_markdown_and_plot(horizon_run):
    result, out = horizon_run
    with open(out / "tiny_h.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], int(r["length"])) for r in rows] == [
        ("focus_h", 256), ("focus_h", 1024), ("focus_h", 2048), ("focus", 256), ("focus", 1024), ("truncation", 256)]
    assert [r["horizon"] for r in rows] == [str(H)] * 3 + [""] * 3
    data = json.loads((out / "tiny_h.json").read_text())
    assert data["config"]["horizon"] == H and "focus_h" in data["fits"]
    md = (out / "tiny_h.md").read_text()
    assert "| focus_h | 2,048 |" in md and "| focus | 1,024 |" in md and "| focus | 2,048 |" not in md
    assert f"horizon of {H:,} bases (2 windows: at most 20 Focus entries per attention block" in md
    assert method_label(result, "focus_h") == f"focus_h (horizon {H:,})"
    assert (out / "tiny_h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_focus_h_horizon_auto_and_bad_horizons():
    row = measure(tiny(), "focus_h", 256)  # default horizon: auto, the base's trained context
    assert row["status"] == "ok", row
    assert row["horizon"] == default_horizon(Evo2Config.preset("tiny"), W)
    with pytest.raises(ValueError, match="not a multiple of the window"):
        tiny(horizon=W + 1)
    with pytest.raises(ValueError, match="focus_h needs a horizon"):
        tiny(horizon=None)
    with pytest.raises(ValueError, match="method=length"):
        parse_max_lengths("focus2M")
    assert parse_max_lengths("focus=2M, truncation=1k") == {"focus": 2 * 2**20, "truncation": 1024}


# ---------------------------------------------------------------------- budget, failures, isolation
def test_budget_skips_longer_lengths_and_records_the_prediction(tmp_path):
    cfg = tiny()
    rows = profile(cfg, ["full"], [256, 1024, 4096], budget=1e-9, isolate=False)
    assert [r["status"] for r in rows] == ["ok", "skipped", "skipped"]
    p1, p2 = rows[1]["predicted_seconds"], rows[2]["predicted_seconds"]
    assert 1e-9 < p1 < p2
    assert "budget" in rows[1]["note"]
    result = ProfileResult(cfg, rows, budget=1e-9)
    paths = write_outputs(result, tmp_path, "skips")
    with open(paths["csv"]) as f:
        written = list(csv.DictReader(f))
    assert [r["status"] for r in written] == ["ok", "skipped", "skipped"]
    assert float(written[2]["predicted_seconds"]) == pytest.approx(p2) and written[2]["seconds"] == ""
    assert "skipped: predicted" in paths["md"].read_text()
    assert result.fits()["full"]["time"] is None  # one measured length: no exponent


def test_failed_run_is_recorded_and_longer_lengths_are_not_run(tmp_path):
    cfg = tiny(checkpoint=str(tmp_path / "missing.pt"))
    rows = profile(cfg, ["focus"], [256, 1024], isolate=False)
    assert rows[0]["status"] == "error" and "FileNotFoundError" in rows[0]["note"]
    assert rows[1]["status"] == "skipped" and "256 failed" in rows[1]["note"]


def test_isolated_run_matches_in_process_and_reports_a_dead_child():
    cfg = tiny()
    here = measure(cfg, "full", 256)
    there = isolated(measure, cfg, "full", 256)
    assert there["status"] == "ok"
    assert there["attention_state_bytes"] == here["attention_state_bytes"]
    assert there["hyena_state_bytes"] == here["hyena_state_bytes"]
    dead = isolated(os._exit, 3)
    assert "error" in dead and "exit code 3" in dead["error"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_reports_allocator_peak():
    row = measure(tiny(device="cuda", dtype="bf16"), "full", 1024)
    assert row["status"] == "ok", row
    assert row["peak_gpu_growth_bytes"] >= row["attention_state_bytes"] > 0
    assert row["peak_gpu_bytes"] >= row["peak_gpu_growth_bytes"]
