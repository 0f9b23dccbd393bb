"""Fidelity of a FOCUS adapter to its base model with full context, on held-out and other genomes.

Usage:
    python recipes/evaluate_focus.py                      # embedded model + adapter, bundled chr20 held-out
    python recipes/evaluate_focus.py ks=[50,100] lengths=[4096,16384] num_sequences=8
    python recipes/evaluate_focus.py sources=[bundled:phage_lambda,/data/ecoli_k12_mg1655.fa.gz]
    python recipes/evaluate_focus.py model.checkpoint=evo2_7b.pt adapter=runs/focus/adapter \
        sources=[/data/hg38/chr21.fa.gz,/data/hg38/chr22.fa.gz] lengths=[65536] device=cuda
    python recipes/evaluate_focus.py recall.enabled=true  # and the repeat-copy recall probe
    python recipes/evaluate_focus.py recall.only=true recall.distances=[64,1024,4096] recall.n_trials=32
    python recipes/evaluate_focus.py --cfg job            # print the composed config

Compares FOCUS at every k in `ks` with fixed-window truncation, a sliding window of the same
attention budget and the base model with full context (definitions in focus_nemo/evaluate.py). The
run directory receives sequences.csv, summary.csv, summary.md, headline.md, profile.csv, run_info.json and
the plots shift_vs_position_in_window.png, shift_vs_length.png and shift_vs_k.png. With recall.enabled (or
recall.only, recall alone) it also receives recall.csv, recall_summary.csv, recall.md, recall_info.json and
recall.png: the copy advantage of every method over the same trials and the fraction of full context's retained.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from focus_nemo.evaluate import config_from_hydra, evaluate


@hydra.main(config_path="../conf", config_name="evaluate_focus", version_base="1.3")
def main(cfg: DictConfig) -> None:
    result = evaluate(config_from_hydra(cfg))
    run = Path(result["run_dir"])
    if result["summary"]:
        print((run / "summary.md").read_text())
        print((run / "headline.md").read_text())
    if result["recall"]:
        print((run / "recall.md").read_text())
    print(f"outputs in {run} ({result['seconds']} s): "
          + ("summary.md has every k and metric" if result["summary"] else "recall.md has every method"))


if __name__ == "__main__":
    main()
