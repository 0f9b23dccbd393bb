"""NeMo 2 / Megatron Hyena checkpoints <-> Evo2Model weights, without importing NeMo or Megatron.

Megatron's Hyena model (NeMo's `HyenaModel`) stores the same Evo-2 network with other names and
parametrisations. Megatron name (prefix ``decoder.layers.{i}.``) -> Evo2Model name (``blocks.{i}.``):

* norms: ``norm.weight`` (Hyena) / ``input_layernorm.weight`` (attention) -> ``pre_norm.weight``;
  ``pre_mlp_layernorm.weight`` -> ``post_norm.weight``. A Transformer Engine model fuses them into
  the next linear: ``mixer.dense_projection.layer_norm_weight``,
  ``self_attention.linear_qkv.layer_norm_weight``, ``mlp.linear_fc1.layer_norm_weight``.
* MLP: ``mlp.linear_fc1.weight`` [2F, D] -> ``mlp.l1.weight`` (first half, the gate) and
  ``mlp.l2.weight``; ``mlp.linear_fc2.weight`` -> ``mlp.l3.weight``.
* Hyena mixer: ``mixer.dense_projection.weight`` -> ``mixer.projections.weight``;
  ``mixer.hyena_proj_conv.short_conv_weight`` -> ``mixer.featurizer`` [3D, 3];
  ``mixer.dense.{weight,bias}`` -> ``mixer.out_proj.{weight,bias}``.
* S filter: ``mixer.mixer.short_conv.short_conv_weight`` [G, 1, 7] -> ``mixer.filter.weight`` [G, 7];
  ``mixer.mixer.conv_bias`` -> ``mixer.filter.bias`` (only with short_conv_bias).
* D filter: ``mixer.mixer.filter.{h,decay}`` -> ``mixer.filter.h`` = (h * decay)[:, :128];
  ``mixer.mixer.conv_bias`` -> ``mixer.filter.D``.
* H filter: ``mixer.mixer.filter.{p,gamma,R}`` -> ``mixer.filter.log_poles`` = -exp(p) exp(gamma)
  and ``mixer.filter.residues`` = R; ``mixer.mixer.conv_bias`` -> ``mixer.filter.D``.
* attention: ``self_attention.linear_qkv.weight`` (rows per head, [H, (q, k, v), head_dim]) ->
  ``attn.wqkv.weight`` (rows [Q; K; V]); ``self_attention.linear_proj.{weight,bias}`` ->
  ``attn.out_proj.{weight,bias}``.
* ``embedding.word_embeddings.weight`` -> ``embedding.weight`` (tied with the output layer),
  ``decoder.final_norm.weight`` -> ``final_norm.weight``.

Keys may carry NeMo's leading ``module.``; ``_extra_state`` entries are ignored.

A NeMo 2 checkpoint is a directory with ``weights/`` (Megatron ``torch_dist``, i.e. a PyTorch
Distributed Checkpoint) and ``context/`` (the model config as ``model.yaml`` and ``io.json``).
`read_nemo2` reads both with PyTorch, PyYAML and the standard library.
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
import json
import pickle
import re
import warnings
from pathlib import Path

import torch

from focus_nemo.evo2.config import Evo2Config

# Keys that describe nothing the Evo-2 network needs.
_IGNORED = re.compile(r"(_extra_state$|rotary_pos_emb\.inv_freq$)")


def _strip_module(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key


def _drop_unit_axis(t: torch.Tensor | None) -> torch.Tensor | None:
    """[C, 1, K] -> [C, K] (depthwise conv weights); anything else unchanged."""
    return t[:, 0] if t is not None and t.dim() == 3 and t.shape[1] == 1 else t


def _expected_shapes(cfg: Evo2Config) -> dict[str, torch.Size]:
    from focus_nemo.evo2.model import Evo2Model

    with torch.device("meta"):
        model = Evo2Model(cfg, init=False)
    return {k: v.shape for k, v in model.state_dict().items()}


class _Source:
    """Megatron tensors by normalised name; records what was read and what could not be found."""

    def __init__(self, sd: dict) -> None:
        self.tensors = {}
        for key, value in sd.items():
            key = _strip_module(key)
            if _IGNORED.search(key) or not isinstance(value, torch.Tensor):
                continue
            self.tensors[key] = value
        self.used: set[str] = set()
        self.missing: list[str] = []

    def take(self, *names: str) -> torch.Tensor | None:
        """The first of `names` present (alternative spellings of one parameter)."""
        for name in names:
            if name in self.tensors:
                self.used.add(name)
                return self.tensors[name]
        self.missing.append(" or ".join(names))
        return None


def megatron_to_evo2(sd: dict, cfg: Evo2Config) -> dict[str, torch.Tensor]:
    """Map a Megatron/NeMo Hyena state dict (full, TP=1 layout) to Evo2Model keys.

    Args:
        sd: Megatron tensors, with or without the leading ``module.``, with Transformer Engine
            (fused ``layer_norm_weight``) or local-spec norm names; ``_extra_state`` entries are
            skipped.
        cfg: the Evo-2 shape the weights belong to.

    Returns:
        An Evo2Model state dict (filters computed in fp32, other tensors in their stored dtype).

    Raises:
        KeyError: naming every Megatron parameter the config needs but `sd` lacks.
        ValueError: on unexpected keys (e.g. a different layer pattern) or wrong shapes.
    """
    src = _Source(sd)
    out: dict[str, torch.Tensor | None] = {}
    D = cfg.hidden_size
    for i, kind in enumerate(cfg.pattern):
        m, e = f"decoder.layers.{i}.", f"blocks.{i}."
        if kind == "*":
            out[e + "pre_norm.weight"] = src.take(m + "input_layernorm.weight",
                                                  m + "self_attention.linear_qkv.layer_norm_weight")
            qkv = src.take(m + "self_attention.linear_qkv.weight")
            if qkv is not None and qkv.shape == (3 * D, D):  # (other shapes fail the shape check)
                # Megatron interleaves per head: rows [h, (q, k, v), head_dim]; Evo2Model wants [Q; K; V].
                qkv = qkv.reshape(cfg.num_heads, 3, cfg.head_dim, -1).transpose(0, 1).reshape(3 * D, -1)
            out[e + "attn.wqkv.weight"] = qkv
            out[e + "attn.out_proj.weight"] = src.take(m + "self_attention.linear_proj.weight")
            if cfg.attn_out_bias:
                out[e + "attn.out_proj.bias"] = src.take(m + "self_attention.linear_proj.bias")
        else:
            x, f = m + "mixer.", e + "mixer."
            out[e + "pre_norm.weight"] = src.take(m + "norm.weight", x + "dense_projection.layer_norm_weight")
            out[f + "projections.weight"] = src.take(x + "dense_projection.weight")
            # [3D, K] with NeMo's default fast_conv_proj, [3D, 1, K] without it
            out[f + "featurizer"] = _drop_unit_axis(src.take(x + "hyena_proj_conv.short_conv_weight"))
            out[f + "out_proj.weight"] = src.take(x + "dense.weight")
            out[f + "out_proj.bias"] = src.take(x + "dense.bias")
            if kind == "S":
                # [G, 1, K], or [G, K] with fast_conv_mixer
                out[f + "filter.weight"] = _drop_unit_axis(src.take(x + "mixer.short_conv.short_conv_weight"))
                if cfg.short_conv_bias:
                    out[f + "filter.bias"] = src.take(x + "mixer.conv_bias")
            elif kind == "D":
                h, decay = src.take(x + "mixer.filter.h"), src.take(x + "mixer.filter.decay")
                if h is not None and decay is not None:
                    # NeMo applies h * decay (a fixed buffer) at every call; Evo2Model stores the
                    # product, truncated to the filter length as NeMo's forward does.
                    L = cfg.hcm_filter_length
                    h = h[:, :L].float() * decay[:, :L].float()
                out[f + "filter.h"] = h
                out[f + "filter.D"] = src.take(x + "mixer.conv_bias")
            else:
                p, gamma = src.take(x + "mixer.filter.p"), src.take(x + "mixer.filter.gamma")
                out[f + "filter.log_poles"] = (
                    None if p is None or gamma is None else -torch.exp(p.float()) * torch.exp(gamma.float())
                )
                out[f + "filter.residues"] = src.take(x + "mixer.filter.R")
                out[f + "filter.D"] = src.take(x + "mixer.conv_bias")
        out[e + "post_norm.weight"] = src.take(m + "pre_mlp_layernorm.weight", m + "mlp.linear_fc1.layer_norm_weight")
        fc1 = src.take(m + "mlp.linear_fc1.weight")
        if fc1 is not None:
            out[e + "mlp.l1.weight"], out[e + "mlp.l2.weight"] = fc1.chunk(2, dim=0)
        else:
            out[e + "mlp.l1.weight"] = out[e + "mlp.l2.weight"] = None
        out[e + "mlp.l3.weight"] = src.take(m + "mlp.linear_fc2.weight")
    emb = src.take("embedding.word_embeddings.weight")
    # Megatron pads the vocabulary (to a multiple of make_vocab_size_divisible_by * TP); the padded
    # rows are never indexed by real tokens.
    out["embedding.weight"] = None if emb is None else emb[: cfg.vocab_size]
    out["final_norm.weight"] = src.take("decoder.final_norm.weight")

    if src.missing:
        raise KeyError(f"megatron_to_evo2: the state dict lacks {len(src.missing)} parameter(s) that a "
                       f"{cfg.pattern!r} model needs: {src.missing}")
    out_layer = src.tensors.get("output_layer.weight")
    if out_layer is not None:
        src.used.add("output_layer.weight")
        if emb is None or out_layer.shape != emb.shape or not torch.equal(out_layer, emb):
            raise ValueError("megatron_to_evo2: output_layer.weight differs from the embedding; Evo-2 ties them")
    unexpected = sorted(set(src.tensors) - src.used)
    if unexpected:
        raise ValueError(f"megatron_to_evo2: parameter(s) with no place in a {cfg.pattern!r} Evo-2 model "
                         f"(wrong config?): {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''}")
    _check_shapes(out, _expected_shapes(cfg), "megatron_to_evo2")
    return {k: v.contiguous() for k, v in out.items()}


def _check_shapes(sd: dict, expected: dict, where: str) -> None:
    wrong = [f"{k}: {tuple(sd[k].shape)} != {tuple(s)}" for k, s in expected.items() if k in sd and sd[k].shape != s]
    absent = [k for k in expected if k not in sd]
    if wrong or absent:
        raise ValueError(f"{where}: shapes do not match the Evo2Config: {wrong} missing {absent}")


def evo2_to_megatron(sd: dict, cfg: Evo2Config) -> dict[str, torch.Tensor]:
    """Map an Evo2Model state dict to Megatron Hyena names (local spec, TP=1 layout, no ``module.``).

    The inverse of `megatron_to_evo2` up to reparametrisation: the medium filter is written as
    ``filter.h`` = the effective filter with ``filter.decay`` = 1, and the long filter's poles as
    ``p`` = 0, ``gamma`` = log(-log_poles) (so that -exp(p) exp(gamma) = log_poles).
    """
    _check_shapes(sd, _expected_shapes(cfg), "evo2_to_megatron")
    out: dict[str, torch.Tensor] = {}
    D = cfg.hidden_size
    for i, kind in enumerate(cfg.pattern):
        m, e = f"decoder.layers.{i}.", f"blocks.{i}."
        if kind == "*":
            out[m + "input_layernorm.weight"] = sd[e + "pre_norm.weight"]
            qkv = sd[e + "attn.wqkv.weight"]
            out[m + "self_attention.linear_qkv.weight"] = (
                qkv.reshape(3, cfg.num_heads, cfg.head_dim, D).transpose(0, 1).reshape(3 * D, D)
            )
            out[m + "self_attention.linear_proj.weight"] = sd[e + "attn.out_proj.weight"]
            if cfg.attn_out_bias:
                out[m + "self_attention.linear_proj.bias"] = sd[e + "attn.out_proj.bias"]
        else:
            x, f = m + "mixer.", e + "mixer."
            out[m + "norm.weight"] = sd[e + "pre_norm.weight"]
            out[x + "dense_projection.weight"] = sd[f + "projections.weight"]
            out[x + "hyena_proj_conv.short_conv_weight"] = sd[f + "featurizer"]
            out[x + "dense.weight"] = sd[f + "out_proj.weight"]
            out[x + "dense.bias"] = sd[f + "out_proj.bias"]
            if kind == "S":
                out[x + "mixer.short_conv.short_conv_weight"] = sd[f + "filter.weight"].unsqueeze(1)
                if cfg.short_conv_bias:
                    out[x + "mixer.conv_bias"] = sd[f + "filter.bias"]
            elif kind == "D":
                h = sd[f + "filter.h"]
                out[x + "mixer.filter.h"] = h
                out[x + "mixer.filter.decay"] = torch.ones_like(h)
                out[x + "mixer.conv_bias"] = sd[f + "filter.D"]
            else:
                lp = sd[f + "filter.log_poles"].float().clamp(max=0.0)  # Evo2Model clamps the same way
                out[x + "mixer.filter.p"] = torch.zeros_like(lp)
                out[x + "mixer.filter.gamma"] = torch.log(-lp)
                out[x + "mixer.filter.R"] = sd[f + "filter.residues"]
                out[x + "mixer.conv_bias"] = sd[f + "filter.D"]
        out[m + "pre_mlp_layernorm.weight"] = sd[e + "post_norm.weight"]
        out[m + "mlp.linear_fc1.weight"] = torch.cat([sd[e + "mlp.l1.weight"], sd[e + "mlp.l2.weight"]], dim=0)
        out[m + "mlp.linear_fc2.weight"] = sd[e + "mlp.l3.weight"]
    out["embedding.word_embeddings.weight"] = sd["embedding.weight"]
    out["decoder.final_norm.weight"] = sd["final_norm.weight"]
    return out


# --------------------------------------------------------------------------- NeMo 2 checkpoints
class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles a Distributed Checkpoint's ``.metadata`` allowing only plain checkpoint records.

    The file is a pickle of PyTorch's `Metadata` (Megatron writes a subclass that only adds a dict).
    Only the checkpoint metadata dataclasses, torch dtypes/layouts/sizes and builtin containers
    can be created; anything else is refused, so a crafted file cannot run code. Megatron's
    subclasses are read as their PyTorch bases (no Megatron import needed).
    """

    _DCP_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.planner",
                    "torch.distributed.checkpoint.filesystem")
    _RENAMED = {
        ("megatron.core.dist_checkpointing.strategies.torch", "MCoreMetadata"):
            ("torch.distributed.checkpoint.metadata", "Metadata"),
        ("megatron.core.dist_checkpointing.strategies.torch", "MCoreSavePlan"):
            ("torch.distributed.checkpoint.planner", "SavePlan"),
    }
    _BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "slice", "int", "float", "str", "bytes", "bool",
                 "complex"}

    def find_class(self, module: str, name: str):
        module, name = self._RENAMED.get((module, name), (module, name))
        if module in self._DCP_MODULES:
            obj = getattr(importlib.import_module(module), name, None)
            if isinstance(obj, type):
                return obj
        elif module == "torch":
            obj = getattr(torch, name, None)
            if isinstance(obj, (torch.dtype, torch.layout, torch.memory_format)) or obj is torch.Size:
                return obj
        elif (module, name) == ("torch.serialization", "_get_layout"):
            return torch.serialization._get_layout
        elif (module, name) in {("collections", "OrderedDict"), ("copyreg", "_reconstructor")}:
            return getattr(importlib.import_module(module), name)
        elif module == "builtins" and name in self._BUILTINS:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"checkpoint metadata refers to {module}.{name}, which is not allowed")


def _read_dcp_metadata(weights_dir: Path):
    with open(weights_dir / ".metadata", "rb") as f:
        return _MetadataUnpickler(f).load()


def _weights_dir(path: Path) -> Path:
    for candidate in (path / "weights", path):
        if (candidate / ".metadata").is_file():
            return candidate
        if (candidate / "metadata.json").is_file():
            with open(candidate / "metadata.json") as f:
                backend = json.load(f).get("sharded_backend")
            if backend != "torch_dist":
                raise ValueError(f"read_nemo2: {candidate} uses Megatron's {backend!r} checkpoint backend; only "
                                 "'torch_dist' (NeMo 2's default) is supported")
    raise FileNotFoundError(f"read_nemo2: {path} is not a NeMo 2 checkpoint: no weights/.metadata (a Megatron "
                            "torch_dist checkpoint) found")


def read_megatron_weights(weights_dir: str | Path) -> dict[str, torch.Tensor]:
    """Read the model tensors of a Megatron ``torch_dist`` checkpoint directory, full (unsharded).

    Uses PyTorch Distributed Checkpoint in no-process-group mode: tensors are preallocated from the
    checkpoint metadata and filled by `torch.distributed.checkpoint.load` (tensor data is read with
    ``torch.load(weights_only=True)``). Non-tensor entries (``_extra_state`` blobs, optimizer
    state, RNG state) are not read.

    Returns:
        {Megatron key (with NeMo's ``module.`` prefix as stored): tensor}
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    weights_dir = Path(weights_dir)
    metadata = _read_dcp_metadata(weights_dir)
    reformulated = getattr(metadata, "mcore_data", None) or {}
    wanted = {}
    for key, meta in metadata.state_dict_metadata.items():
        if not isinstance(meta, TensorStorageMetadata):
            continue
        if not _strip_module(key).startswith(("embedding.", "decoder.", "output_layer.")):
            continue  # optimizer state and the like
        if (reformulated.get(key) or {}).get("nd_reformulated_orig_global_shape") is not None:
            raise NotImplementedError(f"read_nemo2: {key} is stored in Megatron's flattened N-D layout, "
                                      "which this reader does not support")
        wanted[key] = torch.empty(meta.size, dtype=meta.properties.dtype)
    if not wanted:
        raise ValueError(f"read_nemo2: no model tensors in {weights_dir}")

    class _Reader(dcp.FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            return metadata

    with warnings.catch_warnings():
        # "torch.distributed is disabled ... assuming the intent is to load in a single process": it is.
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        dcp.load(wanted, storage_reader=_Reader(weights_dir), no_dist=True)
    return wanted


# NeMo's Hyena config classes (nemo.collections.llm.gpt.model.hyena, NeMo 2.x) and the fields
# they set, for contexts that have only io.json (which records explicit arguments, not defaults).
_NV = dict(remove_activation_post_first_layer=False, add_attn_proj_bias=False, use_short_conv_bias=True)
_BASE = dict(num_layers=2, hidden_size=1024, num_attention_heads=8, seq_length=2048, rotary_base=10000,
             seq_len_interpolation_factor=None, layernorm_epsilon=1e-6, remove_activation_post_first_layer=True,
             add_attn_proj_bias=True, use_short_conv_bias=False)
_TEST = dict(_BASE, hybrid_override_pattern="SDH*", num_layers=4, seq_length=8192, hidden_size=4096,
             num_groups_hyena=4096, num_groups_hyena_medium=256, num_groups_hyena_short=256,
             ffn_hidden_size=11008, num_attention_heads=32)
_1B = dict(_BASE, hybrid_override_pattern="SDH*SDHSDH*SDHSDH*SDHSDH*", num_layers=25, seq_length=8192,
           hidden_size=1920, num_groups_hyena=1920, num_groups_hyena_medium=128, num_groups_hyena_short=128,
           ffn_hidden_size=5120, num_attention_heads=15)
_7B = dict(_BASE, hybrid_override_pattern="SDH*SDHSDH*SDHSDH*SDHSDH*SDHSDH*", num_layers=32, seq_length=8192,
           hidden_size=4096, num_groups_hyena=4096, num_groups_hyena_medium=256, num_groups_hyena_short=256,
           ffn_hidden_size=11008, num_attention_heads=32)
_40B = dict(_BASE, hybrid_override_pattern="SDH*SDHSDH*SDHSDH*SDHSDH*SDHSDH*SDH*SDHSDH*SDHSDH*", num_layers=50,
            seq_length=8192, hidden_size=8192, num_groups_hyena=8192, num_groups_hyena_medium=512,
            num_groups_hyena_short=512, ffn_hidden_size=21888, num_attention_heads=64, rotary_base=1_000_000)
NEMO_HYENA_CONFIG_DEFAULTS: dict[str, dict] = {
    "HyenaConfig": _BASE,
    "HyenaTestConfig": _TEST,
    "HyenaNVTestConfig": dict(_TEST, **_NV),
    "Hyena1bConfig": _1B,
    "HyenaNV1bConfig": dict(_1B, **_NV),
    "Hyena7bConfig": _7B,
    "HyenaNV7bConfig": dict(_7B, **_NV, ffn_hidden_size=11264, rotary_base=1_000_000),
    "Hyena7bARCLongContextConfig": dict(_7B, seq_length=1_048_576, ffn_hidden_size=11264,
                                        seq_len_interpolation_factor=128),
    "Hyena40bConfig": _40B,
    "HyenaNV40bConfig": dict(_40B, **_NV, ffn_hidden_size=22528),
    "Hyena40bARCLongContextConfig": dict(_40B, seq_length=1_048_576, ffn_hidden_size=22528,
                                         seq_len_interpolation_factor=128),
}


def evo2_config_from_nemo(fields: dict, *, vocab_size: int = 512, name: str = "nemo2") -> Evo2Config:
    """Evo2Config from the fields of a NeMo `HyenaConfig` (as written in a checkpoint context).

    Raises:
        ValueError: if a field is missing or describes something Evo2Model does not implement.
    """
    def need(key):
        if fields.get(key) is None:
            raise ValueError(f"NeMo Hyena config: field {key!r} is missing")
        return fields[key]

    unsupported = {
        "gated_linear_unit": (True, fields.get("gated_linear_unit", True)),
        "normalization": ("RMSNorm", fields.get("normalization", "RMSNorm")),
        "position_embedding_type": ("rope", fields.get("position_embedding_type", "rope")),
        "rotary_percent": (1.0, float(fields.get("rotary_percent", 1.0))),
        "share_embeddings_and_output_weights": (True, fields.get("share_embeddings_and_output_weights", True)),
        "add_bias_linear": (False, fields.get("add_bias_linear", False)),
        "add_qkv_bias": (False, fields.get("add_qkv_bias", False)),
        "hyena_width_expansion": (1.0, float(fields.get("hyena_width_expansion", 1.0))),
    }
    bad = {k: got for k, (want, got) in unsupported.items() if got != want}
    groups = fields.get("num_query_groups")
    if groups is not None and groups != fields.get("num_attention_heads"):
        bad["num_query_groups"] = groups
    if bad:
        raise ValueError(f"NeMo Hyena config: settings Evo2Model does not implement: {bad}")
    pattern = need("hybrid_override_pattern")
    if fields.get("num_layers") not in (None, len(pattern)):
        raise ValueError(f"NeMo Hyena config: num_layers={fields['num_layers']} but the pattern {pattern!r} "
                         f"has {len(pattern)} layers")
    hidden = need("hidden_size")
    hcl = fields.get("num_groups_hyena") or hidden
    scaling = fields.get("seq_len_interpolation_factor")
    gelu_everywhere = not fields.get("remove_activation_post_first_layer", True)
    # HyenaConfig.configure_model keeps Megatron's fused bias-GeGLU (tanh approximation of GELU)
    # unless the activation is removed after layer 0.
    mlp_gelu = "tanh" if gelu_everywhere and fields.get("bias_activation_fusion", True) else "exact"
    return Evo2Config(
        name=name,
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_heads=need("num_attention_heads"),
        ffn_hidden_size=need("ffn_hidden_size"),
        pattern=pattern,
        hcs_groups=fields.get("num_groups_hyena_short") or hcl,
        hcm_groups=fields.get("num_groups_hyena_medium") or hcl,
        hcl_groups=hcl,
        rotary_base=float(fields.get("rotary_base", 10000)),
        rotary_scaling=1.0 if scaling is None else float(scaling),
        eps=float(fields.get("layernorm_epsilon", 1e-6)),
        activation_first_layer_only=bool(fields.get("remove_activation_post_first_layer", True)),
        short_conv_bias=bool(fields.get("use_short_conv_bias", False)),
        attn_out_bias=bool(fields.get("add_attn_proj_bias", True)),
        max_seqlen=int(fields.get("seq_length", 8192)),
        mlp_gelu=mlp_gelu,
        norm_form="nemo",  # NeMo's Hyena normalises with Transformer Engine's / Megatron's RMSNorm
        extra={"source": "nemo2"},
    )


def _context_from_yaml(path: Path) -> tuple[dict, str, int | None]:
    import yaml

    with open(path) as f:
        model = yaml.safe_load(f)
    config = model.get("config") if isinstance(model, dict) else None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: no model config")
    cls = str(config.get("_target_", "")).rsplit(".", 1)[-1]
    tokenizer = model.get("tokenizer")
    vocab = tokenizer.get("vocab_size") if isinstance(tokenizer, dict) else None
    return config, cls, vocab


def _context_from_io_json(path: Path) -> tuple[dict, str, int | None]:
    with open(path) as f:
        graph = json.load(f)
    objects = graph.get("objects", {})

    def leaves(obj: dict) -> dict:
        out = {}
        for attr, value in obj.get("items", []):
            m = re.fullmatch(r"Attr\(name='(\w+)'\)", attr)
            if m and isinstance(value, dict) and value.get("type") == "leaf":
                out[m.group(1)] = value.get("value")
        return out

    def class_name(obj: dict) -> str:
        meta = objects.get(obj.get("metadata", {}).get("key", ""), {})
        for attr, value in meta.get("items", []):
            if attr == "Attr(name='fn_or_cls')":
                return value.get("name", "")
        return ""

    config = cls = vocab = None
    for obj in objects.values():
        paths = obj.get("paths", []) if isinstance(obj, dict) else []
        if "<root>.model.config" in paths:
            config, cls = leaves(obj), class_name(obj)
        elif "<root>.model.tokenizer" in paths:
            vocab = leaves(obj).get("vocab_size")
    if config is None:
        raise ValueError(f"{path}: no <root>.model.config object")
    if cls not in NEMO_HYENA_CONFIG_DEFAULTS:
        raise ValueError(f"{path}: model config class {cls!r} is not a known NeMo Hyena config; io.json holds "
                         "only explicit arguments, so its defaults are unknown (pass an Evo2Config)")
    return dict(NEMO_HYENA_CONFIG_DEFAULTS[cls], **config), cls, vocab


def read_nemo2_config(path: str | Path) -> Evo2Config:
    """Evo2Config of a NeMo 2 checkpoint, from ``context/model.yaml`` (or ``context/io.json``).

    Raises:
        FileNotFoundError / ValueError: when neither file gives a usable Hyena config.
    """
    path = Path(path)
    context = path / "context" if (path / "context").is_dir() else path.parent / "context"
    errors = []
    for filename, parse in (("model.yaml", _context_from_yaml), ("io.json", _context_from_io_json)):
        if not (context / filename).is_file():
            errors.append(f"{context / filename}: not found")
            continue
        try:
            fields, cls, vocab = parse(context / filename)
            # Evo-2 uses NeMo's ByteLevelTokenizer, whose default (not always recorded) is 512 tokens.
            return evo2_config_from_nemo(fields, vocab_size=int(vocab or 512), name=f"nemo2:{cls or 'HyenaConfig'}")
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            errors.append(f"{context / filename}: {err}")
    raise ValueError("read_nemo2: cannot derive an Evo2Config from the checkpoint context; pass one explicitly. "
                     + "; ".join(errors))


def read_nemo2(path: str | Path, cfg: Evo2Config | None = None) -> tuple[dict[str, torch.Tensor], Evo2Config]:
    """Read a NeMo 2 Hyena checkpoint directory into Evo2Model weights.

    Args:
        path: the checkpoint directory (holding ``weights/`` and ``context/``), or its ``weights/``.
        cfg: the Evo-2 shape; by default derived from the checkpoint context. Its RMSNorm form is set to
            NeMo's ("nemo", with a warning if it said otherwise): NeMo computes every NeMo 2 checkpoint that way.

    Returns:
        (Evo2Model state dict, Evo2Config)
    """
    path = Path(path)
    if cfg is None:
        cfg = read_nemo2_config(path)
    elif cfg.norm_form != "nemo":
        warnings.warn(f"{path}: a NeMo 2 checkpoint is computed with NeMo's RMSNorm (x * rsqrt(mean(x^2) + eps)); "
                      f"the given config {cfg.name!r} says norm_form={cfg.norm_form!r}, using 'nemo'", stacklevel=2)
        cfg = dataclasses.replace(cfg, norm_form="nemo")
    weights = read_megatron_weights(_weights_dir(path))
    return megatron_to_evo2(weights, cfg), cfg
