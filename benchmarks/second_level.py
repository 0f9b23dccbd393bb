"""Does a second level of Focus memory recover what a bounded horizon loses? Held-out human chr20.

Usage:
    python benchmarks/second_level.py                       # embedded model + its local = 0 adapter
    python benchmarks/second_level.py --sequences 2 --length 16384 --train-steps 0   # quick look

The embedded base with its paper-scheme FOCUS adapter (`evo2_small_chr20_focus`, k = 100, W = 1024)
scores the same seeded held-out sequences (GRCh37 chr20:50-51 Mb, `grch37_chr20_heldout.fa.gz`, never trained on) with:

* ``unbounded``: single-level FOCUS, every Focus entry kept (the paper's memory);
* ``horizon``: the last H/W windows' Focus entries only (older ones dropped, DESIGN D12);
* ``horizon+mean``: the horizon plus second-level entries, groups of k2 entries mean-pooled (D12);
* ``horizon+trained``: the same with the trained level-2 query q2 (attention pooling).

For each it reports KL(full || method) and mean |delta p(true base)| against the base model with full
context (`focus_nemo.evaluation.metrics`), over the positions after the first window (the project's
scored positions) and over the positions past H + W, the only ones where the methods differ.

q2 is trained here, cheaply, at the first configuration of ``--configs`` (H/W windows : k2):
everything else frozen, distillation (KL to the base's full-context logits, positions past H + W) on
samples of (H/W + 5) windows from the training slice (`grch37_chr20_train.fa.gz`, 15 Mb from the
held-out one), Adam; the same q2 is then evaluated at every configuration. ``--q2 FILE`` reuses the
queries saved by an earlier run (benchmarks/results/<name>_q2.safetensors) instead of training.
``--ship DIR`` writes the adapter with the trained q2 (and the first configuration's level-2 settings)
when horizon+trained beats horizon+mean on held-out KL past H + W there.
Writes benchmarks/results/<name>.{json,md} and <name>_q2.safetensors.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from common import RESULTS, machine, write_results

DNA = Path(__file__).resolve().parents[1] / "focus_nemo" / "assets" / "dna"
METHODS = ("unbounded", "horizon", "horizon+mean", "horizon+trained")


def read_slice(path: Path) -> bytes:
    import pyfaidx

    fa = pyfaidx.Fasta(str(path), sequence_always_upper=False)
    name = next(iter(fa.keys()))
    return str(fa[name][:]).encode()


def samples(seq: bytes, count: int, length: int, seed: int, skip_n: bool = True) -> list[bytes]:
    """`count` seeded non-overlapping slices of `length` bases without N."""
    import random

    rng = random.Random(seed)
    slots = list(range(0, len(seq) - length, length))
    rng.shuffle(slots)
    out = []
    for s in slots:
        piece = seq[s: s + length].upper()
        if skip_n and piece.count(b"N"):
            continue
        out.append(piece)
        if len(out) == count:
            break
    if len(out) < count:
        raise ValueError(f"samples: only {len(out)} N-free slices of {length} bases, wanted {count}")
    return out


def to_tokens(piece: bytes):
    import torch

    return torch.frombuffer(bytearray(piece), dtype=torch.uint8).long()[None]


def set_method(fm, method: str, horizon: int, k2: int) -> None:
    fm.config.level2 = None
    fm.config.horizon = None if method == "unbounded" else horizon
    if method.startswith("horizon+"):
        fm.config.level2 = k2
        fm.config.level2_pool = method.split("+")[1]


def evaluate(fm, pieces: list[bytes], horizon: int, k2: int, q2: dict | None) -> dict:
    """Sums and counts per method of KL and |dp(true)|, after the first window and past H + W."""
    import torch

    from focus_nemo.evaluation.metrics import acgt_probs, distribution_metrics, scored_positions, true_base_index

    W = fm.config.window
    acc = {m: {"kl": 0.0, "abs_dp_true": 0.0, "n": 0, "kl_far": 0.0, "abs_dp_true_far": 0.0, "n_far": 0}
           for m in METHODS}
    per_seq = []
    for piece in pieces:
        raw = to_tokens(piece)
        x, y = raw[:, :-1], raw[:, 1:]
        scored = scored_positions(raw, W)
        far = scored.clone()
        far[:, : horizon + W] = False
        with torch.no_grad():
            p = acgt_probs(fm.base_logits(x), torch.float64)
            row = {}
            for m in METHODS:
                set_method(fm, m, horizon, k2)
                if m == "horizon+trained":
                    _load_q2(fm, q2)
                logits = fm(x)
                d = distribution_metrics(p, acgt_probs(logits, torch.float64), true_base_index(y))
                a = acc[m]
                for key in ("kl", "abs_dp_true"):
                    a[key] += float(d[key][scored].sum())
                    a[key + "_far"] += float(d[key][far].sum())
                a["n"] += int(scored.sum())
                a["n_far"] += int(far.sum())
                row[m] = float(d["kl"][far].mean())
        per_seq.append(row)
    out = {}
    for m, a in acc.items():
        out[m] = {"kl": a["kl"] / a["n"], "abs_dp_true": a["abs_dp_true"] / a["n"],
                  "kl_far": a["kl_far"] / a["n_far"], "abs_dp_true_far": a["abs_dp_true_far"] / a["n_far"],
                  "positions": a["n"], "positions_far": a["n_far"]}
    out["per_sequence_kl_far"] = per_seq
    return out


def _load_q2(fm, q2: dict | None) -> None:
    import torch

    with torch.no_grad():
        for name, p in fm.level2_query.items():
            p.copy_(q2[name] if q2 is not None else torch.zeros_like(p))


def train_q2(fm, pieces: list[bytes], horizon: int, k2: int, steps: int, lr: float, log) -> tuple[dict, list]:
    """Train only the level-2 queries by distillation on `pieces` (one per step, cycled)."""
    import torch
    import torch.nn.functional as F

    set_method(fm, "horizon+trained", horizon, k2)
    for p in fm.parameters():
        p.requires_grad_(False)
    params = list(fm.level2_query.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    W, history = fm.config.window, []
    t0 = time.time()
    for step in range(steps):
        raw = to_tokens(pieces[step % len(pieces)])
        x = raw[:, :-1]
        with torch.no_grad():
            ref = F.log_softmax(fm.base_logits(x)[:, horizon + W:], -1)
        lp = F.log_softmax(fm(x)[:, horizon + W:].float(), -1)
        loss = (ref.exp() * (ref - lp)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        if step % 10 == 0 or step == steps - 1:
            norm = math.sqrt(sum(float(p.detach().pow(2).sum()) for p in params))
            log(f"step {step} loss {history[-1]:.6f} (mean of last 10: {sum(history[-10:]) / len(history[-10:]):.6f}) "
                f"|q2| {norm:.3f} {time.time() - t0:.0f}s")
    for p in params:
        p.requires_grad_(False)
    return {n: p.detach().clone() for n, p in fm.level2_query.items()}, history


def main() -> None:
    from importlib.resources import files

    import torch

    from focus_nemo.loading import load_focus_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--length", type=int, default=24576, help="bases scored per held-out sequence")
    ap.add_argument("--configs", default="2:11,4:11,2:4",
                    help="comma-separated H/W:k2 pairs (horizon windows : Focus entries per second-level entry)")
    ap.add_argument("--q2", default=None, help="level-2 queries saved by an earlier run (skip training)")
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--train-extra-windows", type=int, default=5, help="training sample = H/W + this many windows")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ship", default=None, help="write the adapter with the trained q2 here if it beats the mean")
    ap.add_argument("--adapter", default=str(files("focus_nemo") / "assets" / "evo2_small_chr20_focus"),
                    help="the first-level adapter (default: the embedded model's paper-scheme adapter, local = 0)")
    ap.add_argument("--name", default="second_level")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    from safetensors.torch import load_file, save_file

    fm = load_focus_model(adapter=args.adapter)
    fm.add_level2_queries()
    W, k = fm.config.window, fm.config.k
    configs = [tuple(int(x) for x in c.split(":")) for c in args.configs.split(",")]
    hw, k2 = configs[0]
    H = hw * W
    heldout = samples(read_slice(DNA / "grch37_chr20_heldout.fa.gz"), args.sequences, args.length + 1, args.seed)
    train_len = (hw + args.train_extra_windows) * W + 1
    t0 = time.time()
    if args.q2:
        prefix = "level2_query."  # an adapter file holds them under this prefix
        q2 = {n.removeprefix(prefix): t for n, t in load_file(args.q2).items() if "." not in n or n.startswith(prefix)}
        history = []
        log(f"level-2 queries from {args.q2}")
    elif args.train_steps:
        train = samples(read_slice(DNA / "grch37_chr20_train.fa.gz"), args.train_steps, train_len, args.seed + 1)
        log(f"k={k} W={W} H={H} k2={k2}: {args.train_steps} training steps on {train_len - 1}-base samples")
        q2, history = train_q2(fm, train, H, k2, args.train_steps, args.lr, log)
        RESULTS.mkdir(parents=True, exist_ok=True)
        save_file({n: t.contiguous() for n, t in q2.items()}, str(RESULTS / f"{args.name}_q2.safetensors"))
    else:
        q2, history = None, []
    train_s = time.time() - t0
    results = {}
    t0 = time.time()
    for c_hw, c_k2 in configs:
        log(f"evaluating H/W={c_hw} k2={c_k2} on {len(heldout)} held-out x {args.length}")
        res = evaluate(fm, heldout, c_hw * W, c_k2, q2)
        results[f"{c_hw}:{c_k2}"] = res
        log(json.dumps({m: res[m] for m in METHODS}))
    eval_s = time.time() - t0
    res = results[f"{hw}:{k2}"]
    beats = q2 is not None and res["horizon+trained"]["kl_far"] < res["horizon+mean"]["kl_far"]
    shipped = None
    if args.ship and beats:
        set_method(fm, "horizon+trained", H, k2)
        _load_q2(fm, q2)
        shipped = str(fm.save_adapter(args.ship, extra={"level2_training": {
            "steps": args.train_steps, "lr": args.lr, "sample_bases": train_len - 1,
            "data": "grch37_chr20_train.fa.gz", "objective": "KL(base full context || FOCUS), q2 only"}}))
        log(f"shipped {shipped}")
    payload = {"machine": machine(), "model": "embedded", "adapter": Path(args.adapter).name,
               "k": k, "window": W, "configs": list(results), "sequences": len(heldout), "length": args.length,
               "heldout": "grch37_chr20_heldout.fa.gz", "seed": args.seed,
               "train": {"config": f"{hw}:{k2}", "steps": 0 if args.q2 else args.train_steps, "lr": args.lr,
                         "q2_from": args.q2, "sample_bases": train_len - 1, "seconds": round(train_s, 1),
                         "loss_first10": history[:10], "loss_last10": history[-10:]},
               "eval_seconds": round(eval_s, 1), "results": results, "trained_beats_mean": beats, "shipped": shipped}
    write_results(args.name, payload, markdown(payload))


def describe_machine(m: dict) -> str:
    return (f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s), torch {m['torch']}, "
            f"1-min load {m.get('load_average_1min', '?')} (the CPU is shared)")


def markdown(p: dict) -> str:
    t = p["train"]
    lines = [f"# Second level of Focus memory: fidelity on held-out chr20 ({p['sequences']} x {p['length']} bases)",
             "",
             f"Embedded model + adapter {p['adapter']}, k = {p['k']}, W = {p['window']}; horizon H (in windows) "
             "and k2 (Focus entries per second-level entry) per table. KL(full || method) in nats and mean "
             "|delta p(true base)| against the base with full context, x 1e-3; 'after W': every position after "
             "the first window; 'past H+W': the positions where the methods can differ.",
             "",
             f"Machine: {describe_machine(p['machine'])}. q2: trained at H/W:k2 = {t['config']}, "
             f"{t['steps']} steps of "
             f"{t['sample_bases']} bases (chr20 training slice), {t['seconds']} s"
             + (f", from {t['q2_from']}" if t["q2_from"] else "") + f"; evaluation {p['eval_seconds']} s.", ""]
    for c in p["configs"]:
        r = p["results"][c]
        hw, k2 = c.split(":")
        lines += [f"## H = {hw} windows, k2 = {k2}", "",
                  "| method | KL after W | abs dp after W | KL past H+W | abs dp past H+W "
                  "| sequences better than horizon |",
                  "|---|---|---|---|---|---|"]
        for m in METHODS:
            a = r[m]
            better = sum(s[m] < s["horizon"] for s in r["per_sequence_kl_far"])
            lines.append(f"| {m} | {1e3 * a['kl']:.4f} | {1e3 * a['abs_dp_true']:.4f} | {1e3 * a['kl_far']:.4f} | "
                         f"{1e3 * a['abs_dp_true_far']:.4f} | {better}/{len(r['per_sequence_kl_far'])} |")
        h, u = r["horizon"]["kl_far"], r["unbounded"]["kl_far"]
        for m in ("horizon+mean", "horizon+trained"):
            if h != u:
                lines.append(f"\n{m} recovers {100 * (h - r[m]['kl_far']) / (h - u):.0f}% of the KL gap between "
                             "the horizon and the unbounded memory (past H+W).")
        lines += ["", f"Positions: {r['unbounded']['positions']} after W, {r['unbounded']['positions_far']} "
                  "past H+W.", ""]
    lines += [f"Trained q2 beats mean pooling on held-out KL past H+W at {t['config']}: {p['trained_beats_mean']}"
              + (f" (shipped: {p['shipped']})" if p["shipped"] else " (not shipped)") + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
