"""Does a long stream drift? Bits/base of each megabase of one continuous stream against a fresh stream
started at that megabase.

A model whose streaming state is sound scores a megabase the same whether the stream began there or
megabases earlier (the earlier bases are far beyond what it can use). A long filter with a non-decaying
pole integrates every input since the stream began, and the continuous stream's scores then worsen with
position while fresh streams stay flat. This streams `--mb` megabases of a record through the FOCUS model
(`focus_nemo.scoring.LoglikStream`, the code `score_fasta` runs), and each megabase again from a fresh state.

Usage:
    python benchmarks/drift.py --fasta ../shared/data/human/grch37_chr20.fa.gz --record 20 --start 40000000 \
        --mb 8 --out benchmarks/results/drift_v2
    python benchmarks/drift.py --checkpoint runs/base --adapter none --mb 2 --mb-size 250000 --out /tmp/drift

Writes <out>.json and <out>.md: per megabase, continuous and fresh bits/base and their difference.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np


def bits(ll: np.ndarray) -> float:
    ok = np.isfinite(ll)
    return float(-ll[ok].mean() / math.log(2)) if ok.any() else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fasta", default="../shared/data/human/grch37_chr20.fa.gz")
    ap.add_argument("--record", default="20")
    ap.add_argument("--start", type=int, default=40_000_000, help="0-based start of the stream (held-out chr20)")
    ap.add_argument("--mb", type=int, default=8, help="megabases to stream")
    ap.add_argument("--mb-size", type=int, default=1_000_000, help="bases per 'megabase' (smaller for a quick run)")
    ap.add_argument("--checkpoint", default="embedded")
    ap.add_argument("--adapter", default="embedded", help="adapter directory, 'embedded', or 'none' (untrained)")
    ap.add_argument("--horizon", default="adapter", help="'adapter', 'auto', 'none' or bases (as score_fasta)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch

    from focus_nemo.data import open_genome
    from focus_nemo.scoring import LoglikStream
    from focus_nemo.scoring.model import ADAPTER_HORIZON, load_scoring_model

    torch.set_num_threads(args.threads)
    horizon = {"adapter": ADAPTER_HORIZON, "none": None}.get(args.horizon, args.horizon)
    if isinstance(horizon, str) and horizon != "auto" and horizon != ADAPTER_HORIZON:
        horizon = int(horizon)
    fm, k, window = load_scoring_model(args.checkpoint, None if args.adapter == "none" else args.adapter,
                                       horizon=horizon)
    fm.eval()
    seq = open_genome(args.fasta).fetch(args.record, args.start, args.start + args.mb * args.mb_size)
    if len(seq) < args.mb * args.mb_size:
        raise SystemExit(f"--fasta {args.fasta}: record {args.record} holds only {args.start + len(seq)} bases; "
                         f"{args.mb} x {args.mb_size} from {args.start} do not fit")
    rows = []
    t0 = time.time()
    with torch.inference_mode():
        cont = LoglikStream(fm, k, window)
        for i in range(args.mb):
            piece = seq[i * args.mb_size: (i + 1) * args.mb_size]
            c = bits(cont.feed(piece))
            f = bits(LoglikStream(fm, k, window).feed(piece))
            rows.append({"mb": i, "start": args.start + i * args.mb_size, "continuous_bits": c, "fresh_bits": f,
                         "difference": c - f})
            print(f"Mb {i}: continuous {c:.4f}  fresh {f:.4f}  difference {c - f:+.4f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    diffs = np.array([r["difference"] for r in rows])
    info = {"fasta": args.fasta, "record": args.record, "start": args.start, "mb": args.mb, "mb_size": args.mb_size,
            "checkpoint": args.checkpoint, "adapter": args.adapter, "k": k, "window": window,
            "horizon": fm.config.horizon, "seconds": round(time.time() - t0, 1), "threads": args.threads,
            "machine": platform.processor() or platform.machine(), "max_abs_difference": float(np.abs(diffs).max()),
            "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(info, indent=2))
    lines = [f"# Drift: {args.mb} x {args.mb_size:,} bases of {args.record} from {args.start:,}",
             "", f"Model {args.checkpoint}, adapter {args.adapter} (k = {k}, W = {window}, "
             f"horizon {fm.config.horizon}); {info['seconds']} s on {args.threads} thread(s).", "",
             "| Mb | continuous bits/base | fresh stream bits/base | difference |", "|---|---|---|---|"]
    lines += [f"| {r['mb']} | {r['continuous_bits']:.4f} | {r['fresh_bits']:.4f} | {r['difference']:+.4f} |"
              for r in rows]
    lines += ["", f"Largest |difference|: {info['max_abs_difference']:.4f} bits/base."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"largest |difference| {info['max_abs_difference']:.4f} bits/base; wrote {out}.json/.md")


if __name__ == "__main__":
    main()
