"""The recall section of the evaluation: the repeat-copy probe for every method on the same trials, the fraction
of full context's copy advantage retained, its files, and its settings."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from focus_nemo.evaluate import EvalConfig, RecallSection, SourceSection, config_from_hydra, evaluate
from focus_nemo.evaluation.recall import (
    RECALL_COLUMNS,
    RECALL_SUMMARY_COLUMNS,
    RecallMethod,
    read_recall_csv,
    recall_probe_methods,
    recall_summary,
    recall_summary_markdown,
    write_recall_csv,
)
from focus_nemo.evaluation.recall_run import recall_heldout
from focus_nemo.training.config import ModelSection

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="evaluate_focus", overrides=["run_dir=/tmp/x", *overrides])


def random_bytes(n, seed):
    return np.frombuffer(b"ACGT", dtype=np.uint8)[np.random.default_rng(seed).integers(0, 4, n)].copy()


def copier(reach: int | None):
    """Logits that predict the base which followed the same 12-mer earlier (no further back than `reach`
    bases), else uniform: a model that copies perfectly within its reach."""

    def fn(tokens):
        seq = tokens[0].tolist()
        logits = torch.zeros(1, len(seq), 512)
        seen = {}
        for i in range(len(seq)):
            key = tuple(seq[max(0, i - 11): i + 1])
            j = seen.get(key) if len(key) == 12 else None
            if j is not None and (reach is None or i - j <= reach):
                logits[0, i, seq[j + 1]] = 20.0
            if i + 1 < len(seq):
                seen[key] = i
        return logits

    return fn


# ------------------------------------------------------------------------------------------ probe and summary
def test_a_perfect_copier_retains_everything_and_a_short_reach_nothing_beyond_it():
    held = random_bytes(40_000, 1)
    seg = 64
    methods = [RecallMethod("full", None, copier(None), max_len=2 * seg + 1024),
               RecallMethod("truncation", None, copier(300)),
               RecallMethod("focus", 8, copier(None), budget=lambda n: n // 8)]
    dists = [16, 512, 4096]
    rows = recall_probe_methods(methods, held, dists, n_trials=4, seed=2, variants=("exact", "revcomp"),
                                segment=seg)
    # Paired: every method reads the same trials (the same control CE where the predictions agree).
    for d in (16, 512):
        ctrl = {(r["method"], r["trial"], r["control"]): r["ce_control"] for r in rows if r["distance"] == d}
        assert {t for (m, t, _) in ctrl if m == "full"} == {t for (m, t, _) in ctrl if m == "focus"} == set(range(4))
        assert all(ctrl[("full", t, c)] == ctrl[("focus", t, c)] for (m, t, c) in ctrl if m == "full")
    assert not any(r["method"] == "full" and r["distance"] == 4096 for r in rows)  # window beyond max_len
    summ = recall_summary(rows, [(m.name, m.k, m.max_len) for m in methods], dists, ("exact", "revcomp"),
                          segment=seg)
    assert len(summ) == 3 * 3 * 2 * 2
    at = {(r["method"], r["distance"], r["variant"], r["control"]): r for r in summ}
    for d in (16, 512):
        full = at[("full", d, "exact", "native")]
        assert full["advantage"] > 4.0  # control CE ~ln 512, the copy's ~0 after its first 12 bases
        assert full["retained"] == 1.0 and full["retained_ci_low"] == full["retained_ci_high"] == 1.0
        assert full["reference"] == "full, same distance" and full["status"] == "ok"
        assert at[("focus", d, "exact", "native")]["retained"] == pytest.approx(1.0)
    assert at[("truncation", 16, "exact", "native")]["retained"] == pytest.approx(1.0)
    assert abs(at[("truncation", 512, "exact", "native")]["retained"]) < 0.05  # the copy is out of its reach
    # Beyond full context's max length: full absent (said so), the others against full at 512.
    gone = at[("full", 4096, "exact", "native")]
    assert gone["trials"] == 0 and math.isnan(gone["advantage"]) and gone["status"].startswith("absent: window of")
    far = at[("focus", 4096, "exact", "native")]
    assert far["trials"] == 4 and far["reference_distance"] == 512 and "d = 512" in far["reference"]
    assert far["retained"] == pytest.approx(1.0, abs=0.02)
    # A forward copier gains nothing from a reverse complement: no positive reference, so retained is undefined.
    rc = at[("focus", 16, "revcomp", "native")]
    assert math.isnan(rc["retained"]) and rc["status"].startswith("no reference")
    md = recall_summary_markdown(summ)
    assert "| full | - | exact | +" in md and "absent" in md and "†" in md
    # Below a minimum reference, no ratio: a copy advantage near 0 has none worth dividing by.
    strict = recall_summary(rows, [(m.name, m.k, m.max_len) for m in methods], dists, ("exact", "revcomp"),
                            segment=seg, min_reference=10.0)
    assert all(math.isnan(r["retained"]) for r in strict)
    assert next(r for r in strict if r["trials"])["status"].endswith("below 10.0")
    assert "| truncation | - | exact |" in md and "d = 4 kb" in md


def test_recall_csv_round_trips(tmp_path):
    held = random_bytes(20_000, 3)
    methods = [RecallMethod("full", None, copier(None), max_len=200), RecallMethod("sliding", 16, copier(100))]
    rows = recall_probe_methods(methods, held, [8, 200], n_trials=3, seed=0, segment=32)
    summ = recall_summary(rows, [(m.name, m.k, m.max_len) for m in methods], [8, 200], segment=32)
    write_recall_csv(tmp_path / "r.csv", rows, RECALL_COLUMNS)
    write_recall_csv(tmp_path / "s.csv", summ, RECALL_SUMMARY_COLUMNS)
    back = read_recall_csv(tmp_path / "r.csv")
    assert back == [{c: r[c] for c in RECALL_COLUMNS} for r in rows]

    def same(a, b):
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))

    back_s = read_recall_csv(tmp_path / "s.csv")
    assert len(back_s) == len(summ)
    for a, b in zip(back_s, summ, strict=True):
        assert all(same(a[c], b[c]) for c in RECALL_SUMMARY_COLUMNS), (a, b)
    # The summary recomputed from the file is the summary.
    again = recall_summary(back, [(m.name, m.k, m.max_len) for m in methods], [8, 200], segment=32)
    for a, b in zip(again, summ, strict=True):
        assert all(same(a[c], b[c]) for c in RECALL_SUMMARY_COLUMNS), (a, b)


# ------------------------------------------------------------------------------------------ the recipe
def _tiny(run_dir: Path, **recall) -> EvalConfig:
    return EvalConfig(model=ModelSection(checkpoint="random", preset="tiny"), adapter=None,
                      sources=[SourceSection(fasta="bundled:chr20_heldout")], lengths=[160], num_sequences=1,
                      ks=[8, 16], window=64, position_bins=8, seed=3, plots=True, run_dir=str(run_dir),
                      recall=RecallSection(**{"enabled": True, "distances": [0, 40, 120], "n_trials": 2,
                                              "segment": 24, "full_max_len": 100, "ks": [8], **recall}))


def test_recall_section_runs_end_to_end_paired_and_writes_its_files(tmp_path):
    methods = ["focus", "focus_local", "truncation", "sliding", "sliding_local"]
    result = evaluate(_tiny(tmp_path / "a", methods=methods))
    run = tmp_path / "a"
    for name in ("recall.csv", "recall_summary.csv", "recall.md", "recall_info.json", "summary.csv"):
        assert (run / name).exists(), name
    assert (run / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run / "config.json").read_text())["recall_methods_used"] == ["full", *methods]
    rows = read_recall_csv(run / "recall.csv")
    # full runs on windows up to 100 bases (d = 0, 40: 48 and 88 bases), the 5 others everywhere
    assert len(rows) == (2 + 3 * 5) * 2 * 3 * 2
    assert {r["distance"] for r in rows if r["method"] == "full"} == {0, 40}
    # Paired: at d = 0 the window (48 bases) is inside the first W = 64 bases, where every method is the base
    # model itself (DESIGN I1): the same trials give the same advantage in every method.
    base = {(r["trial"], r["variant"], r["control"]): r["advantage"] for r in rows
            if r["distance"] == 0 and r["method"] == "full"}
    for r in rows:
        if r["distance"] == 0:
            assert r["advantage"] == pytest.approx(base[(r["trial"], r["variant"], r["control"])], abs=1e-5)
    # 167 inputs at d = 120: two completed windows of 64 before the last one, 8 Focus entries each
    budgets = {r["method"]: r["attention_budget"] for r in rows if r["distance"] == 120}
    assert budgets["truncation"] == 64 and budgets["sliding"] == budgets["focus"] == 64 + 8 * 2
    assert budgets["focus_local"] == budgets["sliding_local"] == 64 + 8 * 2 + 64
    summ = read_recall_csv(run / "recall_summary.csv")
    assert len(summ) == len(result["recall"]) == 6 * 3 * 3 * 2
    gone = [r for r in summ if r["method"] == "full" and r["distance"] == 120]
    assert gone and all(r["trials"] == 0 and r["status"] == "absent: window of 168 bases > max length 100"
                        for r in gone)
    assert all(r["reference_distance"] == 40 for r in summ if r["distance"] == 120 and r["method"] != "full")
    md = (run / "recall.md").read_text()
    assert "absent" in md and "native control" in md and "foreign control" in md
    # Recall alone: no fidelity files, and the same recall numbers.
    evaluate(_tiny(tmp_path / "b", methods=methods, only=True))
    assert not (tmp_path / "b" / "summary.csv").exists()
    assert (tmp_path / "b" / "recall.csv").read_bytes() == (run / "recall.csv").read_bytes()


def test_recall_config_defaults_and_bad_settings_name_key_and_value(tmp_path):
    cfg = config_from_hydra(_compose())
    rc = cfg.recall
    assert not rc.enabled and rc.distances == [64, 1024, 4096, 16384] and rc.n_trials >= 32
    assert rc.variants == ["exact", "diverged", "revcomp"] and rc.controls == ["native", "foreign"]
    assert rc.methods_used(cfg.methods_for(1)) == ["full", "focus_local", "truncation", "sliding_local"]
    on = config_from_hydra(_compose("recall.only=true", "recall.methods=[focus,sliding]"))
    assert on.recall.enabled and on.recall.methods_used([]) == ["full", "focus", "sliding"]
    for override, match in (("recall.distances=[64,-5]", r"recall\.distances: -5 "),
                            ("recall.distances=[]", r"recall\.distances: empty"),
                            ("recall.n_trials=1", r"recall\.n_trials: 1 < 2"),
                            ("recall.variants=[exact,mirror]", r"recall\.variants: \['mirror'\]"),
                            ("recall.controls=[shuffled]", r"recall\.controls: \['shuffled'\]"),
                            ("recall.methods=[focus,beam]", r"recall\.methods: \['beam'\]"),
                            ("recall.ks=[0]", r"recall\.ks: \[0\]"),
                            ("recall.full_max_len=1", r"recall\.full_max_len: 1"),
                            ("recall.min_reference=-0.1", r"recall\.min_reference: -0\.1"),
                            ("recall.source=chr9", r"recall\.source: 'chr9'")):
        with pytest.raises(ValueError, match=match):
            config_from_hydra(_compose(override))
    with pytest.raises(Exception, match="distance"):
        config_from_hydra(_compose("+recall.distance=[3]"))
    with pytest.raises(ValueError, match=r"recall\.ks: .*larger than the window"):
        EvalConfig(ks=[8], lengths=[100], recall=RecallSection(ks=[128])).check_window(64)
    # A held-out region too short for a distance: the key and the numbers, before anything runs.
    fa = tmp_path / "short.fa"
    fa.write_text(">s\n" + random_bytes(3000, 0).tobytes().decode() + "\n")
    short = EvalConfig(sources=[SourceSection(fasta=str(fa))], recall=RecallSection(enabled=True, distances=[2000]))
    with pytest.raises(ValueError, match=r"recall\.distances: distance 2000 needs .* 5024 bases.* has 3000"):
        recall_heldout(short)
    ok = EvalConfig(sources=[SourceSection(fasta=str(fa))], recall=RecallSection(enabled=True, distances=[100]))
    where, seq = recall_heldout(ok)
    assert where == "short s:1-3000" and len(seq) == 3000


def test_recall_heldout_defaults_to_the_bundled_heldout_slice():
    where, seq = recall_heldout(EvalConfig(recall=RecallSection(enabled=True)))
    assert where == "chr20_heldout chr20_heldout:1-1000000" and len(seq) == 1_000_000


def test_recall_summary_csv_header(tmp_path):
    write_recall_csv(tmp_path / "e.csv", [], RECALL_SUMMARY_COLUMNS)
    with open(tmp_path / "e.csv") as f:
        assert tuple(next(csv.reader(f))) == RECALL_SUMMARY_COLUMNS
