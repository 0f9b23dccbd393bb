"""Pretraining of the small embedded Evo-2-architecture backbone on real human DNA.

The embedded default model lets the CPU demo and the fidelity tests use a model that really models
DNA. It is trained from scratch with next-base cross-entropy on random windows of a chromosome,
holding out a region for evaluation, and compared with an order-k Markov (k-mer) baseline fitted
on the same training region.

A run can start from an existing checkpoint of the same architecture (``init_from``: continued
training, e.g. on longer samples) and resumes exactly from its own ``out_dir`` after being stopped or
killed: ``<out_dir>/checkpoint`` holds the weights, the optimizer state, the step, the elapsed training
time and every random stream, committed atomically every ``save_every`` steps, so a resumed run takes
the same steps, bit for bit, as one that was never interrupted.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from focus_nemo.evo2 import Evo2Config, Evo2Model
from focus_nemo.focus.loss import split_case, weighted_ce
from focus_nemo.pretraining.data import ChromWindows, read_region
from focus_nemo.pretraining.evidence import heldout_sequences, long_context_evidence, markov_bits_per_base
from focus_nemo.pretraining.poles import (
    DEFAULT_MIN_DECAY,
    load_raw_poles,
    parametrize_poles,
    plain_model,
    raw_poles,
)
from focus_nemo.pretraining.repeats import RepeatConfig


@dataclass
class PretrainConfig:
    fasta: str = "../shared/data/human/grch37_chr20.fa.gz"
    chrom: str = "20"
    train_range: tuple[int, int] = (0, 40_000_000)  # bases used for training
    heldout_range: tuple[int, int] = (40_000_000, 63_025_520)  # never seen in training
    preset: str = "small"
    model_overrides: dict = field(default_factory=dict)
    seq_len: int = 2048
    batch_size: int = 4
    max_steps: int = 2000
    time_budget_s: float = 2400.0  # stop early (and still evaluate/save) after this long
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_n_fraction: float = 0.01  # skip windows with more N than this
    eval_windows: int = 16
    eval_len: int = 4096
    markov_order: int = 8
    seed: int = 0
    threads: int = 0  # torch threads (0 = torch default)
    out_dir: str = "runs/pretrain"
    save_every: int = 100
    # Start from this checkpoint directory (any format load_evo2 reads) instead of a random initialisation.
    # The architecture is the checkpoint's (model_overrides may change non-shape fields such as the name);
    # `preset` is then unused. Ignored when the run resumes from its own checkpoint.
    init_from: str = ""
    # Resume from <out_dir>/checkpoint when it holds a committed checkpoint (false: start over and replace it).
    resume: bool = True
    # End this session after this many steps in all (0: no limit) without changing the schedule, which
    # max_steps and the time budget define; a later run with a larger value continues.
    stop_at_step: int = 0
    # Let the cosine decay also follow the time budget (it ends at whichever of max_steps and the budget
    # runs out first). False: the schedule depends on the step alone, so the run is reproducible bit for bit.
    lr_follows_time: bool = True
    # After training, score this many seeded held-out sequences of long_context_len bases under full and
    # truncated contexts (long_context_evidence) into metrics.json; 0 skips it.
    long_context_sequences: int = 0
    long_context_len: int = 16384
    long_context_seed: int = 20
    # Keep every long-filter modal pole strictly decaying: after initialisation and after each optimizer
    # step, log-poles above this value (< 0, e.g. -1e-5) are set to it. The filter clamps log-poles at 0,
    # so one pushed above 0 becomes a pure integrator that no longer gets a gradient and, in a long stream,
    # sums every input since the start. None: no projection.
    max_log_pole: float | None = None
    # Give the long filters slow modes before the first step (a fresh run only, not a resume): in every
    # long-filter group, the `slow_modes` modes of least impulse-response mass (|R| / (1 - exp(logp)))
    # get log-poles log-spaced in -slow_mode_decay (decay per base; half-lives ln 2 / decay) and a zero
    # residue, so they start silent and training decides how much they carry. The default initialisation
    # draws decays of 0.01-0.1 per base (half-lives under 70 bases), so a Hyena block otherwise carries
    # little beyond a few hundred bases. 0: unchanged.
    slow_modes: int = 0
    slow_mode_decay: tuple[float, float] = (1e-4, 1e-2)
    # Learning rate of the long filters' log-poles relative to `lr`. The log-pole is the trained value
    # itself (a decay per base), so an Adam step of ~lr moves a slow pole (decay 1e-4) by ten times its
    # value; a scale of ~0.01 moves poles by about 1e-5 per step. 1.0: one learning rate for all.
    pole_lr_scale: float = 1.0
    # Train the long filters' log-poles as -(min_decay + exp(p)) (focus_nemo.pretraining.poles): no pole can
    # reach or cross 0, whatever the optimizer does. Saved files hold the usual log-poles.
    decaying_poles: bool = False
    min_decay: float = DEFAULT_MIN_DECAY
    # Planted repeats (focus_nemo.pretraining.repeats): fraction 0 trains on real DNA as it is.
    repeats: RepeatConfig = field(default_factory=lambda: RepeatConfig(fraction=0.0))
    # Watch for recall while training: at every save, the exact-copy advantage (nats/base, full context) of
    # `recall_watch_trials` held-out trials at each of `recall_watch_distances` goes into the log. 0: off.
    recall_watch_trials: int = 0
    recall_watch_distances: tuple[int, ...] = (256, 1024)
    # After training, the recall probe (focus_nemo.evaluation.recall) into metrics.json: that many trials at
    # each distance, every variant and control. 0 skips it.
    recall_trials: int = 0
    recall_distances: tuple[int, ...] = (64, 1024, 4096, 16384)


def check_slow_mode_decay(decay) -> tuple[float, float]:
    """(low, high) decays per base of the slow modes; a ValueError naming the field unless 0 < low <= high < 1."""
    lo, hi = (float(x) for x in decay)
    if not 0 < lo <= hi < 1:
        raise ValueError(f"PretrainConfig.slow_mode_decay: need 0 < low <= high < 1 (decay per base), "
                         f"got {tuple(decay)}")
    return lo, hi


def add_slow_modes(model: Evo2Model, count: int, decay: tuple[float, float]) -> int:
    """Replace, per long-filter group, the `count` modes of least impulse-response mass by silent slow
    modes (zero residue, log-poles -logspace(decay)); returns how many modes were replaced."""
    if count <= 0:
        return 0
    lo, hi = check_slow_mode_decay(decay)
    replaced = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            if getattr(module, "kind", None) != "H" or not hasattr(module, "log_poles"):
                continue
            lp, r = module.log_poles, module.residues
            if count > lp.shape[1]:
                raise ValueError(f"PretrainConfig.slow_modes: {count} exceeds the {lp.shape[1]} modes per group "
                                 f"of {name}")
            mass = r.abs() / (-torch.expm1(lp.clamp(max=-1e-12)))
            idx = mass.argsort(dim=1)[:, :count]
            slow = -torch.logspace(math.log10(lo), math.log10(hi), count, dtype=lp.dtype)
            lp.scatter_(1, idx, slow.expand(lp.shape[0], count).contiguous())
            r.scatter_(1, idx, torch.zeros(lp.shape[0], count, dtype=r.dtype))
            replaced += idx.numel()
    return replaced


def project_poles(model: Evo2Model, max_log_pole: float | None) -> int:
    """Set the long filters' log-poles above `max_log_pole` to it (in place); returns how many were."""
    if max_log_pole is None:
        return 0
    moved = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("filter.log_poles"):
                over = p > max_log_pole
                moved += int(over.sum())
                p.masked_fill_(over, max_log_pole)
    return moved


CHECKPOINT_FORMAT = "focus-nemo-pretrain-checkpoint/1"
TRAINER_STATE = "trainer_state.pt"
# Settings a run's trajectory depends on: resuming with any of them changed is refused. The others
# (time_budget_s, max_steps, stop_at_step, save_every, evaluation, threads, out_dir, init_from) may change.
RESUME_SETTINGS = ("fasta", "chrom", "train_range", "preset", "model_overrides", "seq_len", "batch_size", "lr",
                   "min_lr", "warmup_steps", "weight_decay", "grad_clip", "max_n_fraction", "seed",
                   "lr_follows_time", "max_log_pole", "slow_modes", "slow_mode_decay",
                   "pole_lr_scale", "decaying_poles", "min_decay", "repeats")


class PretrainResumeError(ValueError):
    """A pretraining checkpoint cannot be resumed (unreadable, corrupt, or written with other settings)."""


def _settings(cfg: PretrainConfig) -> dict:
    d = json.loads(json.dumps(asdict(cfg)))
    return {k: d[k] for k in RESUME_SETTINGS}


def save_pretrain_checkpoint(model: Evo2Model, opt: torch.optim.Optimizer, step: int, elapsed_s: float,
                             sampler: ChromWindows, cfg: PretrainConfig) -> Path:
    """Commit the state after `step` optimizer steps to ``<out_dir>/checkpoint`` (a step directory with
    the weights and ``trainer_state.pt``, then the commit record, written atomically); returns the directory."""
    from focus_nemo.durable import durable_write
    from focus_nemo.evo2.checkpoint import save_evo2
    from focus_nemo.training.checkpoint import CHECKPOINT_DIR, commit_checkpoint, new_step_directory

    ck = Path(cfg.out_dir) / CHECKPOINT_DIR
    name = new_step_directory(ck, step)
    target = ck / name
    save_evo2(plain_model(model), target)
    state = {"step": step, "elapsed_s": float(elapsed_s), "optimizer": opt.state_dict(),
             "torch_rng": torch.get_rng_state(), "sampler_rng": json.dumps(sampler.rng.bit_generator.state),
             "windows_skipped": sampler.skipped, "bases_planted": sampler.planted, "raw_poles": raw_poles(model)}
    digest = durable_write(target / TRAINER_STATE, lambda f: torch.save(state, f))
    commit_checkpoint(ck, {"format": CHECKPOINT_FORMAT, "step": step, "directory": name,
                            "trainer_state_sha256": digest, "settings": _settings(cfg)})
    return target


def read_pretrain_checkpoint(cfg: PretrainConfig) -> tuple[Path, dict] | None:
    """The committed checkpoint of ``cfg.out_dir``: (step directory, trainer state), or None if there is none.

    Raises:
        PretrainResumeError: the record or trainer state is unreadable, fails its checksum, or was written
            with other RESUME_SETTINGS; the message names the file or the setting.
    """
    import hashlib

    from focus_nemo.training.checkpoint import CHECKPOINT_DIR, CHECKPOINT_RECORD

    ck = Path(cfg.out_dir) / CHECKPOINT_DIR
    record_path = ck / CHECKPOINT_RECORD
    restart = f"to start over, delete {ck} or set resume=false"
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        name, digest, saved = str(record["directory"]), str(record["trainer_state_sha256"]), dict(record["settings"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise PretrainResumeError(f"{record_path}: unreadable checkpoint record ({type(e).__name__}: {e}); "
                                  f"{restart}") from None
    if record.get("format") != CHECKPOINT_FORMAT:
        raise PretrainResumeError(f"{record_path}: format {record.get('format')!r}, expected "
                                  f"{CHECKPOINT_FORMAT!r}; {restart}")
    if Path(name).name != name or name in ("", ".", ".."):
        raise PretrainResumeError(f"{record_path}: directory {name!r} is not a step directory of {ck}; {restart}")
    now = _settings(cfg)
    # A setting added after the checkpoint was written had its default value then.
    saved = {**{k: v for k, v in _settings(PretrainConfig()).items() if k not in saved}, **saved}
    changed = sorted(k for k in RESUME_SETTINGS if saved.get(k) != now[k])
    if changed:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise PretrainResumeError(f"{record_path}: the checkpoint was written with other settings ({diff}); "
                                  f"{restart}")
    state_path = ck / name / TRAINER_STATE
    try:
        data = state_path.read_bytes()
    except OSError as e:
        raise PretrainResumeError(f"{state_path}: cannot read the trainer state ({e}); {restart}") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise PretrainResumeError(f"{state_path}: SHA-256 differs from the one in {record_path}; {restart}")
    import io

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a corrupt file
        raise PretrainResumeError(f"{state_path}: unreadable trainer state ({type(e).__name__}: {e}); "
                                  f"{restart}") from None
    if int(state.get("step", -1)) != int(record.get("step", -2)):
        raise PretrainResumeError(f"{state_path}: step {state.get('step')} differs from {record.get('step')} in "
                                  f"{record_path}; {restart}")
    return ck / name, state


def _build_model(cfg: PretrainConfig) -> Evo2Model:
    """A fresh model of the preset, or the weights of ``cfg.init_from`` (same architecture)."""
    import dataclasses

    from focus_nemo.evo2.checkpoint import CheckpointError, load_evo2

    if not cfg.init_from:
        overrides = dict(cfg.model_overrides)
        name = overrides.pop("name", None)  # the preset's own argument is its name
        model_cfg = Evo2Config.preset(cfg.preset, **overrides)
        model = Evo2Model(dataclasses.replace(model_cfg, name=name) if name else model_cfg)
        model.reset_parameters(cfg.seed)
        return model
    model = load_evo2(cfg.init_from, dtype=torch.float32)
    if cfg.model_overrides:
        new = dataclasses.replace(model.config, **cfg.model_overrides)
        if new.shape_hash() != model.config.shape_hash():
            changed = sorted(k for k in cfg.model_overrides if getattr(new, k) != getattr(model.config, k))
            raise CheckpointError(f"{cfg.init_from}: model_overrides change the architecture ({', '.join(changed)}); "
                                  "init_from continues the checkpoint's architecture")
        model.config = new
    return model


def _rewrite_log(path: Path, keep_below: int) -> None:
    """Drop the records of steps >= `keep_below` (taken again after a resume) from the training log."""
    from focus_nemo.durable import durable_write_bytes

    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:  # a line cut by a kill is the last one; it is written again after the resume
            continue
        if int(rec["step"]) < keep_below:
            kept.append(line)
    durable_write_bytes(path, "".join(x + "\n" for x in kept).encode())


@torch.no_grad()
def heldout_bits(model: Evo2Model, windows: list[np.ndarray]) -> float:
    model.eval()
    total, weight = 0.0, 0.0
    for w in windows:
        raw = torch.from_numpy(w.astype(np.int64))[None]
        tokens, wt = split_case(raw, 1.0)
        logits = model(tokens[:, :-1])
        ce = weighted_ce(logits, tokens[:, 1:], wt[:, 1:])
        total += float(ce) * float(wt[:, 1:].sum())
        weight += float(wt[:, 1:].sum())
    model.train()
    return total / weight / math.log(2)


def pretrain(cfg: PretrainConfig) -> dict:
    """Train the backbone; writes model.safetensors, config.json, train_log.jsonl, metrics.json."""
    from focus_nemo.evo2.checkpoint import save_evo2

    if cfg.max_log_pole is not None and not cfg.max_log_pole < 0:  # before reading the genome
        raise ValueError(f"PretrainConfig.max_log_pole: must be < 0 (a decaying pole), got {cfg.max_log_pole}")
    if not cfg.pole_lr_scale > 0:
        raise ValueError(f"PretrainConfig.pole_lr_scale: must be > 0, got {cfg.pole_lr_scale}")
    if cfg.slow_modes:
        check_slow_mode_decay(cfg.slow_mode_decay)
    if isinstance(cfg.repeats, dict):
        cfg.repeats = RepeatConfig(**cfg.repeats)
    cfg.repeats.check("PretrainConfig.repeats")
    if not 0 < cfg.min_decay < 1:
        raise ValueError(f"PretrainConfig.min_decay: must lie in (0, 1) (decay per base), got {cfg.min_decay}")
    for name in ("recall_watch_trials", "recall_trials"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"PretrainConfig.{name}: must be >= 0, got {getattr(cfg, name)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    train_seq = read_region(cfg.fasta, cfg.chrom, *cfg.train_range)
    held_seq = read_region(cfg.fasta, cfg.chrom, *cfg.heldout_range)
    sampler = ChromWindows(train_seq, cfg.seq_len + 1, cfg.max_n_fraction, rng, repeats=cfg.repeats)
    eval_sampler = ChromWindows(held_seq, cfg.eval_len + 1, cfg.max_n_fraction, np.random.default_rng(cfg.seed + 1))
    eval_windows = [eval_sampler.sample() for _ in range(cfg.eval_windows)]

    model = _build_model(cfg)
    slowed = add_slow_modes(model, cfg.slow_modes, cfg.slow_mode_decay)  # replaced by the resumed weights
    if slowed:
        print(f"slow_modes: {slowed} long-filter modes replaced by silent slow modes "
              f"(decay {cfg.slow_mode_decay[0]:g}-{cfg.slow_mode_decay[1]:g} per base)", flush=True)
    projected = project_poles(model, cfg.max_log_pole)
    if projected:
        print(f"max_log_pole: {projected} log-poles above {cfg.max_log_pole} set to it", flush=True)
    if cfg.decaying_poles:
        parametrize_poles(model, cfg.min_decay)
    # a third group for the log-poles only when their rate differs, so runs without it keep their optimizer layout
    own_pole_lr = cfg.pole_lr_scale != 1.0
    poles, decay, no_decay = [], [], []
    for n, p in model.named_parameters():
        if own_pole_lr and n.endswith(("filter.log_poles", "log_poles.original")):
            poles.append(p)
        elif p.dim() >= 2 and ".filter." not in n:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    if poles:
        groups.append({"params": poles, "weight_decay": 0.0, "lr_scale": float(cfg.pole_lr_scale)})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))
    start, elapsed0, saved_step = 0, 0.0, -1
    resumed = read_pretrain_checkpoint(cfg) if cfg.resume else None
    if resumed is not None:
        from focus_nemo.evo2.checkpoint import load_evo2

        where, state = resumed
        saved = load_evo2(where, dtype=torch.float32)
        if saved.config.shape_hash() != model.config.shape_hash():
            raise PretrainResumeError(f"{where}: weights of another architecture than this run's model")
        if cfg.decaying_poles:  # the trained raw values, exactly (the file holds the log-poles they give)
            weights = {k: v for k, v in saved.state_dict().items() if not k.endswith("filter.log_poles")}
            missing, unexpected = model.load_state_dict(weights, strict=False)
            if unexpected or any(not k.endswith("log_poles.original") for k in missing):
                raise PretrainResumeError(f"{where}: weights do not match this run's model "
                                          f"(missing {missing}, unexpected {unexpected})")
            load_raw_poles(model, state.get("raw_poles", {}))
        else:
            model.load_state_dict(saved.state_dict())
        model.config = saved.config
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        sampler.rng.bit_generator.state = json.loads(state["sampler_rng"])
        sampler.skipped = int(state["windows_skipped"])
        sampler.planted = int(state.get("bases_planted", 0))
        start, elapsed0 = int(state["step"]), float(state["elapsed_s"])
        saved_step = start
        _rewrite_log(out / "train_log.jsonl", start)
    elif not cfg.resume:
        from focus_nemo.training.checkpoint import CHECKPOINT_DIR, CHECKPOINT_RECORD

        (out / CHECKPOINT_DIR / CHECKPOINT_RECORD).unlink(missing_ok=True)  # never resumed into this run
    t0 = time.time() - elapsed0  # training time of earlier sessions counts against the budget

    def lr_at(step):
        # Warm-up, then cosine decay over whichever runs out first: the steps or the time budget
        # (so a run cut short by its budget still anneals).
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        if cfg.lr_follows_time:
            frac = min(1.0, max(frac, (time.time() - t0) / cfg.time_budget_s))
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))

    # SIGTERM ends the run after the current step, which is then saved like the end of the budget.
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())

    log = open(out / "train_log.jsonl", "a")
    end = cfg.max_steps if not cfg.stop_at_step else min(cfg.max_steps, cfg.stop_at_step)
    step, done = start - 1, start
    try:
        for step in range(start, end):
            if time.time() - t0 > cfg.time_budget_s or stop.is_set():
                break
            lr = lr_at(step)
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            raw = torch.from_numpy(np.stack([sampler.sample() for _ in range(cfg.batch_size)]).astype(np.int64))
            tokens, wt = split_case(raw, 1.0)
            loss = weighted_ce(model(tokens[:, :-1]), tokens[:, 1:], wt[:, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            project_poles(model, cfg.max_log_pole)
            done = step + 1
            rec = {"step": step, "loss_bits": float(loss.detach()) / math.log(2), "lr": lr,
                   "grad_norm": float(gn),
                   "elapsed_s": round(time.time() - t0, 1)}
            if done % cfg.save_every == 0:
                rec["heldout_bits"] = heldout_bits(model, eval_windows[:4])
                if cfg.recall_watch_trials:
                    rec["copy_advantage"] = watch_recall(model, held_seq, cfg)
                save_evo2(plain_model(model), out)
                save_pretrain_checkpoint(model, opt, done, time.time() - t0, sampler, cfg)
                saved_step = done
            log.write(json.dumps(rec) + "\n")
            log.flush()
    finally:
        log.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if done != saved_step:
        save_pretrain_checkpoint(model, opt, done, time.time() - t0, sampler, cfg)
    save_evo2(plain_model(model), out)
    metrics = {
        "steps": done,
        "tokens_seen": done * cfg.batch_size * cfg.seq_len,
        "train_time_s": round(time.time() - t0, 1),
        "heldout_bits_per_base": heldout_bits(model, eval_windows),
        "windows_skipped_for_N": sampler.skipped,
        "bases_planted": sampler.planted,
        "params": model.num_parameters(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    if cfg.long_context_sequences:
        metrics["long_context"] = long_context_evidence(
            plain_model(model),
            heldout_sequences(cfg, cfg.long_context_sequences, cfg.long_context_len, cfg.long_context_seed))
    if cfg.markov_order:
        metrics[f"markov{cfg.markov_order}_bits_per_base"] = markov_bits_per_base(
            train_seq, np.concatenate(eval_windows), cfg.markov_order)
    if cfg.recall_trials:
        from focus_nemo.evaluation.recall import recall_probe

        plain = plain_model(model).eval()
        _, summary = recall_probe(plain, held_seq, cfg.recall_distances, cfg.recall_trials, seed=cfg.seed)
        metrics["recall"] = summary
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def watch_recall(model: Evo2Model, heldout: np.ndarray, cfg: PretrainConfig) -> dict[str, float]:
    """Mean exact-copy advantage (nats/base, native control, full context) at each watched distance."""
    from focus_nemo.evaluation.recall import recall_probe

    was = model.training
    plain = plain_model(model).eval()
    _, summary = recall_probe(plain, heldout, cfg.recall_watch_distances, cfg.recall_watch_trials,
                              seed=cfg.seed + 7, variants=("exact",))
    model.train(was)
    return {str(r["distance"]): round(r["advantage"], 4) for r in summary if r["control"] == "native"}
