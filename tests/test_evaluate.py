"""Fidelity evaluation: metrics, summary statistics, the sliding-window baseline and the recipe."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import dna_tokens, stressed_model
from hydra import compose, initialize_config_dir

from focus_nemo.evaluate import (
    SEQUENCE_COLUMNS,
    EvalConfig,
    EvalSequence,
    SourceSection,
    acgt_probs,
    attention_budget,
    bits_per_base,
    config_from_hydra,
    distribution_metrics,
    evaluate,
    evaluate_sequence,
    fidelity,
    paired_differences,
    segment_end_metrics,
    sliding_span,
    summarize,
    summary_stats,
    t_quantile,
)
from focus_nemo.evo2.model import KVCache
from focus_nemo.evo2.ops import sliding_window_attention
from focus_nemo.focus import FocusConfig, FocusModel
from focus_nemo.focus.loss import split_case
from focus_nemo.training.config import ModelSection

CONF = Path(__file__).resolve().parents[1] / "conf"
LN2 = math.log(2)


# ------------------------------------------------------------------------------------------ metrics
def test_distribution_metrics_hand_values():
    p = torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    q = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    m = distribution_metrics(p, q, torch.tensor([0, 3]))
    # Row 0, by hand: mixture (3/8, 1/4, 3/16, 3/16); Bhattacharyya coefficient 1/4 + sqrt(2)/2.
    expected = {
        "abs_dp_true": 0.25,
        "l1": 0.5,
        "l2": math.sqrt(0.25**2 + 2 * 0.125**2),
        "hellinger": math.sqrt(0.75 - math.sqrt(2) / 2),
        "js": 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3),
        "kl": 0.25 * LN2,
    }
    for name, value in expected.items():
        assert m[name][0].item() == pytest.approx(value, abs=1e-10), name
        assert m[name][1].item() == pytest.approx(0.0, abs=1e-10), name  # identical distributions
    # Which base is true matters only for |dp(true)|.
    assert distribution_metrics(p, q, torch.tensor([2, 3]))["abs_dp_true"][0].item() == pytest.approx(0.125)


def test_acgt_probs_renormalise_and_bits_use_full_vocabulary():
    logits = torch.full((1, 2, 512), -1e4)
    logits[..., [65, 67, 71, 84]] = torch.tensor([math.log(2.0), 0.0, 0.0, 0.0])
    logits[0, 1, 78] = math.log(5.0)  # 'N' takes half of the mass at position 1
    probs = acgt_probs(logits, torch.float64)
    assert torch.allclose(probs, torch.tensor([0.4, 0.2, 0.2, 0.2], dtype=torch.float64).expand(1, 2, 4))
    bits = bits_per_base(logits, torch.tensor([[65, 84]]))
    assert bits[0, 0].item() == pytest.approx(-math.log2(0.4), abs=1e-5)
    assert bits[0, 1].item() == pytest.approx(-math.log2(0.1), abs=1e-5)


# ------------------------------------------------------------------------------------------ statistics
@pytest.mark.parametrize("df, table", [(1, 12.706205), (2, 4.302653), (4, 2.776445), (10, 2.228139),
                                       (30, 2.042272), (120, 1.979930)])
def test_t_quantile_matches_tables(df, table):
    assert t_quantile(0.975, df) == pytest.approx(table, abs=2e-6)


def test_summary_stats_hand_values():
    s = summary_stats([1.0, 2.0, 3.0, 4.0, 10.0])
    std = math.sqrt(50 / 4)  # squared deviations 9 + 4 + 1 + 0 + 36
    half = 2.776445105 * std / math.sqrt(5)  # t(0.975, 4)
    assert (s["n"], s["mean"], s["median"]) == (5, 4.0, 3.0)
    assert s["std"] == pytest.approx(std, rel=1e-12)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((4.0 - half, 4.0 + half), rel=1e-8)
    one = summary_stats([2.5])
    assert one["mean"] == one["median"] == 2.5 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    with pytest.raises(ValueError, match="no values"):
        summary_stats([])


def test_summarize_groups_by_source_record_length_k_method():
    def row(chrom, k, method, kl, bits):
        return {"sequence_id": f"{chrom}{kl}", "source": "g", "chrom": chrom, "start": 0, "end": 10, "strand": "+",
                "length": 10, "k": k, "method": method, "attention_budget": 5, "positions": 4, "bits": bits,
                "bits_delta": 0.0, "abs_dp_true": 0.0, "l1": 0.0, "l2": 0.0, "hellinger": 0.0, "js": 0.0, "kl": kl,
                "seg_end_abs_dp": 0.0, "seg_end_kl": kl}

    rows = [row("a", 4, "focus", 1.0, 2.0), row("a", 4, "focus", 3.0, 2.0), row("b", 4, "focus", 8.0, 2.0),
            row("a", 8, "focus", 5.0, 1.0), row("b", 8, "focus", 7.0, 3.0)]
    out = {(s["chrom_group"], s["k"]): s for s in summarize(rows)}
    assert set(out) == {("all", 4), ("a", 4), ("b", 4), ("all", 8), ("a", 8), ("b", 8)}
    assert out[("all", 4)]["sequences"] == 3 and out[("all", 4)]["positions"] == 12
    assert out[("all", 4)]["kl_mean"] == pytest.approx(4.0) and out[("all", 4)]["kl_median"] == 3.0
    assert out[("all", 4)]["kl_std"] == pytest.approx(math.sqrt((9 + 1 + 16) / 2))
    assert out[("a", 4)]["kl_mean"] == pytest.approx(2.0)
    assert out[("all", 8)]["bits_mean"] == pytest.approx(2.0)
    # bits 1 and 3: std sqrt(2), half-width t(0.975, 1) * sqrt(2) / sqrt(2)
    assert out[("all", 8)]["bits_ci_high"] - 2.0 == pytest.approx(12.706205, rel=1e-6)


def test_paired_differences_subtract_per_sequence():
    def row(seq, method, k, bits, kl):
        return {"sequence_id": seq, "source": "g", "chrom": "c", "length": 10, "k": k, "method": method,
                "bits": bits, "abs_dp_true": 0.0, "js": 0.0, "kl": kl}

    rows = [row("s1", "focus", 4, 2.0, 1.0), row("s1", "truncation", "", 2.5, 4.0), row("s1", "sliding", 4, 1.0, 1.0),
            row("s2", "focus", 4, 3.0, 2.0), row("s2", "truncation", "", 3.1, 3.0), row("s2", "sliding", 4, 2.0, 2.0)]
    out = {p["comparison"]: p for p in paired_differences(rows)}
    assert set(out) == {"focus - truncation", "focus - sliding"}
    t = out["focus - truncation"]
    assert t["sequences"] == 2 and t["k"] == 4
    assert t["bits_mean"] == pytest.approx(-0.3) and t["kl_mean"] == pytest.approx(-2.0)
    assert t["kl_ci_high"] == pytest.approx(-2.0 + 12.706205, rel=1e-6)  # differences -3, -1: std sqrt(2)
    assert out["focus - sliding"]["bits_mean"] == pytest.approx(1.0) and out["focus - sliding"]["kl_std"] == 0.0


# ------------------------------------------------------------------------------------------ sliding window
def test_sliding_span_is_the_focus_attention_budget():
    assert sliding_span(10_000, 100, 1024) == 1024 + 11 * 9
    assert sliding_span(10_000, 25, 1024) == 1024 + 41 * 9
    assert sliding_span(1024, 100, 1024) == 1024  # one window: nothing completed before it
    assert sliding_span(1025, 100, 1024) == 1024 + 11
    assert attention_budget("focus", 10_000, 200, 1024) == 1024 + 6 * 9
    assert attention_budget("sliding", 10_000, 200, 1024) == 1024 + 6 * 9
    assert attention_budget("truncation", 10_000, 100, 1024) == 1024
    assert attention_budget("full", 10_000, 100, 1024) == 10_000


@pytest.mark.parametrize("span, block", [(1, 16), (7, 16), (40, 16), (40, 1024), (99, 32), (100, 16)])
def test_sliding_window_attention_matches_dense_band_mask(span, block):
    g = torch.Generator().manual_seed(span)
    q, k, v = (torch.randn(2, 3, 100, 8, generator=g) for _ in range(3))
    i = torch.arange(100)
    band = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - span)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=band)
    torch.testing.assert_close(sliding_window_attention(q, k, v, span, block=block), ref, atol=1e-6, rtol=1e-5)


def _dense_sliding_reference(model, tokens, span):
    """The base forward with each attention block given the dense banded mask."""
    x = model.embed(tokens)
    pos = torch.arange(tokens.shape[1])
    band = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - span)
    for block in model.blocks:
        h = block.pre_norm(x)
        if block.is_attention:
            q, k, v = block.attn.qkv(h, pos)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=band)
            x = x + block.attn.out_proj(block.attn.merge_heads(o))
        else:
            x = x + block.mixer(h)[0]
        x = block.mlp_residual(x)
    return model.head(x)


@torch.no_grad()
def test_sliding_window_model_equals_full_iff_span_covers_the_sequence():
    model = stressed_model(pattern="SDH*H*")
    tokens = dna_tokens(2, 150, seed=3)
    full = model(tokens)
    torch.testing.assert_close(model(tokens, attention_span=150), full, atol=1e-5, rtol=0)
    torch.testing.assert_close(model(tokens, attention_span=10_000), full, atol=1e-5, rtol=0)
    short = model(tokens, attention_span=40)
    torch.testing.assert_close(short, _dense_sliding_reference(model, tokens, 40), atol=1e-5, rtol=1e-5)
    # Identical while the span still covers the whole prefix, different after it.
    torch.testing.assert_close(short[:, :40], full[:, :40], atol=1e-5, rtol=0)
    assert (short[:, 40:] - full[:, 40:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="span"):
        model.blocks[3].attn(model.embed(tokens), torch.arange(150), KVCache(), span=40)


# ------------------------------------------------------------------------------------------ one sequence
def _seq(raw: np.ndarray) -> EvalSequence:
    return EvalSequence("s_0", "src", "chrX", 100, 100 + len(raw), "+", raw)


@torch.no_grad()
def test_evaluate_sequence_rows_agree_with_fidelity_and_skip_non_acgt_targets():
    torch.manual_seed(0)
    fm = FocusModel(stressed_model(), FocusConfig(k=8, window=32)).eval()
    raw = dna_tokens(1, 101, seed=5)[0].numpy().astype(np.uint8)
    raw[70] = ord("N")  # target of input position 69: not scored
    rows, profiles = evaluate_sequence(fm, _seq(raw), [8, 16], 32, ["focus", "truncation", "sliding"], bins=4)
    by = {(r["method"], r["k"]): r for r in rows}
    assert set(by) == {("full", ""), ("truncation", ""), ("focus", 8), ("focus", 16), ("sliding", 8),
                       ("sliding", 16)}
    assert all(r["positions"] == 100 - 32 - 1 for r in rows)
    assert all(by[("full", "")][m] == 0 for m in ("kl", "js", "abs_dp_true", "bits_delta"))
    for r in rows:
        assert r["bits"] - by[("full", "")]["bits"] == pytest.approx(r["bits_delta"], abs=1e-9)
    assert by[("sliding", 8)]["attention_budget"] == by[("focus", 8)]["attention_budget"] == 32 + 4 * 3
    assert by[("sliding", 16)]["attention_budget"] == 32 + 2 * 3
    ref = fidelity(fm, [torch.from_numpy(raw.astype(np.int64))[None]], k=16, window=32)
    for m in ("kl", "js", "abs_dp_true", "hellinger"):
        assert by[("focus", 16)][m] == pytest.approx(ref[f"focus_{m}"], rel=1e-6)
        assert by[("truncation", "")][m] == pytest.approx(ref[f"truncation_{m}"], rel=1e-6)
    assert by[("focus", 16)]["bits"] == pytest.approx(ref["bits_focus"], rel=1e-6)
    assert ref["positions"] == 67
    # Profiles: the position-in-window bins and the window-index bins both count every scored position.
    prof = profiles[(8, "focus")]
    assert prof.in_window[:, 0].sum() == prof.by_window[:, 0].sum() == 67
    assert list(prof.by_window[:, 0]) == [0, 32, 31, 4]
    kl_mean = prof.in_window[:, 1 + 6].sum() / 67
    assert kl_mean == pytest.approx(by[("focus", 8)]["kl"], rel=1e-9)


@torch.no_grad()
def test_evaluate_sequence_focus_local_is_focus_with_the_band_and_paired_with_focus():
    """``focus_local`` scores FOCUS with local = 1 (equal to the one-pass forward with that setting) and
    ``focus`` the paper's scheme, whatever the model's own setting; the paired report compares them."""
    fm = FocusModel(stressed_model(), FocusConfig(k=8, window=32, local=1)).eval()
    g = torch.Generator().manual_seed(2)
    for p in fm.focus_parameters().values():
        p.add_(0.1 * p.abs().mean() * torch.randn(p.shape, generator=g))
    raw = dna_tokens(1, 129, seed=6)[0].numpy().astype(np.uint8)
    rows, _ = evaluate_sequence(fm, _seq(raw), [8], 32, ["focus", "focus_local", "truncation"], bins=4)
    by = {(r["method"], r["k"]): r for r in rows}
    assert fm.config.local == 1  # restored
    ref_local = fidelity(fm, [torch.from_numpy(raw.astype(np.int64))[None]], k=8, window=32)
    fm.config.local = 0
    ref_paper = fidelity(fm, [torch.from_numpy(raw.astype(np.int64))[None]], k=8, window=32)
    assert by[("focus_local", 8)]["kl"] == pytest.approx(ref_local["focus_kl"], rel=1e-6)
    assert by[("focus", 8)]["kl"] == pytest.approx(ref_paper["focus_kl"], rel=1e-6)
    assert abs(by[("focus_local", 8)]["kl"] - by[("focus", 8)]["kl"]) > 1e-6
    assert by[("focus_local", 8)]["attention_budget"] == 32 + 4 * 3 + 32
    assert attention_budget("focus_local", 20, 8, 32) == 32  # one window: no band yet
    pairs = {p["comparison"] for p in paired_differences(rows)}
    assert pairs == {"focus - truncation", "focus_local - truncation", "focus_local - focus"}


@torch.no_grad()
def test_sliding_local_has_the_band_budget_and_segment_ends_use_the_whole_vocabulary():
    """``sliding_local`` is the sliding window at FOCUS-with-band's key/value budget; the published protocol's
    columns are distances over all 512 tokens at the last position of every W-base segment after the first."""
    fm = FocusModel(stressed_model(), FocusConfig(k=8, window=32, local=1)).eval()
    raw = dna_tokens(1, 129, seed=7)[0].numpy().astype(np.uint8)
    raw[96] = ord("n")  # target of input 95, the end of the third segment: not scored
    rows, _ = evaluate_sequence(fm, _seq(raw), [8], 32, ["focus_local", "sliding", "sliding_local"], bins=4)
    by = {(r["method"], r["k"]): r for r in rows}
    span = 32 + 4 * 3 + 32
    assert by[("sliding_local", 8)]["attention_budget"] == by[("focus_local", 8)]["attention_budget"] == span
    assert by[("sliding", 8)]["attention_budget"] == span - 32
    tokens, _ = split_case(torch.from_numpy(raw.astype(np.int64))[None], 1.0)  # as scored: case folded
    x, y = tokens[:, :-1], tokens[:, 1:]
    full, test = fm.base(x), fm.base(x, attention_span=span)
    bits = F.cross_entropy(test[0, 32:], y[0, 32:], reduction="none") / LN2
    scored = torch.ones(128, dtype=torch.bool)
    scored[:32] = False
    scored[95] = False
    assert by[("sliding_local", 8)]["bits"] == pytest.approx(bits[scored[32:]].mean().item(), rel=1e-5)
    ends = [63, 127]  # 2W-1, 4W-1 (3W-1 has an N target)
    p, q = F.softmax(full[0, ends].double(), -1), F.softmax(test[0, ends].double(), -1)
    kl = (p * (p.log() - q.log())).sum(-1).mean().item()
    dp = (p - q).gather(-1, y[0, ends, None]).abs().mean().item()
    assert by[("sliding_local", 8)]["seg_end_kl"] == pytest.approx(kl, rel=1e-6)
    assert by[("sliding_local", 8)]["seg_end_abs_dp"] == pytest.approx(dp, rel=1e-6)
    assert by[("full", "")]["seg_end_kl"] == 0.0 and kl > 0
    pairs = {p["comparison"] for p in paired_differences(rows)}
    assert pairs == {"focus_local - sliding", "focus_local - sliding_local"}
    assert segment_end_metrics(full[0, ends], full[0, ends], y[0, ends])["seg_end_kl"].abs().max() < 1e-12


def test_evaluate_sequence_with_a_horizon_bounds_focus_and_the_sliding_span():
    torch.manual_seed(0)
    fm = FocusModel(stressed_model(), FocusConfig(k=8, window=32, horizon=64)).eval()  # two windows of memory
    raw = dna_tokens(1, 161, seed=6)[0].numpy().astype(np.uint8)
    rows, _ = evaluate_sequence(fm, _seq(raw), [8], 32, ["focus", "sliding"], bins=4)
    by = {(r["method"], r["k"]): r for r in rows}
    # 160 inputs: 4 completed windows before the last one, of which the horizon keeps 2
    assert by[("focus", 8)]["attention_budget"] == by[("sliding", 8)]["attention_budget"] == 32 + 4 * 2
    assert sliding_span(160, 8, 32, 2) == 32 + 4 * 2 < sliding_span(160, 8, 32) == 32 + 4 * 4
    assert attention_budget("focus", 160, 8, 32, 2) == 40 and attention_budget("full", 160, 8, 32, 2) == 160
    x = torch.from_numpy(raw[:-1].astype(np.int64))[None]
    bounded, unbounded = fm(x), FocusModel(fm.base, FocusConfig(k=8, window=32)).eval()(x)
    y = x.new_tensor(raw[1:].astype(np.int64))[None]
    bits = F.cross_entropy(bounded[0, 32:], y[0, 32:]).item() / LN2
    assert by[("focus", 8)]["bits"] == pytest.approx(bits, rel=1e-5)  # the forward with the horizon
    assert not torch.allclose(bounded[:, 96:], unbounded[:, 96:])  # the horizon matters past 2 windows


def test_eval_config_horizon_is_resolved_and_checked():
    from focus_nemo.evo2 import Evo2Config

    tiny = Evo2Config.preset("tiny")
    assert EvalConfig().focus_horizon(tiny, 1024, None) is None  # default: the adapter's
    assert EvalConfig().focus_horizon(tiny, 1024, 4096) == 4096
    assert EvalConfig(horizon="none").focus_horizon(tiny, 1024, 4096) is None
    assert EvalConfig(horizon="8192").focus_horizon(tiny, 1024, None) == 8192
    assert EvalConfig(horizon="auto").focus_horizon(tiny, 1024, None) == (tiny.max_seqlen // 1024 - 1) * 1024
    with pytest.raises(ValueError, match="EvalConfig.horizon"):
        EvalConfig(horizon="soon")
    with pytest.raises(ValueError, match="EvalConfig.horizon.*multiple of the window"):
        EvalConfig(horizon="1000").focus_horizon(tiny, 1024, None)
    assert config_from_hydra(_compose("horizon=262144")).horizon == "262144"


def test_recipe_runs_with_a_horizon(tmp_path):
    import json

    cfg = _tiny_config(tmp_path / "h", plots=False)
    cfg.horizon = "64"  # one window of memory at W = 64
    evaluate(cfg)
    assert json.loads((tmp_path / "h" / "config.json").read_text())["horizon_used"] == 64
    with open(tmp_path / "h" / "sequences.csv") as f:
        rows = list(csv.DictReader(f))
    # 160 inputs, W = 64: 2 completed windows before the last, the horizon keeps 1
    assert {int(r["attention_budget"]) for r in rows if r["method"] in ("focus", "sliding") and r["k"] == "8"} == {
        64 + 8}


# ------------------------------------------------------------------------------------------ config and recipe
def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="evaluate_focus", overrides=["run_dir=/tmp/x", *overrides])


def test_config_composes_and_errors_name_the_field():
    cfg = config_from_hydra(_compose())
    assert cfg.ks == [25, 50, 100, 200] and cfg.adapter == "embedded" and cfg.window is None
    assert [s.fasta for s in cfg.sources] == ["bundled:chr20_heldout"]
    cfg = config_from_hydra(_compose("sources=[bundled:phage_lambda,/data/ecoli_k12_mg1655.fa.gz]", "adapter=none"))
    assert [s.fasta for s in cfg.sources] == ["bundled:phage_lambda", "/data/ecoli_k12_mg1655.fa.gz"]
    assert cfg.adapter is None
    with pytest.raises(ValueError, match="EvalConfig.methods"):
        config_from_hydra(_compose("methods=[focus,beam]"))
    with pytest.raises(ValueError, match="EvalConfig.methods: empty"):
        config_from_hydra(_compose("methods=[]"))
    # By default FOCUS runs as the adapter's config says, beside the sliding window of that budget.
    default = config_from_hydra(_compose())
    assert default.methods is None
    assert default.methods_for(0) == ["focus", "truncation", "sliding"]
    assert default.methods_for(1) == ["focus_local", "truncation", "sliding_local"]
    assert config_from_hydra(_compose("methods=[focus,focus_local]")).methods_for(1) == ["focus", "focus_local"]
    with pytest.raises(ValueError, match="duplicate source"):
        config_from_hydra(_compose("sources=[bundled:phage_lambda,/x/phage_lambda.fa.gz]"))
    with pytest.raises(Exception, match="kss"):
        config_from_hydra(_compose("+kss=[3]"))
    with pytest.raises(ValueError, match="EvalConfig.lengths"):
        EvalConfig(lengths=[1000]).check_window(1024)
    with pytest.raises(ValueError, match="EvalConfig.ks"):
        EvalConfig(ks=[2048]).check_window(1024)


def _tiny_config(run_dir: Path, plots: bool) -> EvalConfig:
    return EvalConfig(model=ModelSection(checkpoint="random", preset="tiny"), adapter=None,
                      sources=[SourceSection(fasta="bundled:chr20_heldout"),
                               SourceSection(fasta="bundled:phage_lambda", num_sequences=1)],
                      lengths=[160], num_sequences=2, ks=[8, 16], window=64, position_bins=8, seed=3,
                      plots=plots, run_dir=str(run_dir))


def test_recipe_is_deterministic_and_writes_its_outputs(tmp_path):
    evaluate(_tiny_config(tmp_path / "a", plots=True))
    evaluate(_tiny_config(tmp_path / "b", plots=False))
    for name in ("sequences.csv", "summary.csv", "summary.md", "headline.md", "profile.csv", "paired.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for name in ("shift_vs_position_in_window.png", "shift_vs_length.png", "shift_vs_k.png"):
        assert (tmp_path / "a" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    with open(tmp_path / "a" / "sequences.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == SEQUENCE_COLUMNS
    # 3 sequences x (full, truncation, 2 x focus, 2 x sliding)
    assert len(rows) == 3 * 6
    assert {r["source"] for r in rows} == {"chr20_heldout", "phage_lambda"}
    assert all(int(r["positions"]) == 160 - 64 for r in rows)  # both sources are all A/C/G/T
    with open(tmp_path / "a" / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == 2 * 6
    row = next(s for s in summary if s["source"] == "chr20_heldout" and s["method"] == "focus" and s["k"] == "8")
    kls = [float(r["kl"]) for r in rows if r["source"] == "chr20_heldout" and r["method"] == "focus"
           and r["k"] == "8"]
    assert float(row["kl_mean"]) == pytest.approx(np.mean(kls), rel=1e-8) and int(row["sequences"]) == 2
    assert float(row["kl_ci_low"]) < float(row["kl_mean"]) < float(row["kl_ci_high"])
    md = (tmp_path / "a" / "summary.md").read_text()
    assert "| chr20_heldout | all | 160 | sliding | 16 | 72 | 2 |" in md
    assert "| chr20_heldout | 160 | 8 | focus - truncation | 2 |" in md
    # The headline table: each source and length at one k (neither 100 nor given: the first, 8).
    head = (tmp_path / "a" / "headline.md").read_text().splitlines()
    assert head[0] == "chr20_heldout, 2 sequences of 160 bases, k = 8, mean over sequences (+- 95% CI half-width):"
    body = [line.split(" | ") for line in head[:9] if line.startswith("| ") and "---" not in line][1:]
    assert [r[0] for r in body] == [f"| full context ({float(row['bits_mean']) - float(row['bits_delta_mean']):.4f} "
                                    "bits/base)", "| FOCUS (local = 0)", "| truncation to the window",
                                    "| sliding window, FOCUS's budget"]
    assert body[1][1] == "80" and " +- " in body[1][2] and body[2][1] == "64"
    with open(tmp_path / "a" / "paired.csv") as f:
        paired = list(csv.DictReader(f))
    assert len(paired) == 2 * 2 * 2  # sources x ks x baselines
    # A different seed draws different sequences.
    other = _tiny_config(tmp_path / "c", plots=False)
    other.seed = 4
    evaluate(other)
    assert (tmp_path / "c" / "sequences.csv").read_bytes() != (tmp_path / "a" / "sequences.csv").read_bytes()


def test_missing_fasta_names_the_source(tmp_path):
    cfg = _tiny_config(tmp_path, plots=False)
    cfg.sources = [SourceSection(fasta=str(tmp_path / "nothing.fa.gz"))]
    with pytest.raises(FileNotFoundError, match=r"sources\[nothing\]"):
        evaluate(cfg)
