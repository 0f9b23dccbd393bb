"""What splitting a record into segments costs (`score_fasta(split_records=..., split_overlap=...)`): per-base
log-likelihoods of a split run against an unsplit stream of the same record, for a few warm-up overlaps.

Usage:
    python benchmarks/score_split.py                                  # 200 kb of chr20, 50 kb segments
    python benchmarks/score_split.py --length 400000 --size 100000 --overlaps 4096,32768

One record (the first --length bases of the bundled chr20 training region) is scored in one process with the
embedded model and adapter, once unsplit and once per overlap with --size segments. Reported per overlap:
max and mean |difference| in per-base log-likelihood (nats) over bases both runs score, the same within the
first 1 kb / 1-8 kb / beyond 8 kb after each segment start, the record's bits/base and its difference from the
unsplit run's, and the extra bases streamed as warm-up (the overlap's compute cost). Writes
benchmarks/results/score_split.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, write_results

from focus_nemo.scoring import load_scores, load_scoring_model, score_fasta

ROOT = Path(__file__).resolve().parents[1]
CHR20 = ROOT / "focus_nemo" / "assets" / "dna" / "grch37_chr20_train.fa.gz"
BANDS = ((0, 1024), (1024, 8192), (8192, None))


def g3(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def markdown(r: dict) -> str:
    """The results table and what it shows, from the JSON payload."""
    base = r["unsplit"]
    md = ["# Split records: cost of the warm-up overlap (`benchmarks/score_split.py`)", "",
          f"Machine: {r['machine']}; embedded model and adapter (k={r['k']}, W={r['window']}), one process.",
          f"Input: the first {r['length']:,} bases of {CHR20.name} as one record, segments of "
          f"{r['segment_size']:,} bases; unsplit: {base['bits_per_base']:.5f} bits/base in {base['seconds']:.0f} s.",
          "", "| overlap (bases) | segments | max abs diff (nats) | mean abs diff (nats) | mean, first 1 kb of a "
          "segment | mean, 1-8 kb | mean, beyond 8 kb | bits/base | diff vs unsplit (bits/base) | warm-up bases "
          "(share) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for x in r["split"]:
        b = x["after_segment_start"]
        md.append(f"| {x['overlap_rounded']:,} | {x['segments']} | {x['max_abs_diff_nats']:.3g} | "
                  f"{x['mean_abs_diff_nats']:.3g} | {g3(b['0-1024']['mean'])} | {g3(b['1024-8192']['mean'])} | "
                  f"{g3(b['8192-end']['mean'])} | {x['bits_per_base']:.5f} | {x['bits_per_base_diff']:+.2e} | "
                  f"{x['warm_up_bases']:,} ({x['warm_up_share']:.1%}) |")
    md += ["", "Differences are over bases both runs score (a segment's first base has no prediction when the "
           "overlap is 0). The first segment is the unsplit stream itself; each later one starts from a state "
           "that saw only the overlap. Whether its scores then converge to the unsplit stream's depends on the "
           "model: the mean difference per band above shows it (a model whose long filters do not decay keeps "
           "the whole stream in its state, so a split run's later segments differ throughout, and the "
           "unsplit stream's own drift with position is part of that difference)."]
    return "\n".join(md) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--length", type=int, default=200_000)
    p.add_argument("--size", type=int, default=50_000, help="segment size (rounded down to a multiple of W)")
    p.add_argument("--overlaps", default="2048,16384")
    p.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the existing .json")
    a = p.parse_args()
    if a.markdown_only:
        import json

        from common import RESULTS

        payload = json.loads((RESULTS / "score_split.json").read_text())
        return write_results("score_split", payload, markdown(payload))
    from focus_nemo.data import open_genome

    g = open_genome(CHR20)
    seq = g.fetch(g.names[0], 0, a.length).tobytes()
    fm, k, window = load_scoring_model()
    size = a.size // window * window
    with tempfile.TemporaryDirectory(prefix="score_split_") as tmp:
        fa = Path(tmp) / "r.fa"
        fa.write_bytes(b">chr20_slice\n" + seq + b"\n")

        def run(name: str, **kw) -> tuple[np.ndarray, dict, float]:
            t0 = time.perf_counter()
            done = score_fasta(fa, Path(tmp) / name, fm, k=k, window=window, progress=False, **kw)
            ll, _ = load_scores(Path(tmp) / name / "chr20_slice.npz")
            return ll, done.summary[0], time.perf_counter() - t0

        base, base_row, base_s = run("whole")
        rows = []
        for overlap in (int(x) for x in a.overlaps.split(",")):
            ll, row, secs = run(f"split{overlap}", split_records=size, split_overlap=overlap)
            both = ~np.isnan(base) & ~np.isnan(ll)
            diff = np.where(both, np.abs(ll.astype(np.float64) - base), 0.0)
            starts = list(range(size, a.length, size))
            bands = {}
            for lo, hi in BANDS:
                mask = np.zeros(a.length, bool)
                for s in starts:
                    mask[s + lo: min(a.length, s + size, s + hi if hi else a.length)] = True
                sel = diff[mask & both]
                bands[f"{lo}-{hi or 'end'}"] = {"max": float(sel.max()) if sel.size else None,
                                               "mean": float(sel.mean()) if sel.size else None}
            rounded = -(-overlap // window) * window
            rows.append({"overlap": overlap, "overlap_rounded": rounded, "segments": len(starts) + 1,
                         "max_abs_diff_nats": float(diff.max()), "mean_abs_diff_nats": float(diff[both].mean()),
                         "bits_per_base": row["bits_per_base"],
                         "bits_per_base_diff": row["bits_per_base"] - base_row["bits_per_base"],
                         "scored_diff": row["scored"] - base_row["scored"], "after_segment_start": bands,
                         "warm_up_bases": len(starts) * rounded, "warm_up_share": len(starts) * rounded / a.length,
                         "seconds": secs})
            print(rows[-1], flush=True)
    info = machine()
    payload = {"machine": info, "length": a.length, "segment_size": size, "k": k, "window": window,
               "unsplit": {"bits_per_base": base_row["bits_per_base"], "seconds": base_s}, "split": rows}
    if any(math.isnan(r["max_abs_diff_nats"]) for r in rows):
        raise SystemExit("NaN difference")
    write_results("score_split", payload, markdown(payload))


if __name__ == "__main__":
    main()
