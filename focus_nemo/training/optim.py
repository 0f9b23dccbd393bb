"""The adapter's optimizer parameter groups, the same on both backends.

Megatron's optimizer (the ``nemo`` backend) applies weight decay to every trainable parameter except
biases and 1-D parameters (`megatron.core.optimizer._get_param_groups`): the Focus embedding and the
Focus output-projection biases are not decayed, the Focus q/k/v/o matrices and the level-2 queries are.
`adamw_param_groups` gives the single backend's AdamW the same split, so one ``trainer.weight_decay``
means the same run on both.
"""

from __future__ import annotations

import torch


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether `param` gets weight decay: not a bias, not 1-D (Megatron's default rule)."""
    return not (name.endswith(".bias") or name == "bias" or param.dim() == 1)


def adamw_param_groups(named_params, weight_decay: float) -> list[dict]:
    """AdamW parameter groups of the trainable `named_params` ((name, param) pairs) under `weight_decay`.

    Without weight decay, one group (the layout of checkpoints written before the split); with it, the
    decayed parameters and then the others (``weight_decay`` 0), each in the order given.
    """
    params = [(n, p) for n, p in named_params if p.requires_grad]
    if not weight_decay:
        return [{"params": [p for _, p in params], "weight_decay": 0.0}]
    return [{"params": [p for n, p in params if decays(n, p)], "weight_decay": weight_decay},
            {"params": [p for n, p in params if not decays(n, p)], "weight_decay": 0.0}]
