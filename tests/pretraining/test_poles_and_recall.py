"""Poles that decay by construction, the loaders' warning about poles that do not, the recall probe, and an
exact resume of a run with planted repeats and parametrised poles."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from focus_nemo.evaluation.recall import make_trials, recall_markdown, recall_probe
from focus_nemo.evo2 import Evo2Config, Evo2Model, load_evo2
from focus_nemo.evo2.checkpoint import save_evo2
from focus_nemo.evo2.poles import NonDecayingPoleWarning, non_decaying_poles
from focus_nemo.pretraining import PretrainConfig, RepeatConfig, pretrain, read_pretrain_checkpoint
from focus_nemo.pretraining.poles import parametrize_poles, plain_model, plain_state_dict


def tiny(seed=0) -> Evo2Model:
    m = Evo2Model(Evo2Config.preset("tiny"))
    m.reset_parameters(seed)
    return m


def test_parametrised_poles_cannot_reach_zero_whatever_the_optimizer_does():
    m = tiny()
    assert parametrize_poles(m, 1e-6) == 1
    raw = [p for n, p in m.named_parameters() if n.endswith("log_poles.original")]
    assert len(raw) == 1
    opt = torch.optim.SGD(raw, lr=1e3)
    for _ in range(3):  # push every pole towards 0 and beyond with a huge step
        opt.zero_grad()
        (-m.blocks[2].mixer.filter.log_poles.sum() * 1e6).backward()
        opt.step()
    lp = m.blocks[2].mixer.filter.log_poles.detach()
    assert torch.isfinite(lp).all() and (lp < 0).all() and (lp <= -1e-6).all()
    assert non_decaying_poles(plain_model(m)) == {}


def test_plain_model_saves_the_usual_log_poles_and_the_same_logits(tmp_path):
    m = tiny(1)
    x = torch.randint(0, 4, (1, 200)).mul(3).add(65)
    before = m(x)
    parametrize_poles(m)
    state = plain_state_dict(m)
    assert "blocks.2.mixer.filter.log_poles" in state
    assert not any("parametrizations" in k for k in state)
    torch.testing.assert_close(m(x), before, atol=1e-5, rtol=1e-5)
    save_evo2(plain_model(m), tmp_path / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonDecayingPoleWarning)
        loaded = load_evo2(tmp_path / "m")
    torch.testing.assert_close(loaded(x), before, atol=1e-5, rtol=1e-5)


def test_loading_warns_once_naming_blocks_and_counts_of_non_decaying_poles(tmp_path):
    m = tiny(2)
    with torch.no_grad():
        m.blocks[2].mixer.filter.log_poles[0, :3] = 0.0
        m.blocks[2].mixer.filter.log_poles[5, 0] = 0.25
    save_evo2(m, tmp_path / "m")
    with pytest.warns(NonDecayingPoleWarning, match=r"4 long-filter pole\(s\) do not decay .*blocks\.2 \(4\)") as rec:
        load_evo2(tmp_path / "m")
    assert len([w for w in rec if issubclass(w.category, NonDecayingPoleWarning)]) == 1
    assert str(tmp_path / "m") in str(rec[0].message)


def random_bytes(n, seed):
    return np.frombuffer(b"ACGT", dtype=np.uint8)[np.random.default_rng(seed).integers(0, 4, n)].copy()


def test_probe_trials_score_the_same_segment_and_place_the_copy_at_its_distance():
    held = random_bytes(20_000, 3)
    held[5000:5100] = ord("N")
    trials = make_trials(held, 300, 4, seed=1)
    for t in trials:
        rep = t.window(t.first["exact"])
        assert len(rep) == 2 * 256 + 300
        assert rep[:256].tobytes() == rep[-256:].tobytes() == t.segment.tobytes()
        assert ord("N") not in rep.tobytes()
        for c in ("native", "foreign"):
            assert t.window(t.controls[c])[-256:].tobytes() == t.segment.tobytes()
        assert (t.first["diverged"] != t.segment).mean() == pytest.approx(0.05, abs=0.05)
    again = make_trials(held, 300, 4, seed=1)
    assert all(a.segment.tobytes() == b.segment.tobytes() for a, b in zip(trials, again, strict=True))


def test_probe_measures_a_perfect_copier_and_a_blind_model():
    held = random_bytes(20_000, 4)

    def copier(tokens):  # predicts the base that followed the same 12-mer earlier, else uniform
        seq = tokens[0].tolist()
        logits = torch.zeros(1, len(seq), 512)
        seen = {}
        for i in range(len(seq)):
            key = tuple(seq[max(0, i - 11): i + 1])
            if len(key) == 12 and key in seen:
                logits[0, i, seq[seen[key] + 1]] = 20.0
            if i + 1 < len(seq):
                seen[key] = i
        return logits

    def blind(tokens):
        return torch.zeros(1, tokens.shape[1], 512)

    _, summ = recall_probe(copier, held, [64], n_trials=4, variants=("exact", "revcomp"))
    exact = next(r for r in summ if r["variant"] == "exact" and r["control"] == "native")
    rc = next(r for r in summ if r["variant"] == "revcomp" and r["control"] == "native")
    assert exact["advantage"] > 5.0  # the control's CE is ln 512 here, the copy's ~0
    assert abs(rc["advantage"]) < 0.5  # a forward copier gains nothing from a reverse complement
    _, summ = recall_probe(blind, held, [64], n_trials=4)
    assert all(abs(r["advantage"]) < 1e-9 for r in summ)
    table = recall_markdown(summ)
    assert "d = 64" in table and "exact" in table and "revcomp" in table


def write_fasta(path: Path, n: int, seed: int) -> Path:
    seq = random_bytes(n, seed).tobytes().decode()
    path.write_text(">chrT\n" + "\n".join(seq[i: i + 80] for i in range(0, n, 80)) + "\n")
    return path


def test_resume_with_planted_repeats_and_decaying_poles_is_bit_identical(tmp_path):
    fasta = write_fasta(tmp_path / "g.fa", 30_000, 5)

    def cfg(out, **kw):
        return PretrainConfig(**{**dict(
            fasta=str(fasta), chrom="chrT", train_range=(0, 20_000), heldout_range=(20_000, 30_000), preset="tiny",
            seq_len=256, batch_size=2, max_steps=6, time_budget_s=1e9, lr=3e-3, min_lr=3e-4, warmup_steps=2,
            eval_windows=2, eval_len=128, markov_order=0, seed=3, threads=1, out_dir=str(out), save_every=3,
            lr_follows_time=False, decaying_poles=True, repeats=RepeatConfig(fraction=1.0, coverage=0.5, max_len=64),
            recall_watch_trials=2, recall_watch_distances=(32,)), **kw})

    whole = pretrain(cfg(tmp_path / "whole"))
    pretrain(cfg(tmp_path / "split", stop_at_step=3))
    second = pretrain(cfg(tmp_path / "split"))
    assert whole["bases_planted"] == second["bases_planted"] > 0
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("whole", "split"))
    assert a.keys() == b.keys() and "blocks.2.mixer.filter.log_poles" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = read_pretrain_checkpoint(cfg(tmp_path / "whole"))[1]
    sb = read_pretrain_checkpoint(cfg(tmp_path / "split"))[1]
    for k in sa["raw_poles"]:
        assert torch.equal(sa["raw_poles"][k], sb["raw_poles"][k])
    logs = [json.loads(x) for x in (tmp_path / "whole" / "train_log.jsonl").read_text().splitlines()]
    assert "copy_advantage" in logs[2] and set(logs[2]["copy_advantage"]) == {"32"}
    with pytest.raises(ValueError, match="repeats"):  # the planted-repeat settings are part of the trajectory
        pretrain(cfg(tmp_path / "split", max_steps=9, repeats=RepeatConfig(fraction=0.5)))


def test_bad_pole_and_repeat_settings_name_the_field(tmp_path):
    with pytest.raises(ValueError, match=r"PretrainConfig\.min_decay"):
        pretrain(PretrainConfig(min_decay=0.0, out_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"PretrainConfig\.repeats\.coverage"):
        pretrain(PretrainConfig(repeats=RepeatConfig(coverage=2.0), out_dir=str(tmp_path)))
