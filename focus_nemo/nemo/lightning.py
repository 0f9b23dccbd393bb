"""NeMo 2 / Lightning integration: the FOCUS Hyena model subclass, its data and its training loop.

* `FocusHyenaConfig` (a NeMo `HyenaConfig`) builds Megatron's Hyena model in `configure_model`, loads
  the frozen Evo-2 base from a checkpoint (NeMo 2 directory or any format `focus_nemo.evo2.load_evo2`
  reads), and inserts the FOCUS layers: it returns a `NemoFocusModel`, whose attention layers gain
  tensor-parallel Focus q/k/v (ColumnParallelLinear) and o (RowParallelLinear) initialised from the
  base shards and whose Hyena layers are bypassed by Focus tokens. Only Focus parameters train.
* `FocusHyenaModel` (a NeMo `HyenaModel`, i.e. a Lightning module) runs the FOCUS objective of
  `focus_nemo.focus.loss.focus_loss` through Megatron's forward/backward schedule.
* `train_nemo` trains it with `nemo.lightning.Trainer` + `MegatronStrategy` (TP/PP/DP from the trainer
  config) and Megatron's optimizer. Checkpoints hold the adapter only (`<run_dir>/checkpoint/`: the
  adapter in the single-device format plus the optimizer state of each tensor-parallel shard), so a 7B
  run writes megabytes, not the base; the final adapter (`<run_dir>/adapter/`) loads into `FocusModel`
  and back. With data parallelism each file is written by one process only (see save_checkpoint).

The data stream, the compression ratio of each step and the learning rate are functions of (seed,
global step), so a resumed run continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from nemo.collections.llm.gpt.model.hyena import HyenaConfig, HyenaModel
from nemo.lightning.megatron_parallel import MegatronLossReduction

from focus_nemo.evo2.config import Evo2Config
from focus_nemo.focus.config import FocusConfig

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- model
def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def focus_data_step(dataloader_iter) -> dict[str, torch.Tensor]:
    """Next micro-batch ({"raw": [B, L+1] byte ids, "k": [B]}) on this rank's device."""
    batch = next(dataloader_iter)
    if isinstance(batch, tuple) and len(batch) == 3:  # (batch, batch_idx, dataloader_idx)
        batch = batch[0]
    return {key: value.to(_device(), non_blocking=True) for key, value in batch.items()}


def focus_forward_step(model, batch) -> torch.Tensor:
    """[loss, ce, kl] of one micro-batch (every micro-batch of a step has the same k)."""
    return model(raw=batch["raw"], k=int(batch["k"][0]))


def read_base_weights(path: str, config: Evo2Config | None = None) -> tuple[dict[str, torch.Tensor], Evo2Config]:
    """Evo2Model-layout state dict and config of a base checkpoint (NeMo 2 dir or any load_evo2 format)."""
    from focus_nemo.evo2.checkpoint import read_checkpoint

    state, cfg, _ = read_checkpoint(path, config=config)
    return state, cfg


@dataclass
class FocusHyenaConfig(HyenaConfig):
    """NeMo `HyenaConfig` plus the FOCUS adapter and where the frozen base weights come from.

    Attributes:
        focus: `FocusConfig` fields (k, window, scope, train_ratios, loss weights).
        evo2: `Evo2Config` fields of the base (used for the weight layout and the adapter's identity).
        base_checkpoint: base weights loaded in `configure_model` (None keeps Megatron's random init).
        focus_adapter: an adapter directory to start from (None = Focus projections copied from the base).
    """

    focus: dict = field(default_factory=dict)
    evo2: dict = field(default_factory=dict)
    base_checkpoint: str | None = None
    focus_adapter: str | None = None
    forward_step_fn: object = focus_forward_step
    data_step_fn: object = focus_data_step

    @classmethod
    def from_evo2(cls, evo2: Evo2Config, focus: FocusConfig, *, base_checkpoint: str | None = None,
                  tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1, **overrides) -> FocusHyenaConfig:
        from focus_nemo.nemo.build import hyena_config_from_evo2

        return hyena_config_from_evo2(evo2, tensor_parallel_size=tensor_parallel_size,
                                      pipeline_model_parallel_size=pipeline_parallel_size, config_class=cls,
                                      focus=focus.to_dict(), evo2=evo2.to_dict(), base_checkpoint=base_checkpoint,
                                      **overrides)

    @property
    def evo2_config(self) -> Evo2Config:
        return Evo2Config.from_dict(self.evo2)

    @property
    def focus_config(self) -> FocusConfig:
        return FocusConfig.from_dict(self.focus)

    def configure_model(self, tokenizer=None, vp_stage=None):
        """Megatron Hyena model with the frozen base loaded and FOCUS layers inserted (a NemoFocusModel)."""
        from focus_nemo.nemo import build
        from focus_nemo.nemo.focus_model import NemoFocusModel
        from focus_nemo.nemo.spec import hyena_stack_spec

        if vp_stage is not None:
            raise ValueError("FocusHyenaConfig: virtual pipeline parallelism is not supported")
        evo2 = self.evo2_config
        # The local spec on every device, also where Transformer Engine is installed (the NGC / BioNeMo
        # images): the Focus projections are plain Megatron linears over the same norms, and a base
        # checkpoint written by NeMo's TE spec (fused norm names) is read by name
        # (focus_nemo.evo2.nemo2 / build.local_spec_names). `use_te` is not consulted.
        spec = hyena_stack_spec()
        self.bias_activation_fusion = False if self.remove_activation_post_first_layer else self.bias_activation_fusion
        mcore = build.megatron_hyena_model(self, spec, evo2.vocab_size)
        if torch.cuda.is_available():
            mcore = mcore.cuda()
        if self.base_checkpoint:
            state, found = read_base_weights(self.base_checkpoint, evo2)
            if found.shape_hash() != evo2.shape_hash():
                raise ValueError(f"FocusHyenaConfig.base_checkpoint: {self.base_checkpoint} holds a "
                                 f"{found.name} base (shape {found.shape_hash()}), the model config describes "
                                 f"{evo2.name} (shape {evo2.shape_hash()})")
            build.load_evo2_weights(mcore, state, evo2)
            del state
        mcore = mcore.to(self.params_dtype)
        fm = NemoFocusModel(mcore, self.focus_config, vocab_size=evo2.vocab_size)
        if self.focus_adapter:
            fm.load_adapter(self.focus_adapter, evo2)
        return FocusMegatronModule(mcore.config, fm)


class FocusMegatronModule(torch.nn.Module):
    """What Megatron's wrappers (DDP, mixed precision) see: ``config`` is the TransformerConfig they
    read, and the NemoFocusModel (whose ``config`` is its FocusConfig) is ``focus_model``."""

    def __init__(self, config, focus_model) -> None:
        from megatron.core.enums import ModelType

        super().__init__()
        self.config = config
        self.model_type = ModelType.encoder_or_decoder
        self.focus_model = focus_model

    def forward(self, *args, **kwargs):
        return self.focus_model(*args, **kwargs)

    def set_input_tensor(self, input_tensor) -> None:  # pipeline parallelism is not supported
        if input_tensor is not None and any(t is not None for t in input_tensor):
            raise ValueError("FocusMegatronModule: pipeline parallelism is not supported")


class FocusLossReduction(MegatronLossReduction):
    """Mean of the micro-batches' FOCUS losses; the loss terms are kept for logging."""

    def forward(self, batch, forward_out: torch.Tensor):
        loss = forward_out[0]
        return loss, {"avg": loss.detach().view(1), "terms": forward_out.detach().view(1, -1)}

    def reduce(self, losses_reduced_per_micro_batch) -> torch.Tensor:
        if not losses_reduced_per_micro_batch:
            return torch.tensor(0.0, device=_device())
        return torch.cat([x["avg"] for x in losses_reduced_per_micro_batch]).mean()


class FocusHyenaModel(HyenaModel):
    """NeMo's Hyena Lightning module whose Megatron model is the FOCUS model (see FocusHyenaConfig)."""

    def __init__(self, config: FocusHyenaConfig, **kwargs) -> None:
        if not isinstance(config, FocusHyenaConfig):
            raise TypeError(f"FocusHyenaModel: config must be a FocusHyenaConfig, got {type(config).__name__}")
        super().__init__(config, **kwargs)
        self._focus_loss_reduction = FocusLossReduction()
        self.last_terms: torch.Tensor | None = None

    def forward(self, raw: torch.Tensor | None = None, k: int | None = None, tokens: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        """Training: raw byte ids [B, L+1] -> [loss, ce, kl]; inference: tokens [B, L] -> logits."""
        if raw is not None:
            out = self.module(raw, k=k, loss=True)
            self.last_terms = out.detach()
            return out
        return self.module(tokens, k=k, **kwargs)

    @property
    def training_loss_reduction(self) -> FocusLossReduction:
        return self._focus_loss_reduction

    @property
    def validation_loss_reduction(self) -> FocusLossReduction:
        return self._focus_loss_reduction

    def focus_model(self):
        """The NemoFocusModel inside the Megatron wrappers (DDP, mixed precision)."""
        m = self.module
        while not isinstance(m, FocusMegatronModule):
            m = m.module
        return m.focus_model


# --------------------------------------------------------------------------- data
class FocusWindowDataset(torch.utils.data.Dataset):
    """Global sample s -> {"raw": window s of the seeded sampler, "k": the ratio of s's step}.

    Megatron's data sampler hands each data-parallel rank its share of every global batch; sample
    indices start at `start_step * global_batch_size`, so a resumed run reads exactly the samples an
    uninterrupted run would.
    """

    def __init__(self, sampler, ratio_for_step, global_batch_size: int, start_step: int, max_steps: int) -> None:
        self.sampler, self.ratio_for_step, self.gbs = sampler, ratio_for_step, global_batch_size
        self.start, self.steps = start_step, max_steps - start_step

    def __len__(self) -> int:
        return self.steps * self.gbs

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.start * self.gbs + i
        window = self.sampler.sample(s)
        return {"raw": torch.from_numpy(window.seq.astype(np.int64)),
                "k": torch.tensor(self.ratio_for_step(s // self.gbs))}


class FocusDataModule(pl.LightningDataModule):
    def __init__(self, dataset: FocusWindowDataset, micro_batch_size: int, global_batch_size: int,
                 seq_length: int) -> None:
        from nemo.lightning.pytorch.plugins import MegatronDataSampler

        super().__init__()
        self.dataset = dataset
        self.micro_batch_size = micro_batch_size
        self.data_sampler = MegatronDataSampler(seq_len=seq_length, micro_batch_size=micro_batch_size,
                                                global_batch_size=global_batch_size, dataloader_type="single",
                                                # its progress-bar logging pins memory (CUDA only)
                                                output_log=torch.cuda.is_available())

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.dataset, batch_size=self.micro_batch_size, num_workers=0)


# --------------------------------------------------------------------------- checkpoints
# Layout (nemo backend): <run_dir>/checkpoint/
#   step-00000050/  adapter.safetensors + adapter_config.json (full tensors, the single-device format),
#                   optimizer_tp{r}.pt per tensor-parallel rank (Megatron optimizer state of that rank's
#                   shards; the data-parallel replicas hold the same state, so one file serves them all)
#   latest.json     the commit record: step, directory, SHA-256 of every optimizer file, world size,
#                   tensor-parallel size and the run settings; written last, atomically.
# The same commit protocol as the single backend (focus_nemo.train). Every file is written by exactly
# one process: the ranks of data-parallel replica 0 (the adapter by its TP rank 0 = global rank 0,
# each optimizer file by its TP rank), the record by global rank 0.
NEMO_CHECKPOINT_FORMAT = "focus-nemo-nemo-checkpoint/2"


def _parallel_settings(cfg) -> dict:
    t = cfg.trainer
    return {"world_size": t.devices * t.num_nodes, "tensor_model_parallel_size": t.tensor_model_parallel_size,
            "precision": t.precision}


def _writes_replica_files() -> bool:
    """Whether this rank belongs to data-parallel replica 0, whose ranks write what every replica holds
    (the adapter, the optimizer state of each tensor-parallel shard)."""
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return torch.distributed.get_rank() == 0 if torch.distributed.is_initialized() else True
    return parallel_state.get_data_parallel_rank() == 0


def save_final_adapter(fm, path: Path, evo2: Evo2Config, extra: dict) -> None:
    """Collective: the final adapter, written by global rank 0 alone (the TP ranks of replica 0 gather
    their shards to it); every rank returns once it is on disk."""
    if _writes_replica_files():
        fm.save_adapter(path, evo2, extra=extra)  # a TP collective; TP rank 0 writes
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def save_checkpoint(fm, optimizer, step: int, run: Path, cfg, evo2: Evo2Config) -> None:
    """Collective (every rank calls it): write step directory, then commit it in latest.json."""
    from megatron.core import parallel_state

    from focus_nemo.durable import durable_write
    from focus_nemo.train import CHECKPOINT_DIR, _commit_checkpoint, _new_step_directory, _resume_settings

    dist = torch.distributed
    rank = dist.get_rank()
    ck = run / CHECKPOINT_DIR
    name = [_new_step_directory(ck, step) if rank == 0 else None]
    dist.broadcast_object_list(name, src=0)
    target = ck / name[0]
    writer = _writes_replica_files()
    digest = None
    if writer:
        fm.save_adapter(target, evo2, extra={"step": step})  # a TP collective; TP rank 0 writes
        state = {"step": step, "optimizer": optimizer.state_dict()}
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        digest = (tp_rank, durable_write(target / f"optimizer_tp{tp_rank}.pt", lambda f: torch.save(state, f)))
    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    if rank == 0:
        by_tp = dict(d for d in digests if d is not None)
        _commit_checkpoint(ck, {"format": NEMO_CHECKPOINT_FORMAT, "step": step, "directory": name[0],
                                "optimizer_sha256": [by_tp[r] for r in range(len(by_tp))],
                                "parallel": _parallel_settings(cfg), "settings": _resume_settings(cfg)})
    dist.barrier()


def read_checkpoint_record(run: Path, cfg) -> dict | None:
    """The commit record of ``<run>/checkpoint`` checked against `cfg`, or None when there is none.

    Raises:
        ResumeError: unreadable record, another checkpoint layout, or other settings (named).
    """
    from focus_nemo.train import CHECKPOINT_DIR, CHECKPOINT_RECORD, ResumeError, _resume_settings

    ck = run / CHECKPOINT_DIR
    path = ck / CHECKPOINT_RECORD
    restart = f"to start over, delete {ck} or set resume=false"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        fmt = record.get("format")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as e:
        raise ResumeError(f"{path}: unreadable checkpoint record ({e}); {restart}") from None
    if fmt != NEMO_CHECKPOINT_FORMAT:
        raise ResumeError(f"{path}: format {fmt!r}, expected {NEMO_CHECKPOINT_FORMAT!r} (written by another "
                          f"backend?); {restart}")
    changed = [f"{key}: {record['settings'].get(key, '(absent)')!r} in the checkpoint, {value!r} now"
               for key, value in _resume_settings(cfg).items() if record["settings"].get(key, "(absent)") != value]
    changed += [f"trainer.{key}: {record['parallel'].get(key)!r} in the checkpoint, {value!r} now"
                for key, value in _parallel_settings(cfg).items() if record["parallel"].get(key) != value]
    if changed:
        raise ResumeError(f"{path}: the checkpoint was written with other settings ({'; '.join(changed)}); "
                          f"resume with the same settings, or {restart}")
    return record


def load_checkpoint(fm, optimizer, run: Path, record: dict, evo2: Evo2Config) -> int:
    """Restore this rank's adapter shards and optimizer state from the committed step directory."""
    from megatron.core import parallel_state

    from focus_nemo.durable import sha256_file
    from focus_nemo.train import CHECKPOINT_DIR, ResumeError

    target = run / CHECKPOINT_DIR / record["directory"]
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    path = target / f"optimizer_tp{tp_rank}.pt"
    restart = f"to start over, delete {run / CHECKPOINT_DIR} or set resume=false"
    if not path.is_file() or sha256_file(path) != record["optimizer_sha256"][tp_rank]:
        raise ResumeError(f"{path}: missing, truncated or modified (checksum differs from latest.json); {restart}")
    try:
        fm.load_adapter(target, evo2)
    except (OSError, ValueError) as e:
        raise ResumeError(f"{e}; {restart}") from None
    state = torch.load(path, weights_only=True, map_location="cpu")
    optimizer.load_state_dict(state["optimizer"])
    log.info("resumed from %s at step %d", target, record["step"])
    return int(record["step"])


class AdapterCheckpoint(pl.Callback):
    """Sets each step's learning rate (a function of the global step), logs the loss terms to
    ``train_log.jsonl`` (rank 0), restores a committed checkpoint when training starts, and saves one
    every `save_every` steps and at the end."""

    def __init__(self, cfg, evo2: Evo2Config, record: dict | None) -> None:
        from focus_nemo.train import _lr

        self.cfg, self.evo2, self.record = cfg, evo2, record
        self.run = Path(cfg.run_dir)
        self.start = int(record["step"]) if record else 0
        self.lr_at = lambda step: _lr(cfg, step)
        self.history = None

    def step(self, trainer) -> int:
        return self.start + trainer.global_step

    def on_train_start(self, trainer, pl_module) -> None:
        from focus_nemo.train import _open_train_log

        if self.record:
            load_checkpoint(pl_module.focus_model(), trainer.optimizers[0], self.run, self.record, self.evo2)
        if torch.distributed.get_rank() == 0:
            self.history = _open_train_log(self.run, self.start)

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
        if (self.cfg.save_every and step % self.cfg.save_every == 0) or step == self.cfg.trainer.max_steps:
            save_checkpoint(pl_module.focus_model(), trainer.optimizers[0], step, self.run, self.cfg, self.evo2)


# --------------------------------------------------------------------------- training
def train_nemo(cfg) -> dict:
    """Train the FOCUS adapter with NeMo/Megatron (cfg: `focus_nemo.train.TrainConfig`, backend nemo).

    Launch one process per device (torchrun, srun or Lightning's launcher); TP x PP x DP =
    devices x num_nodes. Returns the metrics written to ``<run_dir>/metrics.json`` (rank 0).
    """
    return run_nemo_training(cfg)[0]


def run_nemo_training(cfg) -> tuple[dict, FocusHyenaModel]:
    """`train_nemo`, also returning the trained Lightning module (for inspection in the same process)."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from megatron.core.optimizer import OptimizerConfig
    from nemo import lightning as nl
    from nemo.collections.common.tokenizers.bytelevel_tokenizers import ByteLevelTokenizer

    from focus_nemo.data import WindowSampler, open_genome
    from focus_nemo.nemo import cpu_shims
    from focus_nemo.train import ratio_for_step, resolve_fasta

    t = cfg.trainer
    if t.pipeline_model_parallel_size != 1:
        raise ValueError("TrainerSection.pipeline_model_parallel_size: the FOCUS model runs the whole layer "
                         "stack on each rank (two streams per layer); use tensor and data parallelism")
    gpu = t.accelerator == "gpu"
    if not gpu:
        cpu_shims.apply()
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:
        from dataclasses import asdict

        (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    evo2, base_ckpt = _base_source(cfg.model)
    dtype = {"32": torch.float32, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[t.precision]
    mcfg = FocusHyenaConfig.from_evo2(
        evo2, cfg.focus, base_checkpoint=base_ckpt, tensor_parallel_size=t.tensor_model_parallel_size,
        seq_length=max(cfg.data.sample_len, 1024), params_dtype=dtype, bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16, use_te=False, use_cpu_initialization=not gpu)
    model = FocusHyenaModel(mcfg, tokenizer=ByteLevelTokenizer())

    record = _resume_record(run, cfg)
    start = int(record["step"]) if record else 0
    if start >= t.max_steps:
        log.info("%s: already trained to step %d", run, start)
    dp = t.data_parallel_size
    gbs = t.batch_size * dp
    genome = open_genome(resolve_fasta(cfg.data.train_fasta))
    sampler = WindowSampler(genome, cfg.data.train_regions or list(genome.names), cfg.data.sample_len + 1,
                            seed=cfg.seed, rc_prob=cfg.data.rc_prob, max_n_fraction=cfg.data.max_n_fraction)
    dataset = FocusWindowDataset(sampler, lambda step: ratio_for_step(cfg, step), gbs, start, t.max_steps)
    data = FocusDataModule(dataset, t.batch_size, gbs, cfg.data.sample_len + 1)

    strategy = nl.MegatronStrategy(
        tensor_model_parallel_size=t.tensor_model_parallel_size, pipeline_model_parallel_size=1,
        ckpt_async_save=False, ckpt_save_optimizer=False, save_ckpt_format="torch_dist",
        ddp=_ddp_config(),
        # NeMo's progress printer gathers Megatron timers on global rank 0 only, a collective the
        # other ranks never join (training hangs at the next one); Lightning's bar has none.
        replace_progress_bar=False)
    optim = nl.MegatronOptimizerModule(OptimizerConfig(
        optimizer="adam", lr=t.lr, weight_decay=t.weight_decay, adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8,
        clip_grad=t.grad_clip, use_distributed_optimizer=False, bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16, params_dtype=dtype))
    optim.connect(model)
    callbacks = [AdapterCheckpoint(cfg, evo2, record)]
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
    save_final_adapter(model.focus_model(), run / "adapter", evo2, extra={"steps": t.max_steps})
    metrics = {"start_step": start, "steps": t.max_steps, "backend": "nemo",
               "tensor_model_parallel_size": t.tensor_model_parallel_size, "data_parallel_size": dp}
    if torch.distributed.get_rank() == 0:
        (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics, model


def _base_source(section) -> tuple[Evo2Config, str | None]:
    """(Evo2Config, checkpoint path or None for random weights) of the model config section."""
    from focus_nemo.evo2.checkpoint import read_checkpoint
    from focus_nemo.evo2.nemo2 import read_nemo2_config
    from focus_nemo.inference import resolve_checkpoint

    name, path = resolve_checkpoint(section.checkpoint, section.preset)
    if path is None:
        return Evo2Config.preset(name), None
    if (path / "context").is_dir():  # NeMo 2: the config alone, without reading the weights
        return read_nemo2_config(path), str(path)
    return read_checkpoint(path, config=getattr(section, "config", "") or None)[1], str(path)


def _ddp_config():
    from megatron.core.distributed import DistributedDataParallelConfig

    return DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=False,
                                         overlap_param_gather=False, use_distributed_optimizer=False)


def _resume_record(run: Path, cfg) -> dict | None:
    """The commit record to resume from (None: start at step 0). With resume=false, global rank 0
    retires an existing checkpoint (its record is removed; the first save replaces the rest)."""
    from focus_nemo.train import CHECKPOINT_DIR, CHECKPOINT_RECORD

    if cfg.resume:
        return read_checkpoint_record(run, cfg)
    record = run / CHECKPOINT_DIR / CHECKPOINT_RECORD
    if int(os.environ.get("RANK", "0")) == 0 and record.is_file():
        record.unlink()
    return None


__all__ = ["AdapterCheckpoint", "FocusDataModule", "FocusHyenaConfig", "FocusHyenaModel", "FocusLossReduction",
           "FocusMegatronModule",
           "FocusWindowDataset", "focus_data_step", "focus_forward_step", "train_nemo"]
