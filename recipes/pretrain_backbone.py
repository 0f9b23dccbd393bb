"""Pretrain the small embedded Evo-2-architecture backbone on real human DNA.

Usage:
    python recipes/pretrain_backbone.py                                   # chr20 from ../shared/data
    python recipes/pretrain_backbone.py fasta=/data/hg38/chr20.fa.gz chrom=chr20 time_budget_s=7200

Writes model.safetensors + config.json (loadable with focus_nemo.evo2.load_evo2), train_log.jsonl
and metrics.json (held-out bits per base and an order-k Markov baseline) to out_dir.
"""

import json

import hydra
from omegaconf import DictConfig, OmegaConf

from focus_nemo.pretraining import PretrainConfig, pretrain


@hydra.main(config_path="../conf", config_name="pretrain_backbone", version_base="1.3")
def main(cfg: DictConfig) -> None:
    raw = OmegaConf.to_container(cfg, resolve=True)
    merged = OmegaConf.merge(OmegaConf.structured(PretrainConfig), raw)
    print(json.dumps(pretrain(OmegaConf.to_object(merged)), indent=2))


if __name__ == "__main__":
    main()
