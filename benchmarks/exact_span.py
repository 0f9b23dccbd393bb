"""How close does exact attention over the last S bases get to full context? The floor a memory must beat.

Usage:
    python benchmarks/exact_span.py                                     # embedded model, 24 x 10 kb
    python benchmarks/exact_span.py --models focus_nemo/assets/evo2_small_chr20 \\
        focus_nemo/assets/evo2_small_chr20_long --length 10000 --spans 1024 2048 4096 8192 --threads 1

For each base model and the evaluation's own held-out sequences (`recipes/evaluate_focus.py` defaults:
bundled chr20_heldout, seed 0, either strand, so the same sequences as docs/fidelity.md), the base is run
with full causal attention and with every attention query limited to its S most recent positions
(a sliding window holding S exact keys and values per block; Hyena reads everything). It reports, over
the positions after the first window, the evaluation's metrics (mean |delta p(true base)| and
KL(full || sliding) over A/C/G/T), as mean +- 95% CI half-width over sequences.

A compressed memory of B entries per block that is to reach a target |delta p| has to do at least as well
as the exact span where this curve crosses the target, unless it carries more than that many exact bases
would. Writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import time

from common import machine, write_results


def main() -> None:
    import numpy as np
    import torch

    from focus_nemo.evaluation.config import EvalConfig, SourceSection
    from focus_nemo.evaluation.metrics import (
        acgt_probs,
        distribution_metrics,
        scored_positions,
        true_base_index,
    )
    from focus_nemo.evaluation.sequences import sample_sequences
    from focus_nemo.evaluation.statistics import summary_stats
    from focus_nemo.evo2 import embedded_model_dir, load_evo2
    from focus_nemo.focus.loss import split_case

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[str(embedded_model_dir())])
    ap.add_argument("--source", default="bundled:chr20_heldout")
    ap.add_argument("--sequences", type=int, default=24)
    ap.add_argument("--length", type=int, default=10_000)
    ap.add_argument("--window", type=int, default=1024, help="positions before it are not scored")
    ap.add_argument("--spans", type=int, nargs="+", default=[1024, 1536, 2048, 3072, 4096, 6144, 8192])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="exact_span")
    args = ap.parse_args()
    if any(s < 1 for s in args.spans):
        raise SystemExit(f"--spans: every span must be >= 1, got {args.spans}")
    if args.length <= args.window:
        raise SystemExit(f"--length {args.length} must exceed --window {args.window}: nothing would be scored")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = EvalConfig(sources=[SourceSection(fasta=args.source)], lengths=[args.length],
                     num_sequences=args.sequences, seed=args.seed)
    seqs = sample_sequences(cfg)
    results = {}
    for path in args.models:
        model = load_evo2(path, dtype=torch.float32).eval()
        t = time.time()
        per = {s: {"abs_dp_true": [], "kl": []} for s in args.spans}
        with torch.no_grad():
            for seq in seqs:
                raw = torch.from_numpy(seq.raw.astype(np.int64))[None]
                tokens, _ = split_case(raw, 1.0)
                x, y = tokens[:, :-1], tokens[:, 1:]
                scored = scored_positions(raw, args.window)[0]
                true_idx = true_base_index(y)[0][scored]
                p = acgt_probs(model(x)[0][scored], torch.float64)
                for s in args.spans:
                    q = acgt_probs(model(x, attention_span=s)[0][scored], torch.float64)
                    m = distribution_metrics(p, q, true_idx)
                    for key in per[s]:
                        per[s][key].append(float(m[key].mean()))
        name = model.config.name or path
        results[name] = {"path": path, "seconds": round(time.time() - t, 1),
                         "spans": {str(s): {k: summary_stats(v) for k, v in d.items()} for s, d in per.items()}}
        print(name, {s: round(summary_stats(d["abs_dp_true"])["mean"], 6) for s, d in per.items()}, flush=True)
    payload = {"machine": machine(), "source": args.source, "sequences": args.sequences, "length": args.length,
               "window": args.window, "seed": args.seed, "threads": args.threads, "results": results}
    lines = [f"# Exact attention span against full context ({args.sequences} held-out sequences of "
             f"{args.length:,} bases, {args.source}, seed {args.seed})", "",
             f"Sliding-window attention over the S most recent positions; metrics over positions after the first "
             f"{args.window} bases, over A/C/G/T; mean +- 95% CI half-width over sequences. Machine: "
             f"{payload['machine']['cpu']}, {payload['machine']['cores']} cores.", ""]
    for name, r in results.items():
        lines += [f"## {name} ({r['seconds']} s, {args.threads} thread)", "",
                  "| exact keys per block (S) | mean \\|delta p(true)\\| | KL(full \\|\\| sliding), nats |",
                  "|---|---|---|"]
        for s, d in r["spans"].items():
            dp, kl = d["abs_dp_true"], d["kl"]
            lines.append(f"| {int(s):,} | {dp['mean']:.3e} +- {dp['ci_high'] - dp['mean']:.1e} | "
                         f"{kl['mean']:.3e} +- {kl['ci_high'] - kl['mean']:.1e} |")
        lines.append("")
    write_results(args.name, payload, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
