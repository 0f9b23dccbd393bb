"""Evo-2 full forward vs exact chunked streaming: time and peak memory vs length (CPU).

Usage:
    python benchmarks/evo2_streaming.py                       # tiny preset, 16 kb ... 1 Mb
    python benchmarks/evo2_streaming.py --lengths 16384 65536 --budget 300

For each length it runs, each in a fresh process, (a) the full-sequence forward and (b) streaming
in chunks, and reports wall time, peak RSS growth, the Hyena streaming state (constant) and the
attention KV cache (2 * hidden * bytes per base per attention block). Runs whose time, extrapolated
quadratically from the last measured length, exceeds --budget seconds are not started; the table
says so. Writes benchmarks/results/evo2_streaming.{json,md}.
"""

from __future__ import annotations

import argparse

from common import Timer, isolated, loglog_slope, machine, mib, predict_seconds, write_results


def run(mode: str, length: int, chunk: int, preset: str, threads: int) -> dict:
    import torch

    from focus_nemo.evo2 import Evo2Config, Evo2Model

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Evo2Model(Evo2Config.preset(preset)).eval()
    tokens = torch.tensor([65, 67, 71, 84])[torch.randint(0, 4, (1, length))]
    with torch.no_grad():
        model(tokens[:, :256])  # warm-up
        with Timer() as t:
            if mode == "full":
                logits = model(tokens)
                del logits
                state = None
            else:
                state = model.init_state(1)
                for s in range(0, length, chunk):
                    _, state = model.forward_chunk(tokens[:, s: s + chunk], state)
    out = {"mode": mode, "length": length, "seconds": t.seconds, "peak_extra_bytes": t.peak_extra_bytes,
           "bases_per_s": length / t.seconds}
    if state is not None:
        out["hyena_state_bytes"] = state.hyena_nbytes()
        out["kv_cache_bytes"] = state.kv_nbytes()
        out["kv_bytes_per_base_per_attn_block"] = state.kv_nbytes() / length / len(model.config.attention_layers)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--lengths", type=int, nargs="+", default=[16384, 65536, 262144, 1048576])
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--budget", type=float, default=900.0, help="max predicted seconds per run")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    rows = []
    for mode in ("full", "stream"):
        done_l, done_s = [], []
        for L in args.lengths:
            est = predict_seconds(done_l, done_s, L)
            if est is not None and est > args.budget:
                rows.append({"mode": mode, "length": L, "skipped": f"predicted {est:,.0f} s > budget"})
                print(rows[-1], flush=True)
                continue
            r = isolated(run, mode=mode, length=L, chunk=args.chunk, preset=args.preset, threads=args.threads)
            rows.append(r)
            print(r, flush=True)
            if "seconds" in r:
                done_l.append(L)
                done_s.append(r["seconds"])
    slopes = {}
    for mode in ("full", "stream"):
        ok = [r for r in rows if r["mode"] == mode and "seconds" in r]
        slopes[mode] = loglog_slope([r["length"] for r in ok], [r["seconds"] for r in ok])
    info = machine()
    md = [f"# Evo-2 ({args.preset}) full forward vs exact streaming (chunk {args.chunk})", "",
          f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} (CPU, fp32).", "",
          "| mode | length | time s | bases/s | peak RSS growth MiB | Hyena state MiB | KV cache MiB |"
          " KV B/base/attn block |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r or "error" in r:
            md.append(f"| {r['mode']} | {r['length']:,} | not run: {r.get('skipped', r.get('error'))} | | | | | |")
            continue
        md.append(f"| {r['mode']} | {r['length']:,} | {r['seconds']:.2f} | {r['bases_per_s']:,.0f} | "
                  f"{mib(r['peak_extra_bytes'])} | {mib(r.get('hyena_state_bytes'))} | "
                  f"{mib(r.get('kv_cache_bytes'))} | {r.get('kv_bytes_per_base_per_attn_block', '-')} |")
    md += ["", "Log-log time slope: " + ", ".join(f"{m} {s:.2f}" if s else f"{m} n/a" for m, s in slopes.items()),
           "", "The Hyena state is the same at every length; the KV cache grows by 2 x hidden x 4 bytes per base",
           "per attention block, and attention time grows quadratically, which is what FOCUS removes.", ""]
    write_results("evo2_streaming", {"machine": info, "args": vars(args), "rows": rows, "slopes": slopes},
                  "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
