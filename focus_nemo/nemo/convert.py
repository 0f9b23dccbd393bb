"""Write Evo2Model weights as a NeMo 2 checkpoint directory, with NeMo's own checkpoint machinery.

The directory is the one NeMo's checkpoint importers produce: ``weights/`` (a Megatron
``torch_dist`` distributed checkpoint of the Lightning `HyenaModel`) and ``context/`` (the
serialised model config and tokenizer, ``io.json`` and ``model.yaml``), plus `NUMERICS_RECORD`
recording the RMSNorm form (NeMo's) and that of the source model. NeMo's tools load it like
any converted Evo-2 checkpoint, and `focus_nemo.evo2.nemo2.read_nemo2` reads it without NeMo.

The steps are those of NeMo's ``ModelConnector.nemo_setup`` / ``nemo_save``: a one-device CPU
`nemo.lightning.Trainer` with `MegatronStrategy` (no optimizer state, synchronous save), the model
built without random initialisation, the Evo-2 weights copied in with
`focus_nemo.nemo.build.load_evo2_weights`, then ``trainer.save_checkpoint`` and the context dump.
On a machine without CUDA the shims of `focus_nemo.nemo.cpu_shims` are applied; with CUDA they are
not needed and NeMo's importers' CPU trainer is used unchanged.

Usage (in a process of its own: it sets up torch.distributed and Megatron's parallel state, and
Megatron's checkpoint writer starts helper processes that re-import the main module, so a script
calling it needs an ``if __name__ == "__main__":`` guard)::

    from focus_nemo.evo2.checkpoint import read_checkpoint
    from focus_nemo.nemo.convert import save_nemo2

    state, cfg, _ = read_checkpoint("evo2_7b.pt", config=Evo2Config.preset("7b"))
    save_nemo2(state, cfg, "evo2_7b_nemo2", dtype=torch.bfloat16)
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from focus_nemo.evo2.checkpoint import check_state_dict
from focus_nemo.evo2.config import Evo2Config

__all__ = ["NUMERICS_RECORD", "save_nemo2"]

# Written beside weights/ and context/: the RMSNorm form NeMo computes the checkpoint with ("nemo") and the form of
# the model the weights came from (DESIGN D10).
NUMERICS_RECORD = "focus_nemo_numerics.json"


def save_nemo2(
    evo2_state_dict: Mapping[str, torch.Tensor],
    cfg: Evo2Config,
    out_dir: str | os.PathLike,
    dtype: torch.dtype | None = None,
    *,
    seq_length: int | None = None,
    prepare: Callable[[torch.nn.Module], object] | None = None,
) -> Path:
    """Write `evo2_state_dict` (Evo2Model names, shape `cfg`) as a NeMo 2 checkpoint in `out_dir`.

    Runs in a single process at tensor-parallel size 1. torch.distributed must not be initialised
    yet; the process group and Megatron's parallel state that NeMo's trainer creates are destroyed
    before returning.

    Args:
        evo2_state_dict: the weights, e.g. from `focus_nemo.evo2.checkpoint.read_checkpoint`.
        cfg: their config; NeMo's Hyena model must be able to represent it
            (`focus_nemo.nemo.build.check_nemo_compatible`).
        out_dir: the checkpoint directory to create; it must not exist or be empty.
        dtype: the dtype the model is cast to before saving (all of it, filter parameters
            included, as NeMo's own importers do), recorded as its ``params_dtype`` (and ``bf16``
            / ``fp16`` flag) in the context. None: the dtype of the embedding.
        seq_length: NeMo's ``seq_length`` recorded in the context (read back as
            ``Evo2Config.max_seqlen``); defaults to ``cfg.max_seqlen``.
        prepare: called with the Megatron model (eval mode) after the weights are copied in and
            before the checkpoint is written; whatever it leaves in the model is saved (e.g. for
            tests: other weights in NeMo's own parametrisation, or a forward pass).

    Returns:
        `out_dir` as a Path.

    Raises:
        FileExistsError: `out_dir` exists and is not empty.
        RuntimeError: torch.distributed is already initialised in this process.
        KeyError / ValueError: the state dict does not match `cfg`, or NeMo cannot represent `cfg`.
    """
    from focus_nemo.nemo import build, cpu_shims

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"save_nemo2: {out_dir} already exists and is not an empty directory")
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        raise RuntimeError("save_nemo2: torch.distributed is already initialised; call it in a fresh process")
    state = dict(evo2_state_dict)
    check_state_dict(state, cfg)
    build.check_nemo_compatible(cfg)
    if cfg.norm_form != "nemo":
        warnings.warn(f"save_nemo2: {out_dir}: the weights come from a model that normalises in the {cfg.norm_form!r} "
                      "form (x / (rms + eps)); NeMo computes x * rsqrt(mean(x^2) + eps), so NeMo's logits differ "
                      "slightly from the source model's (the checkpoint records norm_form 'nemo' and its source's)",
                      stacklevel=2)
    if dtype is None:
        dtype = state["embedding.weight"].dtype
    if not dtype.is_floating_point:
        raise ValueError(f"save_nemo2: dtype must be a floating point type, got {dtype}")

    cpu_shims.apply()
    from lightning.pytorch.trainer.states import TrainerFn
    from nemo import lightning as nl
    from nemo.collections.common.tokenizers.bytelevel_tokenizers import ByteLevelTokenizer
    from nemo.collections.llm.gpt.model.hyena import HyenaModel
    from nemo.lightning import _strategy_lib
    from nemo.lightning.ckpt_utils import ckpt_to_context_subdir
    from nemo.lightning.io.pl import TrainerContext

    hcfg = build.hyena_config_from_evo2(cfg, seq_length=seq_length or cfg.max_seqlen, params_dtype=dtype,
                                        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16)
    model = HyenaModel(hcfg, tokenizer=ByteLevelTokenizer(vocab_size=cfg.vocab_size))
    trainer = nl.Trainer(
        devices=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        strategy=nl.MegatronStrategy(ckpt_save_optimizer=False, always_save_context=True, ckpt_async_save=False),
    )
    try:
        trainer.state.fn = TrainerFn.FITTING  # NeMo's importers save from the fitting state
        trainer.strategy.connect(model)
        trainer.strategy.setup_environment()
        # Allocate without random initialisation: every tensor is overwritten below.
        trainer.strategy.lazy_init = True
        with trainer.init_module(), _strategy_lib.megatron_lazy_init_context(model.config):
            model.configure_model()
        model.to(dtype)
        build.load_evo2_weights(model.module, state, cfg)
        model.module.eval()
        trainer.strategy._setup_optimizers = False
        trainer.strategy._init_model_parallel = False
        trainer.strategy.setup(trainer)
        if prepare is not None:
            prepare(model.module)
        trainer.save_checkpoint(out_dir)
        TrainerContext.from_trainer(trainer).io_dump(ckpt_to_context_subdir(out_dir), yaml_attrs=["model"])
        record = {"format": "focus_nemo.evo2", "norm_form": "nemo", "source_norm_form": cfg.norm_form,
                  "source_config": cfg.name}
        (out_dir / NUMERICS_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    finally:
        nl.teardown(trainer)
    return out_dir
