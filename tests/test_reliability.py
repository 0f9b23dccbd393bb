"""Bad input: every case gets a clear error naming the file, record or field, or a documented policy.

The matrix, and where each entry is tested (entries marked * are tested here):

FASTA (policies documented in focus_nemo/data/fasta.py)
  empty file                      tests/test_data_fasta.py: test_empty_file, test_empty_gzip_file
  empty record                    tests/test_data_fasta.py: test_empty_record_skip_or_error;
                                  tests/test_data_windows.py: test_short_and_empty_records_skip_or_error
  only N                          tests/test_data_fasta.py: test_only_n_record_reads;
                                  tests/test_data_windows.py: test_only_n_is_an_error_naming_the_regions
  IUPAC codes                     tests/test_data_fasta.py: test_iupac_kept_or_mapped_to_n; no loss on them:
                                  tests/focus/test_focus_adapter.py: test_loss_conventions_by_hand
  lower case                      tests/test_data_fasta.py: test_lower_case_is_kept; loss weight:
                                  tests/focus/test_focus_adapter.py: test_loss_conventions_by_hand
  CRLF line ends                  tests/test_data_fasta.py: test_crlf_line_endings
  CR (classic Mac) and mixed      tests/test_data_fasta.py: test_cr_and_mixed_line_endings_read_like_lf (plain,
  line ends                       gzip, bgzip), test_mixed_line_endings_far_into_the_file_are_found_when_indexing,
                                  test_rewriting_handles_line_ends_split_between_reads,
                                  test_mixed_line_endings_behind_a_foreign_index_are_named;
                                  tests/test_scoring.py: test_fasta_from_other_systems_scores_like_lf
  byte-order mark                 tests/test_data_fasta.py: test_utf8_byte_order_mark_is_removed (plain, gzip,
                                  bgzip), test_wide_byte_order_mark_is_named, test_only_a_byte_order_mark_is_an_
                                  empty_file; tests/test_scoring.py: test_fasta_from_other_systems_scores_like_lf
  very long single line           tests/test_data_fasta.py: test_very_long_single_line (3 Mb, read in full)
  truncated gzip / bgzip          tests/test_data_fasta.py: test_truncated_gzip, test_truncated_bgzip
  not FASTA                       tests/test_data_fasta.py: test_not_fasta (text, binary, comments only),
                                  test_non_ascii_byte; * PNG, VCF (plain and gzip), FASTQ, BED, an HTML error
                                  page, FASTA followed by other text
  bad FASTA given to training     * the error reaches the user of train() unchanged, naming the file
Scoring
  records that score nothing      tests/test_scoring.py: test_records_not_scored_are_in_the_summary_with_the_reason
  (empty, only N, one base)       (summary status and note per record)
  a run that scores nothing       tests/test_scoring.py: test_run_that_scores_nothing_is_an_error_unless_allowed;
                                  tests/test_variants.py: test_variant_run_that_scores_nothing_is_an_error_unless_
                                  allowed (error unless allow_empty / --allow-empty, library and command line)
  indel scores that are length    tests/test_variants.py: test_flank_and_mean_columns_are_the_documented_sums,
                                  test_flank_column_tells_a_neutral_insertion_from_a_random_one_where_delta_ll_
                                  cannot (embedded model, held-out chr20)
  real VCF alleles (symbolic,     tests/test_variants.py: test_unsupported_alleles_of_real_vcfs_are_flagged_and_
  breakend, *, ., N)              counted_by_default (--strict stops), test_vcf_multiallelic_split_and_
                                  unsupported_alleles
Configuration
  k > W, k <= 0, W <= 0           tests/test_configs.py: test_bad_values_name_the_field (k=0);
                                  tests/focus/test_focus_invariants.py: test_bad_ratio_errors_name_the_field
                                  (run-time k=0, k > W); * k > W, negative k, W = 0, fractional k and a
                                  train_ratios entry > W in the Hydra config
  W larger than the trained W     * allowed (policy in focus_nemo/focus/adapter.py): runs, W >= length is the
                                  base model, one pass equals streaming at the new W
  unknown model preset            * the error names the preset and lists the valid ones (Evo2Config.preset,
                                  load_base_model, train)
Files
  adapter for another base        tests/focus/test_focus_adapter.py: test_adapter_on_mismatched_base_is_refused
                                  (other block pattern); * same pattern, other width
  adapter tensors truncated       tests/focus/test_focus_adapter.py: test_truncated_adapter_is_refused;
                                  * inside a training checkpoint; * adapter_config.json truncated
  trainer_state truncated         * checksum mismatch naming the file; * a foreign pickle is refused unexecuted;
                                  * latest.json truncated or naming a directory elsewhere; * step directory
                                  missing; * through train() (and resume=false starts over)
  checkpoint of other settings    * resuming with a changed k, lr, ... names the setting; other layouts refused
  base checkpoint truncated       tests/evo2/test_checkpoint.py: test_truncated_file_error_names_file (half of
                                  the weights); * header cut short, empty file, config.json truncated
Tokens
  ids outside [0, 512)            tests/focus/test_focus_invariants.py: test_bad_ratio_errors_name_the_field
                                  (FocusModel, 600); * FocusModel 512 and negative ids (forward, stream,
                                  generate), float tokens; * Evo2Model forward / forward_chunk / stream and
                                  FocusModel.forward_dense
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from conftest import dna_tokens, stressed_model
from hydra import compose, initialize_config_dir
from omegaconf.errors import ValidationError

from focus_nemo.data import FastaFile, FastaFormatError
from focus_nemo.evo2 import Evo2Config, Evo2Model, load_evo2
from focus_nemo.evo2.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, save_evo2
from focus_nemo.focus import FocusConfig, FocusModel, focus_loss
from focus_nemo.focus.adapter import CONFIG, TENSORS, remove_stale_temp_files, save_adapter
from focus_nemo.loading import load_base_model
from focus_nemo.train import train
from focus_nemo.training.checkpoint import (
    CHECKPOINT_DIR,
    CHECKPOINT_RECORD,
    TRAINER_STATE,
    ResumeError,
    load_checkpoint,
    save_checkpoint,
)
from focus_nemo.training.config import DataSection, ModelSection, TrainConfig, TrainerSection, config_from_hydra

CONF = Path(__file__).resolve().parents[1] / "conf"


# -- FASTA that is not FASTA -------------------------------------------------------------------------------------


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\0")) + chunk(b"IEND", b"")


VCF = (b"##fileformat=VCFv4.2\n##INFO=<ID=DP,Number=1,Type=Integer,Description=\"Depth\">\n"
       b"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\nchr1\t100\t.\tA\tG\t50\tPASS\tDP=10\n")
NOT_FASTA = {
    "png": png_bytes(),
    "vcf": VCF,
    "vcf_gz": gzip.compress(VCF),
    "fastq": b"@read1\nACGTACGT\n+\nIIIIIIII\n",
    "bed": b"chr1\t0\t100\tpeak1\n",
    "html": b"<html><body><h1>404 Not Found</h1></body></html>\n",
    "fasta_then_vcf": b">chr1 assembled\nACGTACGTAC\n" + VCF,
}


@pytest.mark.parametrize("kind", sorted(NOT_FASTA))
def test_file_that_is_not_fasta_is_named(tmp_path, kind):
    path = tmp_path / f"genome_{kind}.fa"
    path.write_bytes(NOT_FASTA[kind])
    with pytest.raises(FastaFormatError, match="not a (usable )?FASTA file") as e:
        FastaFile(path, cache_dir=tmp_path / "cache")
    assert str(path) in str(e.value) and e.value.__cause__ is None


@pytest.mark.parametrize("kind", ["png", "vcf", "truncated_gzip", "missing"])
def test_bad_fasta_given_to_train_is_named(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("FOCUS_NEMO_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "train.fa.gz" if kind == "truncated_gzip" else tmp_path / f"train_{kind}.fa"
    if kind == "truncated_gzip":
        data = gzip.compress(b">chr1\n" + b"ACGT" * 50_000 + b"\n")
        path.write_bytes(data[: len(data) // 2])
    elif kind != "missing":
        path.write_bytes(NOT_FASTA[kind])
    cfg = small_train_config(tmp_path / "run", data=DataSection(train_fasta=str(path), sample_len=64))
    with pytest.raises((FastaFormatError, FileNotFoundError)) as e:
        train(cfg)
    assert str(path) in str(e.value)
    assert isinstance(e.value, FileNotFoundError) == (kind == "missing")


# -- configuration -----------------------------------------------------------------------------------------------


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train_focus", overrides=[*overrides, "run_dir=/tmp/unused"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["focus.k=2048"], r"FocusConfig\.k: 2048 is larger than the window 1024"),
    (["focus.k=-3"], r"FocusConfig\.k: must be an integer >= 1, got -3"),
    (["focus.window=0"], r"FocusConfig\.window: must be an integer >= 1, got 0"),
    (["focus.train_ratios=[25,2000]"], r"FocusConfig\.train_ratios: .*2000 is larger than the window 1024"),
    (["focus.window=64", "focus.k=50", "focus.train_ratios=[25,100]"], r"FocusConfig\.train_ratios: .*100"),
])
def test_bad_ratio_or_window_in_the_config_names_the_field(overrides, message):
    cfg = compose_train(*overrides)
    with pytest.raises(ValueError, match=message):
        config_from_hydra(cfg)


def test_fractional_k_names_the_key():
    with pytest.raises(ValidationError, match=r"focus\.k"):
        config_from_hydra(compose_train("focus.k=2.5"))


def test_unknown_model_preset_is_named_with_the_valid_ones(tmp_path):
    valid = (r"\['1b-8k', '20b-1m', '40b-1m', '40b-8k', '7b-1m', '7b-262k', '7b-8k', 'small', 'tiny'\] "
             r"\(or an alias \['1b', '40b', '40b_base', '7b', '7b_base'\]\)")
    with pytest.raises(ValueError, match=rf"unknown preset '7B'; choose one of {valid}"):
        Evo2Config.preset("7B")
    with pytest.raises(ValueError, match=rf"unknown preset 'huge'; choose one of {valid}"):
        load_base_model("random:huge")
    cfg = small_train_config(tmp_path / "run", model=ModelSection(checkpoint="random", preset="huge"))
    with pytest.raises(ValueError, match=rf"unknown preset 'huge'; choose one of {valid}"):
        train(cfg)


def test_running_at_a_window_larger_than_the_trained_one_is_allowed(tmp_path):
    trained = FocusModel(stressed_model("SDH*S*"), FocusConfig(k=4, window=16, train_ratios=[4, 8]))
    with torch.no_grad():
        for p in trained.focus_parameters().values():
            p.add_(0.05 * torch.randn_like(p))
    trained.save_adapter(tmp_path / "a")
    fm = FocusModel(stressed_model("SDH*S*"), FocusConfig(k=10, window=100)).load_adapter(tmp_path / "a")
    assert (fm.config.k, fm.config.window) == (4, 16)  # the trained values become the defaults
    tokens = dna_tokens(1, 90, seed=3)
    with torch.no_grad():
        assert float((fm(tokens, window=128) - fm.base(tokens)).abs().max()) <= 1e-5  # W >= length: the base
        one_pass = fm(tokens, k=5, window=40)  # larger W and a k outside train_ratios
        streamed = torch.cat(list(fm.stream(tokens, chunk_size=13, k=5, window=40)), 1)
        assert float((one_pass - streamed).abs().max()) <= 1e-5
        assert float((one_pass - fm(tokens)).abs().max()) > 1e-4  # a different W is a different computation


# -- adapters and base checkpoints -------------------------------------------------------------------------------


def test_adapter_for_a_base_of_another_width_is_refused(tmp_path):
    FocusModel(stressed_model("SDH*"), FocusConfig(k=4, window=16)).save_adapter(tmp_path / "a")
    wider = FocusModel(stressed_model("SDH*", hidden_size=128, num_heads=4), FocusConfig(k=4, window=16))
    with pytest.raises(ValueError, match=rf"{tmp_path / 'a'}: .*different base model.*hidden 64.*hidden 128"):
        wider.load_adapter(tmp_path / "a")


def test_adapter_for_a_base_of_the_same_shape_and_another_name_loads_with_a_warning(tmp_path, caplog):
    FocusModel(stressed_model("SDH*"), FocusConfig(k=4, window=16)).save_adapter(tmp_path / "a")
    other = stressed_model("SDH*", seed=1)
    other.config = dataclasses.replace(other.config, name="tiny_continued")
    with caplog.at_level("WARNING", logger="focus_nemo.focus.adapter"):
        FocusModel(other, FocusConfig(k=4, window=16)).load_adapter(tmp_path / "a")
    assert any("trained on base model 'tiny'" in r.getMessage() and "'tiny_continued'" in r.getMessage()
               for r in caplog.records), caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="focus_nemo.focus.adapter"):
        FocusModel(stressed_model("SDH*", seed=2), FocusConfig(k=4, window=16)).load_adapter(tmp_path / "a")
    assert not caplog.records  # same name: nothing to say


def test_truncated_adapter_config_is_named(tmp_path):
    path = FocusModel(stressed_model("SDH*"), FocusConfig(k=4, window=16)).save_adapter(tmp_path / "a")
    text = (path / CONFIG).read_bytes()
    (path / CONFIG).write_bytes(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"{path / CONFIG}: invalid JSON"):
        FocusModel(stressed_model("SDH*"), FocusConfig(k=4, window=16)).load_adapter(path)


def _exited_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _this_host() -> str:
    return socket.gethostname()


def test_adapter_files_are_readable_like_other_files_and_leftovers_are_removed(tmp_path):
    fm = FocusModel(stressed_model("SDH*"), FocusConfig(k=4, window=16))
    (tmp_path / "a").mkdir()
    # what a save killed mid-write leaves: its writer has exited
    stale = tmp_path / "a" / f".{TENSORS}.{_exited_pid()}@{_this_host()}.k2j4x8.tmp"
    stale.write_bytes(b"partial")
    old = os.umask(0o022)
    try:
        save_adapter(fm, tmp_path / "a")
    finally:
        os.umask(old)
    assert not stale.exists()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [TENSORS, CONFIG]
    for name in (TENSORS, CONFIG):
        assert stat.S_IMODE((tmp_path / "a" / name).stat().st_mode) == 0o644, name


def test_temporary_files_of_other_processes_are_never_removed(tmp_path):
    """Writers sharing a directory (data-parallel replicas, nodes on a shared file system) do not
    delete each other's temporary files; only those of exited writers on this host go."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {"live_other": f"{sleeper.pid}@{_this_host()}", "this_process": f"{os.getpid()}@{_this_host()}",
                 "other_host": f"{_exited_pid()}@elsewhere.example", "no_writer": "k2j4x8",
                 "exited": f"{_exited_pid()}@{_this_host()}"}
        files = {}
        for what, tag in names.items():
            suffix = ".tmp" if what == "no_writer" else ".q1w2e3.tmp"
            files[what] = tmp_path / f".{TENSORS}.{tag}{suffix}"
            files[what].write_bytes(b"in progress")
        removed = remove_stale_temp_files(tmp_path, (TENSORS, CONFIG))
        assert removed == [files["exited"]]
        assert [w for w, f in files.items() if f.exists()] == ["live_other", "this_process", "other_host",
                                                               "no_writer"]
        fm = FocusModel(stressed_model("SDH*"), FocusConfig(k=4, window=16))
        save_adapter(fm, tmp_path)  # a save next to them leaves them too
        assert all(files[w].exists() for w in ("live_other", "this_process", "other_host", "no_writer"))
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("cut", ["header", "empty", "config"])
def test_truncated_base_checkpoint_is_named(tmp_path, cut):
    directory = save_evo2(Evo2Model(Evo2Config.preset("tiny")), tmp_path / "base")
    target = directory / (CONFIG_FILE if cut == "config" else WEIGHTS_FILE)
    data = target.read_bytes()
    target.write_bytes({"header": data[:100], "empty": b"", "config": data[: len(data) // 2]}[cut])
    with pytest.raises(CheckpointError) as e:
        load_evo2(directory)
    assert str(target) in str(e.value) and e.value.__cause__ is None


# -- training checkpoints ----------------------------------------------------------------------------------------


def small_train_config(run_dir: Path, **sections) -> TrainConfig:
    base = dict(model=ModelSection(checkpoint="random", preset="tiny"),
                focus=FocusConfig(k=8, window=32, train_ratios=[8, 16]),
                data=DataSection(sample_len=96), trainer=TrainerSection(max_steps=2, warmup_steps=1, batch_size=1),
                eval_samples=1, eval_len=48, save_every=1, threads=1, run_dir=str(run_dir))
    return TrainConfig(**{**base, **sections})


def saved_checkpoint(run: Path, cfg: TrainConfig | None = None):
    cfg = cfg or small_train_config(run)
    torch.manual_seed(0)
    fm = FocusModel(Evo2Model(Evo2Config.preset("tiny")), cfg.focus)
    opt = torch.optim.AdamW([p for p in fm.parameters() if p.requires_grad], lr=1e-2)
    out = focus_loss(fm, dna_tokens(1, 40), k=8)
    out["loss"].backward()
    opt.step()
    step_dir = save_checkpoint(fm, opt, 1, run, cfg)
    return cfg, step_dir


def resume(run: Path, cfg: TrainConfig):
    fm = FocusModel(Evo2Model(Evo2Config.preset("tiny")), cfg.focus)
    opt = torch.optim.AdamW([p for p in fm.parameters() if p.requires_grad], lr=1e-2)
    return load_checkpoint(fm, opt, run, cfg)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_checkpoint_round_trip(tmp_path):
    cfg, _ = saved_checkpoint(tmp_path)
    step, rng = resume(tmp_path, cfg)
    assert step == 1 and set(rng) >= {"torch", "numpy", "python"}


@pytest.mark.parametrize(("damage", "named", "message"), [
    ("truncate_state", TRAINER_STATE, "checksum mismatch.*truncated or was modified"),
    ("truncate_record", CHECKPOINT_RECORD, "unreadable checkpoint record"),
    ("truncate_tensors", TENSORS, "checksum mismatch"),
    ("truncate_adapter_config", CONFIG, "invalid JSON"),
    ("remove_step_dir", TRAINER_STATE, "cannot read the trainer state"),
    ("record_outside", CHECKPOINT_RECORD, "is not a step directory"),
])
def test_damaged_checkpoint_is_refused_naming_the_file(tmp_path, damage, named, message):
    cfg, step_dir = saved_checkpoint(tmp_path)
    ck = tmp_path / CHECKPOINT_DIR
    if damage == "truncate_state":
        truncate(step_dir / TRAINER_STATE)
    elif damage == "truncate_record":
        truncate(ck / CHECKPOINT_RECORD)
    elif damage == "truncate_tensors":
        truncate(step_dir / TENSORS)
    elif damage == "truncate_adapter_config":
        truncate(step_dir / CONFIG)
    elif damage == "record_outside":
        record = json.loads((ck / CHECKPOINT_RECORD).read_text())
        (ck / CHECKPOINT_RECORD).write_text(json.dumps({**record, "directory": f"../{step_dir.name}"}))
    else:
        for p in step_dir.iterdir():
            p.unlink()
        step_dir.rmdir()
    with pytest.raises(ResumeError, match=message) as e:
        resume(tmp_path, cfg)
    msg = str(e.value)
    assert named in msg and str(tmp_path) in msg
    assert f"delete {ck} or set resume=false" in msg  # says how to go on


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["FOCUS_TEST_MARKER"]),))


def test_trainer_state_with_foreign_objects_is_refused_without_running_them(tmp_path, monkeypatch):
    cfg, step_dir = saved_checkpoint(tmp_path)
    marker = tmp_path / "executed"
    monkeypatch.setenv("FOCUS_TEST_MARKER", str(marker))
    buf = io.BytesIO()
    torch.save({"step": 1, "optimizer": {}, "rng": _Payload()}, buf)
    (step_dir / TRAINER_STATE).write_bytes(buf.getvalue())
    record_path = tmp_path / CHECKPOINT_DIR / CHECKPOINT_RECORD
    record = json.loads(record_path.read_text())
    record["trainer_state_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()  # consistent, but foreign
    record_path.write_text(json.dumps(record))
    with pytest.raises(ResumeError, match=rf"{step_dir / TRAINER_STATE}: unreadable trainer state"):
        resume(tmp_path, cfg)
    assert not marker.exists()


@pytest.mark.parametrize(("change", "named"), [
    ({"focus": FocusConfig(k=16, window=32, train_ratios=[8, 16])}, "focus.k: 8 in the checkpoint, 16 now"),
    ({"trainer": TrainerSection(max_steps=2, warmup_steps=1, batch_size=1, lr=1e-3)},
     "trainer.lr: 0.002 in the checkpoint, 0.001 now"),
    ({"seed": 5}, "seed: 0 in the checkpoint, 5 now"),
    ({"data": DataSection(sample_len=128)}, "data.sample_len: 96 in the checkpoint, 128 now"),
])
def test_resuming_with_other_settings_names_them(tmp_path, change, named):
    saved_checkpoint(tmp_path)
    cfg = small_train_config(tmp_path, **change)
    with pytest.raises(ResumeError, match="written with other settings") as e:
        resume(tmp_path, cfg)
    assert named in str(e.value)


def test_settings_that_do_not_change_the_trajectory_may_change(tmp_path):
    saved_checkpoint(tmp_path)
    cfg = small_train_config(tmp_path, eval_samples=3, eval_len=64, save_every=7, threads=2,
                             data=DataSection(sample_len=96, val_fasta="bundled:chr20_train"))
    assert resume(tmp_path, cfg)[0] == 1


@pytest.mark.parametrize("layout", [TRAINER_STATE, "trainer_state.json"])
def test_checkpoint_of_another_layout_is_refused(tmp_path, layout):
    ck = tmp_path / CHECKPOINT_DIR
    ck.mkdir()
    (ck / layout).write_bytes(b"{}")
    with pytest.raises(ResumeError, match=rf"{ck}: holds a checkpoint without {CHECKPOINT_RECORD} \({layout}\)"):
        resume(tmp_path, small_train_config(tmp_path))


def test_interrupted_first_save_starts_over(tmp_path, caplog):
    _, step_dir = saved_checkpoint(tmp_path)
    (tmp_path / CHECKPOINT_DIR / CHECKPOINT_RECORD).unlink()  # killed before the first commit
    assert resume(tmp_path, small_train_config(tmp_path)) == (0, None)
    assert "no committed checkpoint" in caplog.text


def test_train_refuses_a_truncated_trainer_state_and_starts_over_when_told(tmp_path):
    run = tmp_path / "run"
    cfg = small_train_config(run)
    train(cfg)
    record = json.loads((run / CHECKPOINT_DIR / CHECKPOINT_RECORD).read_text())
    state = run / CHECKPOINT_DIR / record["directory"] / TRAINER_STATE
    truncate(state)
    with pytest.raises(ResumeError, match=rf"{state}: checksum mismatch"):
        train(cfg)
    metrics = train(small_train_config(run, resume=False))
    assert metrics["start_step"] == 0
    assert [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()] == [0, 1]


# -- token ids ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [512, -1, 10_000])
def test_token_ids_outside_the_vocabulary_on_every_focus_path(bad):
    fm = FocusModel(stressed_model("SDH*"), FocusConfig(k=4, window=16))
    tokens = dna_tokens(1, 40)
    tokens[0, 17] = bad
    message = rf"tokens: token id {bad} outside the vocabulary \[0, 512\)"
    with pytest.raises(ValueError, match=message):
        fm(tokens)
    with pytest.raises(ValueError, match=message):
        list(fm.stream(tokens, chunk_size=8))
    with pytest.raises(ValueError, match=message):
        fm.generate(tokens, 2)
    with pytest.raises(TypeError, match="expected an integer tensor"):
        fm(tokens.float())


@pytest.mark.parametrize("path", ["evo2_forward", "evo2_forward_chunk", "evo2_stream", "focus_forward_dense"])
def test_token_ids_outside_the_vocabulary_on_the_base_model(path):
    model = stressed_model("SDH*")
    tokens = dna_tokens(1, 20)
    tokens[0, 5] = 512
    with pytest.raises(ValueError, match=r"token id 512 outside the vocabulary \[0, 512\)"):
        if path == "evo2_forward":
            model(tokens)
        elif path == "evo2_forward_chunk":
            model.forward_chunk(tokens, model.init_state())
        elif path == "evo2_stream":
            list(model.stream(tokens, 8))
        else:
            FocusModel(model, FocusConfig(k=4, window=16)).forward_dense(tokens)
