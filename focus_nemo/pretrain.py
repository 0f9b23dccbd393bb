"""Pretraining of the small embedded Evo-2-architecture backbone on real human DNA.

The embedded default model lets the CPU demo and the fidelity tests use a model that really models
DNA. It is trained from scratch with next-base cross-entropy on random windows of a chromosome,
holding out a region for evaluation, and compared with an order-k Markov (k-mer) baseline fitted
on the same training region.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from focus_nemo.evo2 import Evo2Config, Evo2Model
from focus_nemo.focus.loss import split_case, weighted_ce


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


class ChromWindows:
    """Random fixed-length windows of one chromosome region, skipping N-rich ones (counted)."""

    def __init__(self, seq: np.ndarray, length: int, max_n_fraction: float, rng: np.random.Generator) -> None:
        self.seq, self.length, self.max_n, self.rng = seq, length, max_n_fraction, rng
        self.skipped = 0
        if len(seq) < length:
            raise ValueError(f"region of {len(seq)} bases is shorter than the window {length}")

    def sample(self) -> np.ndarray:
        for _ in range(10_000):
            s = int(self.rng.integers(0, len(self.seq) - self.length + 1))
            w = self.seq[s: s + self.length]
            if np.mean((w == ord("N")) | (w == ord("n"))) <= self.max_n:
                return w
            self.skipped += 1
        raise RuntimeError("could not find a window with few enough N bases in 10000 draws")


def read_region(fasta: str, chrom: str, start: int, end: int) -> np.ndarray:
    """Bases [start, end) of a record, case kept (chr1/1 aliases and errors as in focus_nemo.data)."""
    from focus_nemo.data import open_genome

    return open_genome(fasta).fetch(chrom, start, end)


def markov_bits_per_base(train: np.ndarray, test: np.ndarray, order: int) -> float:
    """Held-out bits/base of an order-`order` Markov chain with add-1/2 smoothing over ACGT."""
    lut = np.full(256, -1, dtype=np.int64)
    for i, c in enumerate(b"ACGT"):
        lut[c] = i
        lut[c + 32] = i

    def contexts(seq):
        codes = lut[seq]
        n = len(codes) - order
        ctx = np.zeros(n, dtype=np.int64)
        valid = codes[order:] >= 0
        for j in range(order):
            c = codes[j: j + n]
            valid &= c >= 0
            ctx = ctx * 4 + np.maximum(c, 0)
        return ctx[valid], codes[order:][valid]

    ctx, nxt = contexts(train)
    counts = np.zeros((4 ** order, 4), dtype=np.float64)
    np.add.at(counts, (ctx, nxt), 1.0)
    counts += 0.5
    probs = counts / counts.sum(1, keepdims=True)
    tctx, tnxt = contexts(test)
    return float(-np.log2(probs[tctx, tnxt]).mean())


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

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    train_seq = read_region(cfg.fasta, cfg.chrom, *cfg.train_range)
    held_seq = read_region(cfg.fasta, cfg.chrom, *cfg.heldout_range)
    sampler = ChromWindows(train_seq, cfg.seq_len + 1, cfg.max_n_fraction, rng)
    eval_sampler = ChromWindows(held_seq, cfg.eval_len + 1, cfg.max_n_fraction, np.random.default_rng(cfg.seed + 1))
    eval_windows = [eval_sampler.sample() for _ in range(cfg.eval_windows)]

    t0 = time.time()
    mcfg = Evo2Config.preset(cfg.preset, **cfg.model_overrides)
    model = Evo2Model(mcfg)
    model.reset_parameters(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and ".filter." not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and ".filter." not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))

    def lr_at(step):
        # Warm-up, then cosine decay over whichever runs out first: the steps or the time budget
        # (so a run cut short by its budget still anneals).
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        frac = min(1.0, max((step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps),
                            (time.time() - t0) / cfg.time_budget_s))
        return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))

    log = open(out / "train_log.jsonl", "a")
    step = 0
    for step in range(cfg.max_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        raw = torch.from_numpy(np.stack([sampler.sample() for _ in range(cfg.batch_size)]).astype(np.int64))
        tokens, wt = split_case(raw, 1.0)
        loss = weighted_ce(model(tokens[:, :-1]), tokens[:, 1:], wt[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        rec = {"step": step, "loss_bits": float(loss.detach()) / math.log(2), "lr": lr_at(step),
               "grad_norm": float(gn),
               "elapsed_s": round(time.time() - t0, 1)}
        if (step + 1) % cfg.save_every == 0:
            rec["heldout_bits"] = heldout_bits(model, eval_windows[:4])
            save_evo2(model, out)
        log.write(json.dumps(rec) + "\n")
        log.flush()
        if time.time() - t0 > cfg.time_budget_s:
            break
    save_evo2(model, out)
    metrics = {
        "steps": step + 1,
        "tokens_seen": (step + 1) * cfg.batch_size * cfg.seq_len,
        "train_time_s": round(time.time() - t0, 1),
        "heldout_bits_per_base": heldout_bits(model, eval_windows),
        f"markov{cfg.markov_order}_bits_per_base": markov_bits_per_base(
            train_seq, np.concatenate(eval_windows), cfg.markov_order),
        "windows_skipped_for_N": sampler.skipped,
        "params": model.num_parameters(),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
