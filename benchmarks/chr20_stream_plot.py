"""Plot a whole-chromosome scoring run: bases/s and resident memory along the run (from the run's progress
log) and bits/base per megabase (from its scores).

Usage:
    python benchmarks/chr20_stream_plot.py --log benchmarks/results/chr20_stream.log --scores runs/chr20/20.npz \
        --out docs/figures/chr20_stream.png
"""

from __future__ import annotations

import argparse
import re

import numpy as np

LINE = re.compile(r": ([\d,]+)/([\d,]+) bases .*?, ([\d,]+) bases/s \(overall ([\d,]+)\), "
                  r"RSS (\d+) MiB \(peak (\d+)\)")


def parse_log(path: str) -> np.ndarray:
    """[n, 5]: position, total, bases/s over the interval, overall bases/s, RSS MiB of each progress line."""
    rows = []
    with open(path) as fh:
        for line in fh:
            m = LINE.search(line)
            if m:
                rows.append([float(g.replace(",", "")) for g in m.groups()[:5]])
    if not rows:
        raise ValueError(f"{path}: no progress lines (expected '<record>: <done>/<total> bases ...')")
    return np.array(rows)


def bits_per_mb(scores: str, step: int = 1_000_000) -> tuple[np.ndarray, np.ndarray]:
    from focus_nemo.scoring import load_scores

    ll, _ = load_scores(scores)
    starts = np.arange(0, len(ll), step)
    out = np.full(len(starts), np.nan)
    for i, s in enumerate(starts):
        x = ll[s: s + step]
        x = x[np.isfinite(x)]
        if len(x):
            out[i] = -x.mean() / np.log(2)
    return starts, out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log", required=True)
    p.add_argument("--scores", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    log = parse_log(a.log)
    starts, bits = bits_per_mb(a.scores)
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    ax = fig.subplots(1, 3)
    ax[0].plot(log[:, 0] / 1e6, log[:, 2], label="over the last minute")
    ax[0].plot(log[:, 0] / 1e6, log[:, 3], label="overall")
    ax[0].set(xlabel="position (Mb)", ylabel="bases/s", title="throughput (1 thread, shared CPU)")
    ax[0].legend(fontsize=8)
    ax[1].plot(log[:, 0] / 1e6, log[:, 4])
    ax[1].set(xlabel="position (Mb)", ylabel="resident memory (MiB)", ylim=(0, max(1024, log[:, 4].max() * 1.1)),
              title="RSS of the scoring process")
    ax[2].plot(starts / 1e6, bits, marker=".")
    ax[2].set(xlabel="position (Mb)", ylabel="bits/base", title="bits/base per Mb (gap: the centromere N run)")
    for x in ax:
        x.grid(alpha=0.3)
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
