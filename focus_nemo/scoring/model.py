"""The scoring model: `load_scoring_model` (base + adapter, the ratio and window), the command-line
arguments that choose it (`add_model_arguments`) and the settings that identify a run
(`model_settings`, with weight fingerprints from `tensor_fingerprint`)."""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Iterable

import torch

from focus_nemo.focus.config import AUTO, check_k_window, horizon_for, parse_horizon
from focus_nemo.scoring.stream import DEFAULT_CHUNK, SCORE_DEFINITION, UNITS, ScoringError

logger = logging.getLogger(__name__)


def tensor_fingerprint(named: Iterable[tuple[str, torch.Tensor]], samples: int = 65536) -> str:
    """SHA-256 over every tensor's name, shape, dtype and `samples` evenly spaced values (all values of
    smaller tensors): tells checkpoints apart without reading gigabytes twice."""
    h = hashlib.sha256()
    for name, t in named:
        t = t.detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}\n".encode())
        flat = t.reshape(-1)
        n = flat.numel()
        if n > samples:
            idx = torch.arange(samples, dtype=torch.int64, device=flat.device) * (n - 1) // (samples - 1)
            flat = flat[idx]
        h.update(flat.to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()


def model_settings(fm, k: int, window: int) -> dict:
    """What decides the scores: weight fingerprints of base and adapter, k, W, scope, dtype.

    A model may carry its base fingerprint as ``fm.base_fingerprint`` (a tensor-parallel model, whose
    base parameters are shards, carries that of the full checkpoint: see `focus_nemo.nemo.scoring`);
    otherwise the base's state dict is fingerprinted. Adapter tensors come from ``fm.focus_state_dict()``
    when the model has it (full tensors gathered over tensor-parallel ranks: collective, call it on
    every rank), else from ``fm.focus_parameters()``.
    """
    check_k_window(k, window)
    p = next(fm.parameters())
    base_fp = getattr(fm, "base_fingerprint", None)
    if base_fp is None:
        base_fp = tensor_fingerprint(sorted(fm.base.state_dict().items()))
    adapter = fm.focus_state_dict() if hasattr(fm, "focus_state_dict") else fm.focus_parameters()
    return {
        "score": SCORE_DEFINITION,
        "units": UNITS,
        "model_fingerprint": base_fp,
        "adapter_fingerprint": tensor_fingerprint(sorted(adapter.items())),
        "k": k,
        "window": window,
        "scope": fm.config.scope,
        # run-time memory settings, recorded when they differ from the paper's scheme (older runs lack them)
        **{name: getattr(fm.config, name) for name, off in (("horizon", None), ("local", 0), ("level2", None))
           if getattr(fm.config, name) != off},
        **({"level2_pool": fm.config.level2_pool} if fm.config.level2 is not None else {}),
        "dtype": str(p.dtype).removeprefix("torch."),
    }


def add_model_arguments(parser) -> None:
    """The command-line options of the scoring recipes that choose the model and how it streams."""
    parser.add_argument("--checkpoint", default="embedded", help="embedded, random:<preset> or a checkpoint path")
    parser.add_argument("--config", default="", help="config of the checkpoint: a preset name or Arc's YAML "
                        "(e.g. evo2-7b-262k.yml); default: the checkpoint's own or, for Arc files, the published "
                        "model of its shapes")
    parser.add_argument("--adapter", default="embedded", help="embedded, none (untrained) or an adapter directory")
    parser.add_argument("--k", type=int, help="bases per Focus token (default: the adapter's)")
    parser.add_argument("--window", type=int, help="window W in bases (default: the adapter's)")
    parser.add_argument("--horizon", type=_horizon_type(), default=ADAPTER_HORIZON,
                        help="bases of Focus memory each window sees: auto (the base model's trained context), "
                        "none (unbounded, the paper's scheme) or a multiple of the window; default: the "
                        "adapter's horizon when it records one, else auto")
    from focus_nemo import cli

    parser.add_argument("--chunk-size", type=cli.at_least(1), default=DEFAULT_CHUNK, help="bases per model call")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--threads", type=cli.at_least(1), help="CPU threads for torch (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


ADAPTER_HORIZON = "adapter"  # --horizon's default: the adapter's horizon, else "auto"


def _horizon_type():
    from focus_nemo import cli

    def horizon(text: str):
        return ADAPTER_HORIZON if text == ADAPTER_HORIZON else parse_horizon(text)

    return cli.checked(horizon)


def load_scoring_model(checkpoint: str = "embedded", adapter: str | None = "embedded", k: int | None = None,
                       window: int | None = None, dtype: str = "float32", device: str = "cpu",
                       config: str | None = None, horizon: int | str | None = ADAPTER_HORIZON):
    """A FocusModel for scoring and the (k, W) to stream with.

    With an adapter, k and W default to the adapter's; without one (`adapter=None`: Focus projections
    copied from the base) they default to `FocusConfig`'s. A k the adapter was not trained with is
    allowed (the ratio is a run-time choice) but logged. `horizon` (None: unbounded, ``"auto"``: the
    base's trained context, or bases) bounds the Focus memory (`set_scoring_horizon`).
    """
    from focus_nemo.loading import load_focus_model

    focus = untrained_focus_config(k, window) if adapter is None else None
    try:
        fm = load_focus_model(checkpoint, adapter=adapter, dtype=dtype, device=device, focus=focus, config=config)
    except pickle.UnpicklingError as e:  # a checkpoint file whose pickled content is refused (never run)
        raise ScoringError(f"--checkpoint {checkpoint}: cannot be loaded: {e}") from None
    k, window = scoring_ratio(fm, adapter, k, window)
    set_scoring_horizon(fm, horizon, fm.base.config, window)
    return fm, k, window


def set_scoring_horizon(fm, horizon, evo2_config, window: int) -> None:
    """Give `fm` the Focus horizon to stream with (`FocusConfig.horizon`, a run-time setting): None,
    ``"auto"`` (`default_horizon` of `evo2_config` at `window`), bases, or `ADAPTER_HORIZON` (the
    adapter's own horizon when it records one, else ``"auto"``). A second level needs a horizon: its
    absence is refused by name (`FocusConfig.level2_size`)."""
    import copy

    if horizon == ADAPTER_HORIZON:
        horizon = fm.config.horizon if fm.config.horizon is not None else AUTO
    config = copy.copy(fm.config)
    config.horizon = horizon_for(horizon, evo2_config, window)
    config.level2_size()
    fm.config = config


def untrained_focus_config(k: int | None, window: int | None):
    """The FocusConfig of an untrained adapter: `FocusConfig`'s defaults where k or W is not given."""
    from focus_nemo.focus import FocusConfig

    default = FocusConfig()
    return FocusConfig(k=default.k if k is None else k, window=default.window if window is None else window)


def scoring_ratio(fm, adapter: str | None, k: int | None, window: int | None) -> tuple[int, int]:
    """(k, W) to stream with: the given values, else the model's; warns when an adapter was not trained
    with them."""
    k = fm.config.k if k is None else k
    window = fm.config.window if window is None else window
    check_k_window(k, window)
    trained = set(fm.config.train_ratios) | {fm.config.k}
    if adapter is not None and (k not in trained or window != fm.config.window):
        logger.warning("adapter %s was trained with k in %s, W=%d; scoring with k=%d, W=%d",
                       adapter, sorted(trained), fm.config.window, k, window)
    return k, window
