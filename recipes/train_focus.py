"""Train a FOCUS adapter on a frozen Evo-2.

Usage:
    python recipes/train_focus.py                          # embedded model, bundled chr20, CPU defaults
    python recipes/train_focus.py +experiment=demo         # the laptop demo (what `make demo` trains)
    python recipes/train_focus.py focus.k=50 trainer.max_steps=100 run_dir=runs/k50
    python recipes/train_focus.py --cfg job                # print the composed config
    python recipes/train_focus.py +experiment=chr1 --dry-run   # per-GPU memory estimate; trains nothing

Config groups live in conf/ (model/, focus/, data/, trainer/, experiment/). The run directory
receives config.json, train_log.jsonl, tensorboard/, checkpoint/ (resumable), adapter/ (the file
to share) and metrics.json (held-out fidelity before and after training).
"""

import json
import sys

import hydra
from omegaconf import DictConfig

from focus_nemo.train import config_from_hydra, fidelity_table, memory_report, train

# --dry-run: compose and check the config, print the memory estimate per device, train nothing.
DRY_RUN = "--dry-run" in sys.argv
if DRY_RUN:
    sys.argv.remove("--dry-run")


@hydra.main(config_path="../conf", config_name="train_focus", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config = config_from_hydra(cfg)
    if DRY_RUN:
        print(memory_report(config))
        return
    metrics = train(config)
    print(json.dumps(metrics, indent=2))
    if "after" in metrics:  # the single-device trainer measures held-out fidelity
        fidelity_table(metrics, config)


if __name__ == "__main__":
    main()
