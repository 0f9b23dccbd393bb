"""NeMo 2 / Lightning model: the FOCUS Hyena model subclass and what Megatron's schedule calls.

* `FocusHyenaConfig` (a NeMo `HyenaConfig`) builds Megatron's Hyena model in `configure_model`, loads
  the frozen Evo-2 base from a checkpoint (NeMo 2 directory or any format `focus_nemo.evo2.load_evo2`
  reads), and inserts the FOCUS layers: it returns a `NemoFocusModel`, whose attention layers gain
  tensor-parallel Focus q/k/v (ColumnParallelLinear) and o (RowParallelLinear) initialised from the
  base shards and whose Hyena layers are bypassed by Focus tokens. Only Focus parameters train.
* `FocusHyenaModel` (a NeMo `HyenaModel`, i.e. a Lightning module) runs the FOCUS objective of
  `focus_nemo.focus.loss.focus_loss` through Megatron's forward/backward schedule
  (`focus_data_step`, `focus_forward_step`, `FocusLossReduction`).

Its data is `focus_nemo.nemo.data`, its checkpoints `focus_nemo.nemo.checkpoint`, and `focus_nemo.nemo.trainer`
trains it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from nemo.collections.llm.gpt.model.hyena import HyenaConfig, HyenaModel
from nemo.lightning.megatron_parallel import MegatronLossReduction

from focus_nemo.evo2.config import Evo2Config
from focus_nemo.focus.config import FocusConfig


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
                                      focus=focus.resolve_horizon(evo2).to_dict(), evo2=evo2.to_dict(),
                                      base_checkpoint=base_checkpoint,
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


__all__ = ["FocusHyenaConfig", "FocusHyenaModel", "FocusLossReduction", "FocusMegatronModule", "focus_data_step",
           "focus_forward_step", "read_base_weights"]
