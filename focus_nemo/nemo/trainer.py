"""NeMo 2 / Megatron training of the FOCUS adapter (the ``nemo`` backend): `train_nemo` trains
`focus_nemo.nemo.lightning.FocusHyenaModel` with `nemo.lightning.Trainer` + `MegatronStrategy` (TP/DP from
the trainer config) and Megatron's optimizer. Checkpoints hold the adapter only (`focus_nemo.nemo.checkpoint`),
so a 7B run writes megabytes, not the base; the final adapter (``<run_dir>/adapter/``) loads into
`FocusModel` and back.

Everything a run reads is shared with the single backend one floor below (`focus_nemo.training`): the
schema, the data stream, the per-step ratio and learning rate (functions of (seed, global step), so a
resumed run continues exactly where the checkpoint left off), the checkpoint protocol and the held-out
evaluation (``val_regions``, ``eval_len``, ``eval_samples``, ``eval_every``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import lightning.pytorch as pl
import torch

from focus_nemo.evo2.config import Evo2Config
from focus_nemo.nemo.checkpoint import load_checkpoint, resume_record, save_checkpoint, save_final_adapter
from focus_nemo.nemo.data import FocusDataModule, FocusWindowDataset
from focus_nemo.nemo.lightning import FocusHyenaConfig, FocusHyenaModel
from focus_nemo.training.checkpoint import open_train_log
from focus_nemo.training.data import train_sampler
from focus_nemo.training.heldout import HeldOut
from focus_nemo.training.schedule import learning_rate, ratio_for_step

log = logging.getLogger(__name__)


class AdapterCheckpoint(pl.Callback):
    """Sets each step's learning rate (a function of the global step), logs the loss terms to
    ``train_log.jsonl`` (rank 0), restores a committed checkpoint when training starts, and saves one
    every `save_every` steps and at the end. Held-out fidelity (`focus_nemo.training.heldout`) is measured
    when training starts at step 0 (``metrics["before"]``) and every `eval_every` steps (TensorBoard
    ``heldout/*``), on every rank (a tensor-parallel collective)."""

    def __init__(self, cfg, evo2: Evo2Config, record: dict | None) -> None:
        self.cfg, self.evo2, self.record = cfg, evo2, record
        self.run = Path(cfg.run_dir)
        self.start = int(record["step"]) if record else 0
        self.lr_at = lambda step: learning_rate(cfg, step)
        self.history = None
        self.held: HeldOut | None = None
        self.metrics: dict = {}

    def step(self, trainer) -> int:
        return self.start + trainer.global_step

    def on_train_start(self, trainer, pl_module) -> None:
        fm = pl_module.focus_model()
        if self.record:
            load_checkpoint(fm, trainer.optimizers[0], self.run, self.record, self.evo2)
        self.held = HeldOut(self.cfg, fm.focus_embedding.device)
        if self.start == 0:
            self.metrics["before"] = self.held.measure(fm)
        if torch.distributed.get_rank() == 0:
            self.history = open_train_log(self.run, self.start)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.history is not None:
            self.history.close()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        lr = self.lr_at(self.step(trainer))
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = self.step(trainer)  # global_step already counts this step
        terms = pl_module.last_terms
        if self.history is not None and terms is not None:
            rec = {"step": step - 1, "k": int(batch["k"][0]), "lr": self.lr_at(step - 1), "loss": float(terms[0]),
                   "ce": float(terms[1])}
            if pl_module.focus_model().config.distill_weight > 0:
                rec["kl"] = float(terms[2])
            self.history.write(json.dumps(rec) + "\n")
            if trainer.logger is not None:  # TensorBoard
                trainer.logger.log_metrics({f"train/{n}": v for n, v in rec.items() if n != "step"}, step=step - 1)
        if self.held is not None and self.held.due(step - 1):
            scores = self.held.measure(pl_module.focus_model())
            if trainer.logger is not None:
                trainer.logger.log_metrics({f"heldout/{n}": v for n, v in scores.items()}, step=step - 1)
        if (self.cfg.save_every and step % self.cfg.save_every == 0) or step == self.cfg.trainer.max_steps:
            save_checkpoint(pl_module.focus_model(), trainer.optimizers[0], step, self.run, self.cfg, self.evo2)


def train_nemo(cfg) -> dict:
    """Train the FOCUS adapter with NeMo/Megatron (cfg: `focus_nemo.training.config.TrainConfig`, backend nemo).

    Launch one process per device (torchrun, srun or Lightning's launcher); TP x PP x DP =
    devices x num_nodes. Returns the metrics written to ``<run_dir>/metrics.json`` (rank 0), with held-out
    fidelity before (a run that starts at step 0) and after training, as the single backend's.
    """
    return run_nemo_training(cfg)[0]


def run_nemo_training(cfg) -> tuple[dict, FocusHyenaModel]:
    """`train_nemo`, also returning the trained Lightning module (for inspection in the same process)."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from megatron.core.optimizer import OptimizerConfig
    from nemo import lightning as nl
    from nemo.collections.common.tokenizers.bytelevel_tokenizers import ByteLevelTokenizer

    t = cfg.trainer
    if t.pipeline_model_parallel_size != 1:
        raise ValueError("TrainerSection.pipeline_model_parallel_size: the FOCUS model runs the whole layer "
                         "stack on each rank (two streams per layer); use tensor and data parallelism")
    gpu = t.accelerator == "gpu"
    apply_shims(t)
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:
        from dataclasses import asdict

        (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    evo2, base_ckpt = base_source(cfg.model)
    dtype = {"32": torch.float32, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[t.precision]
    mcfg = FocusHyenaConfig.from_evo2(
        evo2, cfg.focus, base_checkpoint=base_ckpt, tensor_parallel_size=t.tensor_model_parallel_size,
        seq_length=max(cfg.data.sample_len, 1024), params_dtype=dtype, bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16, use_te=False, use_cpu_initialization=not gpu)
    model = FocusHyenaModel(mcfg, tokenizer=ByteLevelTokenizer())

    record = resume_record(run, cfg)
    start = int(record["step"]) if record else 0
    if start >= t.max_steps:
        log.info("%s: already trained to step %d", run, start)
    dp = t.data_parallel_size
    gbs = t.batch_size * dp
    dataset = FocusWindowDataset(train_sampler(cfg), lambda step: ratio_for_step(cfg, step), gbs, start, t.max_steps)
    data = FocusDataModule(dataset, t.batch_size, gbs, cfg.data.sample_len + 1)

    strategy = nl.MegatronStrategy(
        tensor_model_parallel_size=t.tensor_model_parallel_size, pipeline_model_parallel_size=1,
        ckpt_async_save=False, ckpt_save_optimizer=False, save_ckpt_format="torch_dist",
        ddp=ddp_config(),
        # NeMo's progress printer gathers Megatron timers on global rank 0 only, a collective the
        # other ranks never join (training hangs at the next one); Lightning's bar has none.
        replace_progress_bar=False)
    optim = nl.MegatronOptimizerModule(OptimizerConfig(
        optimizer="adam", lr=t.lr, weight_decay=t.weight_decay, adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8,
        clip_grad=t.grad_clip, use_distributed_optimizer=False, bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16, params_dtype=dtype))
    optim.connect(model)
    progress = AdapterCheckpoint(cfg, evo2, record)
    callbacks = [progress]
    plugins = [nl.MegatronMixedPrecision(precision=t.precision)] if t.precision != "32" else []
    if "SLURM_NTASKS" in os.environ:
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        # Requeueing is the batch script's job (recipes/slurm/); resuming reads <run_dir>/checkpoint.
        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer = nl.Trainer(
        accelerator="gpu" if gpu else "cpu", devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
        max_steps=t.max_steps - start, limit_val_batches=0, num_sanity_val_steps=0,
        logger=TensorBoardLogger(save_dir=str(run), name="tensorboard", version="", default_hp_metric=False),
        enable_checkpointing=False, callbacks=callbacks, plugins=plugins or None, log_every_n_steps=cfg.log_every,
        use_distributed_sampler=False, enable_progress_bar=True)
    if start < t.max_steps:
        trainer.fit(model, datamodule=data)
    fm = model.focus_model()
    save_final_adapter(fm, run / "adapter", evo2, extra={"steps": t.max_steps})
    metrics = {"start_step": start, "steps": t.max_steps, "backend": "nemo",
               "tensor_model_parallel_size": t.tensor_model_parallel_size, "data_parallel_size": dp,
               **progress.metrics}
    held = progress.held or HeldOut(cfg, fm.focus_embedding.device)
    metrics["after"] = held.measure(fm)
    if trainer.logger is not None:
        trainer.logger.log_metrics({f"heldout/{n}": v for n, v in metrics["after"].items()}, step=t.max_steps)
        trainer.logger.finalize("success")
    if torch.distributed.get_rank() == 0:
        (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics, model


def apply_shims(t) -> None:
    """The shims a run on `t.accelerator` needs (`focus_nemo.nemo.cpu_shims`), and on GPUs NeMo's medium
    filter compiled or eager as ``trainer.compile_medium_filter`` says (CPUs run it eagerly)."""
    from focus_nemo.nemo import cpu_shims

    if t.accelerator == "gpu":
        cpu_shims.apply_portable()  # no Transformer Engine or causal_conv1d needed on the GPU either
        cpu_shims.compile_medium_filter(t.compile_medium_filter)
    else:
        cpu_shims.apply()


def base_source(section) -> tuple[Evo2Config, str | None]:
    """(Evo2Config, checkpoint path or None for random weights) of the model config section."""
    from focus_nemo.evo2.checkpoint import read_checkpoint
    from focus_nemo.evo2.nemo2 import read_nemo2_config
    from focus_nemo.loading import resolve_checkpoint

    name, path = resolve_checkpoint(section.checkpoint, section.preset)
    if path is None:
        return Evo2Config.preset(name), None
    if (path / "context").is_dir():  # NeMo 2: the config alone, without reading the weights
        return read_nemo2_config(path), str(path)
    return read_checkpoint(path, config=getattr(section, "config", "") or None)[1], str(path)


def ddp_config():
    from megatron.core.distributed import DistributedDataParallelConfig

    return DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=False,
                                         overlap_param_gather=False, use_distributed_optimizer=False)
