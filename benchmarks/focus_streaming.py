"""FOCUS streaming vs the base model with a full KV cache vs fixed-window truncation (CPU).

Usage:
    python benchmarks/focus_streaming.py                      # tiny preset, k=100, W=1024, 64 kb ... 4 Mb
    python benchmarks/focus_streaming.py --lengths 65536 262144 --budget 300

Streaming modes, each run in a fresh process, window by window (chunk = W), measured by
focus_nemo.profiling (as recipes/profile_memory.py does; random weights and random bases here):
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

from common import Timer, isolated, machine, mib, write_results

from focus_nemo.profiling import ProfileConfig, ProfileResult, load_model, profile

MODES = {"focus": "focus", "truncation": "truncation", "full_kv": "full"}  # mode -> focus_nemo.profiling method


def config(preset: str, k: int, window: int, threads: int) -> ProfileConfig:
    """Random weights of `preset`, random bases, one window per chunk."""
    return ProfileConfig(checkpoint=f"random:{preset}", k=k, window=window, random_sequence=True, threads=threads)


def train_step(how: str, preset: str, k: int, window: int, windows: int, threads: int, repeats: int = 3) -> dict:
    import torch

    from focus_nemo.focus import focus_loss, split_case, weighted_ce

    fm = load_model(config(preset, k, window, threads))
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
            "loss": float(loss.detach()), "peak_extra_bytes": peaks[0]}


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
    bad = [m for m in args.modes if m not in MODES]
    if bad:
        ap.error(f"--modes: {bad} not among {list(MODES)}")
    cfg = config(args.preset, args.k, args.window, args.threads)
    method_mode = {v: m for m, v in MODES.items()}
    rows = profile(cfg, [MODES[m] for m in args.modes], args.lengths, budget=args.budget, isolate=True, log=print)
    for r in rows:
        r["mode"] = method_mode[r["method"]]
    slopes = {method_mode[m]: e for m, e in ProfileResult(cfg, rows).time_exponents().items()}
    steps = [isolated(train_step, how=h, preset=args.preset, k=args.k, window=args.window,
                      windows=args.train_windows, threads=args.threads)
             for h in (("one_pass", "window_by_window") if args.train_windows else ())]
    for s in steps:
        print(s, flush=True)
    info = machine()
    by = {(r["mode"], r["length"]): r for r in rows if r["status"] == "ok"}
    md = [f"# FOCUS streaming ({args.preset}, k={args.k}, W={args.window}) vs full KV cache vs truncation", "",
          f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} (CPU, fp32, batch 1).", "",
          "| mode | length | time s | bases/s | peak RSS growth MiB | attention state MiB | Hyena state MiB |"
          " time / full_kv | attention state / full_kv |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            md.append(f"| {r['mode']} | {r['length']:,} | not run: {r['note']} | | | | | | |")
            continue
        ref = by.get(("full_kv", r["length"]))
        tr = f"{r['seconds'] / ref['seconds']:.3f}" if ref else "-"
        mr = f"{r['attention_state_bytes'] / ref['attention_state_bytes']:.4f}" if ref else "-"
        md.append(f"| {r['mode']} | {r['length']:,} | {r['seconds']:.1f} | {r['bases_per_s']:,.0f} | "
                  f"{mib(r['peak_rss_growth_bytes'])} | {mib(r['attention_state_bytes'])} | "
                  f"{mib(r['hyena_state_bytes'])} | {tr} | {mr} |")
    md += ["", "Log-log time slope (fit over the lengths run): "
           + ", ".join(f"{m} {s:.2f}" if s is not None else f"{m} n/a" for m, s in slopes.items()), "",
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
