"""FOCUS streaming vs the base model with a full KV cache vs fixed-window truncation (CPU).

Usage:
    python benchmarks/focus_streaming.py                      # tiny preset, k=100, W=1024, 64 kb ... 4 Mb
    python benchmarks/focus_streaming.py --lengths 65536 262144 --budget 300

Streaming modes, each run in a fresh process, window by window (chunk = W):
  focus       FocusModel.stream: Hyena state + only Focus keys/values across windows
  full_kv     the base model with its full attention KV cache (exact, O(n^2) attention)
  truncation  the base model with attention reset at every window (Hyena state still carried)
It prints time, peak RSS growth, attention-state bytes, ratios against full_kv, and the fitted
log-log time slope of each mode; then one training step (forward + backward) over 8 windows done
in one pass (block-sparse masked forward) vs window by window. Writes
benchmarks/results/focus_streaming.{json,md}.
"""

from __future__ import annotations

import argparse

from common import Timer, isolated, loglog_slope, machine, mib, predict_seconds, write_results


def build(preset, k, window, threads):
    import torch

    from focus_nemo.evo2 import Evo2Config, Evo2Model
    from focus_nemo.focus import FocusConfig, FocusModel

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = Evo2Model(Evo2Config.preset(preset)).eval()
    return FocusModel(base, FocusConfig(k=k, window=window))


def run(mode: str, length: int, preset: str, k: int, window: int, threads: int) -> dict:
    import torch

    from focus_nemo.evo2 import KVCache

    fm = build(preset, k, window, threads)
    tokens = torch.tensor([65, 67, 71, 84])[torch.randint(0, 4, (1, length))]
    with torch.no_grad():
        fm.base(tokens[:, :256])  # warm-up
        with Timer() as t:
            if mode == "focus":
                state = fm.init_state(1)
                for s in range(0, length, window):
                    _, state = fm.forward_chunk(tokens[:, s: s + window], state)
                nb = state.nbytes()
                attn_bytes, hyena_bytes = nb["focus_memory"] + nb["window"], nb["hyena"]
                entries = state.memory_entries()
            else:
                state = fm.base.init_state(1)
                for s in range(0, length, window):
                    if mode == "truncation":
                        state.blocks = [KVCache() if isinstance(b, KVCache) else b for b in state.blocks]
                    _, state = fm.base.forward_chunk(tokens[:, s: s + window], state)
                attn_bytes, hyena_bytes = state.kv_nbytes(), state.hyena_nbytes()
                entries = None
    return {"mode": mode, "length": length, "seconds": t.seconds, "bases_per_s": length / t.seconds,
            "peak_extra_bytes": t.peak_extra_bytes, "attention_state_bytes": attn_bytes,
            "hyena_state_bytes": hyena_bytes, "focus_entries_per_attn_block": entries}


def train_step(how: str, preset: str, k: int, window: int, windows: int, threads: int, repeats: int = 3) -> dict:
    import torch

    from focus_nemo.focus import focus_loss, split_case, weighted_ce

    fm = build(preset, k, window, threads)
    raw = torch.tensor([65, 67, 71, 84])[torch.randint(0, 4, (1, windows * window + 1))]
    times, peaks = [], []
    for _ in range(repeats + 1):  # the first repeat is the cold one: its RSS growth is the step's memory
        fm.zero_grad(set_to_none=True)
        with Timer() as t:
            if how == "one_pass":
                loss = focus_loss(fm, raw)["loss"]
            else:
                tokens, w = split_case(raw, fm.config.lowercase_weight)
                state = fm.init_state(1)
                num, den = 0.0, 0.0
                for s in range(0, windows * window, window):
                    logits, state = fm.forward_chunk(tokens[:, s: s + window], state)
                    ww = w[:, s + 1: s + window + 1]
                    num = num + weighted_ce(logits, tokens[:, s + 1: s + window + 1], ww) * ww.sum()
                    den = den + ww.sum()
                loss = num / den
            loss.backward()
        times.append(t.seconds)
        peaks.append(t.peak_extra_bytes)
    return {"how": how, "windows": windows, "bases": windows * window, "seconds": min(times[1:]),
            "loss": float(loss), "peak_extra_bytes": peaks[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--lengths", type=int, nargs="+", default=[65536, 262144, 1048576, 4194304])
    ap.add_argument("--budget", type=float, default=1200.0, help="max predicted seconds per run")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--train-windows", type=int, default=8, help="0 skips the training-step comparison")
    ap.add_argument("--modes", nargs="*", default=["focus", "truncation", "full_kv"])
    ap.add_argument("--name", default="focus_streaming", help="results file stem")
    args = ap.parse_args()
    rows = []
    exps = {"focus": 1.5, "full_kv": 2.0, "truncation": 1.0}  # conservative growth for the skip rule
    for mode in args.modes:
        done_l, done_s = [], []
        for L in args.lengths:
            est = predict_seconds(done_l, done_s, L, exps[mode])
            if est is not None and est > args.budget:
                rows.append({"mode": mode, "length": L, "skipped": f"predicted {est:,.0f} s > budget"})
                print(rows[-1], flush=True)
                continue
            r = isolated(run, mode=mode, length=L, preset=args.preset, k=args.k, window=args.window,
                         threads=args.threads)
            rows.append(r)
            print(r, flush=True)
            if "seconds" in r:
                done_l.append(L)
                done_s.append(r["seconds"])
    slopes = {}
    for mode in args.modes:
        ok = [r for r in rows if r["mode"] == mode and "seconds" in r]
        slopes[mode] = loglog_slope([r["length"] for r in ok], [r["seconds"] for r in ok])
    steps = [isolated(train_step, how=h, preset=args.preset, k=args.k, window=args.window,
                      windows=args.train_windows, threads=args.threads)
             for h in (("one_pass", "window_by_window") if args.train_windows else ())]
    for s in steps:
        print(s, flush=True)
    info = machine()
    by = {(r["mode"], r["length"]): r for r in rows if "seconds" in r}
    md = [f"# FOCUS streaming ({args.preset}, k={args.k}, W={args.window}) vs full KV cache vs truncation", "",
          f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} (CPU, fp32, batch 1).", "",
          "| mode | length | time s | bases/s | peak RSS growth MiB | attention state MiB | Hyena state MiB |"
          " time / full_kv | attention state / full_kv |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "seconds" not in r:
            md.append(f"| {r['mode']} | {r['length']:,} | not run: {r.get('skipped', r.get('error'))} |"
                      " | | | | | |")
            continue
        ref = by.get(("full_kv", r["length"]))
        tr = f"{r['seconds'] / ref['seconds']:.3f}" if ref else "-"
        mr = f"{r['attention_state_bytes'] / ref['attention_state_bytes']:.4f}" if ref else "-"
        md.append(f"| {r['mode']} | {r['length']:,} | {r['seconds']:.1f} | {r['bases_per_s']:,.0f} | "
                  f"{mib(r['peak_extra_bytes'])} | {mib(r['attention_state_bytes'])} | "
                  f"{mib(r['hyena_state_bytes'])} | {tr} | {mr} |")
    md += ["", "Log-log time slope (fit over the lengths run): "
           + ", ".join(f"{m} {s:.2f}" if s else f"{m} n/a" for m, s in slopes.items()), "",
           ]
    if steps:
        md += [f"Training step (forward + backward) over {args.train_windows} windows "
               f"({args.train_windows * args.window:,} bases):", "",
               "| how | seconds | peak RSS growth MiB |", "|---|---|---|"]
    for s in steps:
        md.append(f"| {s['how']} | {s.get('seconds', float('nan')):.2f} | {mib(s.get('peak_extra_bytes'))} |")
    if len(steps) == 2 and all("seconds" in s for s in steps):
        md += ["", f"Window by window / one pass time: {steps[1]['seconds'] / steps[0]['seconds']:.2f} "
               f"(same loss: {steps[0]['loss']:.6f} vs {steps[1]['loss']:.6f})."]
    write_results(args.name, {"machine": info, "args": vars(args), "rows": rows, "slopes": slopes,
                                      "train_step": steps}, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
