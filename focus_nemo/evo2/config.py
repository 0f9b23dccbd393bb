"""Evo-2 / StripedHyena 2 configuration and the published model shapes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

# Block symbols of the hybrid layer pattern (NeMo's `hybrid_override_pattern`):
#   S  short explicit filter (hyena_short_conv, "SE"), length 7
#   D  medium regularized filter (hyena_medium_conv, "MR"), length 128
#   H  long implicit modal filter (hyena, "LI"), as long as the sequence
#   *  multi-head self attention with rotary position embeddings
BLOCK_TYPES = "SDH*"

# RMSNorm forms (`Evo2Config.norm_form`):
#   arc   y = x / (rms(x) + eps)            Arc's vortex and savanna (the code Evo-2 was trained and released with)
#   nemo  y = x * rsqrt(mean(x^2) + eps)    NeMo's Hyena (Transformer Engine / Megatron RMSNorm)
NORM_FORMS = ("arc", "nemo")
# The form of every file written before `norm_form` was recorded: those files came from models whose RMSNorm
# computed x * rsqrt(mean(x^2) + eps) (the single-device model had no other form until the field existed), so
# a config without the field is read as "nemo". This is a fact about the writer, not a guess about the weights.
LEGACY_NORM_FORM = "nemo"


class _UnchosenNormForm(str):
    """`Evo2Config.norm_form`'s default value: the string "nemo" (what a model built from the config computes),
    marked as not chosen by whoever made the config, so that a checkpoint reader can give the model the form of
    the code the checkpoint comes from instead (`Evo2Config.norm_form_chosen`). Any value set explicitly (also
    "nemo") or read from a file counts as chosen; `dataclasses.replace` keeps the mark. Deep copies (and so
    `dataclasses.asdict`, `Evo2Config.to_dict` and everything written from them) hold the plain string."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str.__repr__(str(self))

    def __reduce__(self):
        return (_UnchosenNormForm, (str(self),))

    def __deepcopy__(self, memo) -> str:
        return str(self)


DEFAULT_NORM_FORM = _UnchosenNormForm("nemo")


@dataclass
class Evo2Config:
    """Shape and numerics of an Evo-2 model.

    Field names follow the Arc/vortex configs where one exists; the NeMo names are given in the
    comments. `Evo2Config.preset(name)` returns the published shapes.
    """

    name: str = "custom"
    vocab_size: int = 512
    hidden_size: int = 64
    num_heads: int = 4  # num_attention_heads; head_dim = hidden_size // num_heads
    ffn_hidden_size: int = 128  # inner width of the gated MLP
    pattern: str = "SDH*"  # hybrid_override_pattern; len(pattern) == num_layers
    short_filter_length: int = 3  # featurizer FIR on the 3*D projections (short_conv_L)
    hcs_filter_length: int = 7  # hyena_short_conv_len
    hcm_filter_length: int = 128  # hyena_medium_conv_len
    state_size: int = 16  # modal order of the long filter (hyena_filter_order)
    hcs_groups: int = 16  # num_groups_hyena_short: distinct S filters, shared by D/groups channels
    hcm_groups: int = 16  # num_groups_hyena_medium
    hcl_groups: int = 64  # num_groups_hyena (the long filter; = hidden_size in every Evo-2)
    rotary_base: float = 10000.0
    # Linear position scaling of the rotary embedding (NeMo seq_len_interpolation_factor; the
    # 1M-context Evo-2 checkpoints use 128): the angle of position t is t / rotary_scaling.
    rotary_scaling: float = 1.0
    eps: float = 1e-6
    # RMSNorm form (NORM_FORMS): that of the code the weights come from ("arc" for vortex/savanna files and
    # Arc's models, "nemo" for NeMo 2 files and models trained here). Left at its default, it is "nemo" for a
    # model built from the config, and a checkpoint loaded with the config keeps its own form
    # (`norm_form_chosen`).
    norm_form: str = DEFAULT_NORM_FORM
    # Evo-2 style activations: the MLP gate uses GELU only in layer 0 and the identity after it
    # (NeMo remove_activation_post_first_layer=True, vortex evo2_style_activations=True).
    activation_first_layer_only: bool = True
    # GELU form of the MLP gate: "exact" (erf; Arc/vortex and NeMo's unfused path) or "tanh"
    # (the approximation of Megatron's fused GeGLU, used by NeMo models that keep GELU everywhere).
    mlp_gelu: str = "exact"
    short_conv_bias: bool = False  # use_short_conv_bias (only the NVIDIA-trained variants)
    attn_out_bias: bool = True  # mha_out_proj_bias
    max_seqlen: int = 1 << 20  # the context length the checkpoint was trained for
    # Modal filter parametrisation at initialisation (NeMo ImplicitModalFilter defaults).
    modal_gamma_min: float = 0.01
    modal_gamma_max: float = 0.1
    init_std: float = 0.02
    extra: dict = field(default_factory=dict)  # free-form provenance (not part of the shape)

    def __post_init__(self) -> None:
        def bad(field_name: str, why: str) -> ValueError:
            return ValueError(f"Evo2Config.{field_name}: {why}")

        if not self.pattern or any(c not in BLOCK_TYPES for c in self.pattern):
            raise bad("pattern", f"{self.pattern!r} must be a non-empty string over {BLOCK_TYPES!r}")
        for name in ("vocab_size", "hidden_size", "num_heads", "ffn_hidden_size", "state_size"):
            if getattr(self, name) <= 0:
                raise bad(name, f"must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise bad("num_heads", f"{self.num_heads} does not divide hidden_size {self.hidden_size}")
        if (self.hidden_size // self.num_heads) % 2:
            raise bad("num_heads", "head_dim must be even for rotary embeddings")
        for name in ("hcs_groups", "hcm_groups", "hcl_groups"):
            g = getattr(self, name)
            if g <= 0 or self.hidden_size % g:
                raise bad(name, f"{g} must be positive and divide hidden_size {self.hidden_size}")
        if self.short_filter_length < 1 or self.hcs_filter_length < 1 or self.hcm_filter_length < 1:
            raise bad("hcm_filter_length", "filter lengths must be >= 1")
        if self.mlp_gelu not in ("exact", "tanh"):
            raise bad("mlp_gelu", f"{self.mlp_gelu!r} is not 'exact' or 'tanh'")
        if self.rotary_scaling <= 0:
            raise bad("rotary_scaling", f"must be positive, got {self.rotary_scaling}")
        if self.norm_form not in NORM_FORMS:
            raise bad("norm_form", f"{self.norm_form!r} is not one of {NORM_FORMS}")

    # ------------------------------------------------------------------ derived
    @property
    def norm_form_chosen(self) -> bool:
        """False when `norm_form` was left at its default (set by no one): a checkpoint loaded with this config
        then keeps the RMSNorm form of the code it comes from."""
        return not isinstance(self.norm_form, _UnchosenNormForm)

    @property
    def num_layers(self) -> int:
        return len(self.pattern)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def attention_layers(self) -> list[int]:
        return [i for i, c in enumerate(self.pattern) if c == "*"]

    def shape_dict(self) -> dict:
        """Everything that determines parameter shapes and numerics (used for identity hashes).

        `norm_form` enters only when it is not the legacy form, so that the hashes recorded in files written
        before the field existed (all "nemo") stay valid.
        """
        d = dataclasses.asdict(self)
        for k in ("name", "extra", "max_seqlen", "modal_gamma_min", "modal_gamma_max", "init_std"):
            d.pop(k)
        if d["norm_form"] == LEGACY_NORM_FORM:
            d.pop("norm_form")
        return d

    def shape_hash(self) -> str:
        blob = json.dumps(self.shape_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Evo2Config:
        """A config from `to_dict` output; a dict without `norm_form` (written before the field existed) gets
        LEGACY_NORM_FORM."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Evo2Config: unknown field(s) {unknown}")
        return cls(**{"norm_form": LEGACY_NORM_FORM, **d})

    @classmethod
    def from_arc_yaml(cls, source: str | os.PathLike | dict, name: str | None = None) -> Evo2Config:
        """The config of an Arc model YAML (the ``evo2/configs/*.yml`` the `evo2` package ships).

        See `arc_yaml_to_config`. `source` is a path or the parsed mapping.
        """
        return arc_yaml_to_config(source, name=name)

    @classmethod
    def resolve(cls, spec: str | os.PathLike | Evo2Config | None) -> Evo2Config | None:
        """A config from a preset name, an Arc YAML file (``.yml``/``.yaml``), our ``config.json``, or a config.

        None and "" give None (the config is then read from the checkpoint).
        """
        if spec is None or isinstance(spec, cls):
            return spec
        text = str(spec)
        if not text:
            return None
        if text in PRESETS or text in PRESET_ALIASES:
            return cls.preset(text)
        path = Path(text)
        if path.suffix.lower() in (".yml", ".yaml"):
            return arc_yaml_to_config(path)
        if path.suffix.lower() == ".json":
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: cannot read the config: {e}") from None
            for k in ("format", "format_version", "shape_hash"):
                doc.pop(k, None)
            try:
                return cls.from_dict(doc)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}: {e}") from None
        raise ValueError(
            f"config {text!r}: neither a preset ({sorted(PRESETS)} or {sorted(PRESET_ALIASES)}) nor a .yml/.yaml "
            "(Arc) or .json (ours) file"
        )

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, **overrides) -> Evo2Config:
        """Published Evo-2 shapes (Arc configs / NeMo Hyena*Config) plus the tiny test flavour.

        Names: tiny, small, and every published Arc model under the name of its Arc YAML
        (``evo2-<name>.yml``): 1b-8k, 7b-8k, 7b-262k, 7b-1m, 20b-1m, 40b-8k, 40b-1m. The older names
        1b, 7b_base, 7b, 40b_base and 40b are aliases (PRESET_ALIASES).
        """
        name = PRESET_ALIASES.get(name, name)
        if name not in PRESETS:
            raise ValueError(f"Evo2Config.preset: unknown preset {name!r}; choose one of {sorted(PRESETS)} "
                             f"(or an alias {sorted(PRESET_ALIASES)})")
        kwargs = dict(PRESETS[name])
        kwargs.update(overrides)
        return cls(name=name, **kwargs)


_P7 = "SDH*SDHSDH*SDHSDH*SDHSDH*SDHSDH*"
_P20 = "SDH*SDHSDH*SDHSDH*SDHSDH"
_P40 = "SDH*SDHSDH*SDHSDH*SDHSDH*SDHSDH*SDH*SDHSDH*SDHSDH*"
# What every Arc model shares (Arc YAML: rotary base, eps, evo2_style_activations, exact GELU, biases).
_ARC = dict(norm_form="arc", eps=1e-6, activation_first_layer_only=True, mlp_gelu="exact", short_conv_bias=False,
            attn_out_bias=True)
_ARC7 = dict(_ARC, hidden_size=4096, num_heads=32, pattern=_P7, hcs_groups=256, hcm_groups=256, hcl_groups=4096,
             rotary_base=1e4)
_ARC40 = dict(_ARC, hidden_size=8192, num_heads=64, pattern=_P40, hcs_groups=512, hcm_groups=512, hcl_groups=8192,
              rotary_base=1e6)

PRESETS: dict[str, dict] = {
    # Test flavour: every block type once, runs in milliseconds on a CPU.
    "tiny": dict(hidden_size=64, num_heads=4, ffn_hidden_size=128, pattern="SDH*", hcs_groups=16,
                 hcm_groups=16, hcl_groups=64, max_seqlen=1 << 20),
    # The embedded default model's shape: two attention blocks, trainable on a CPU.
    "small": dict(hidden_size=128, num_heads=4, ffn_hidden_size=352, pattern="SDH*SDH*", hcs_groups=16,
                  hcm_groups=16, hcl_groups=128, max_seqlen=1 << 20),
    # Arc's published models, as their YAML (evo2/configs/evo2-<name>.yml) describes them; `arc_yaml_to_config`
    # of that YAML gives the same config. The rotary scaling is applied by Arc only where the YAML sets
    # use_interpolated_rotary_pos_emb (the 262k and 1M context extensions). The 262k 7B has the 8k 7B's shape.
    "1b-8k": dict(_ARC, hidden_size=1920, num_heads=15, ffn_hidden_size=5120, pattern="SDH*SDHSDH*SDHSDH*SDHSDH*",
                  hcs_groups=128, hcm_groups=128, hcl_groups=1920, rotary_base=1e4, max_seqlen=8192),
    "7b-8k": dict(_ARC7, ffn_hidden_size=11008, max_seqlen=32768),
    "7b-262k": dict(_ARC7, ffn_hidden_size=11008, rotary_scaling=32.0, max_seqlen=262144),
    "7b-1m": dict(_ARC7, ffn_hidden_size=11264, rotary_scaling=128.0, max_seqlen=1 << 20),
    "20b-1m": dict(_ARC, hidden_size=8192, num_heads=64, ffn_hidden_size=22528, pattern=_P20, hcs_groups=512,
                   hcm_groups=512, hcl_groups=8192, rotary_base=1e6, rotary_scaling=128.0, max_seqlen=1 << 20),
    "40b-8k": dict(_ARC40, ffn_hidden_size=21888, max_seqlen=8192),
    "40b-1m": dict(_ARC40, ffn_hidden_size=22528, rotary_scaling=128.0, max_seqlen=1 << 20),
}

# Earlier preset names (config files and scripts use them).
PRESET_ALIASES: dict[str, str] = {"1b": "1b-8k", "7b_base": "7b-8k", "7b": "7b-1m", "40b_base": "40b-8k",
                                  "40b": "40b-1m"}


# ---------------------------------------------------------------------------------------------- Arc YAML
# Arc YAML keys that must hold these values: anything else is a model our Evo2Model does not compute.
_ARC_REQUIRED_VALUES = {
    "proj_groups": 1, "hyena_filter_groups": 1, "column_split_hyena": False, "column_split": True,
    "interleave": True, "tie_embeddings": True, "hyena_out_proj_bias": True, "hyena_flip_x1x2": False,
    "qkv_proj_bias": False, "final_norm": True, "short_filter_bias": False, "mlp_activation": "gelu",
}
_ARC_KEYS = ("vocab_size", "hidden_size", "num_filters", "num_layers", "num_attention_heads", "inner_mlp_size",
             "hcl_layer_idxs", "hcm_layer_idxs", "hcs_layer_idxs", "attn_layer_idxs", "hcm_filter_length",
             "hcs_filter_length", "hcl_filter_groups", "hcm_filter_groups", "hcs_filter_groups",
             "short_filter_length", "state_size", "eps", "rotary_emb_base", "max_seqlen")


def arc_yaml_to_config(source: str | os.PathLike | dict, name: str | None = None) -> Evo2Config:
    """Translate an Arc model YAML into an `Evo2Config` (RMSNorm form "arc", unless the YAML records another
    under our own key ``norm_form``, as `focus_nemo.evo2.checkpoint.export_vortex` writes it).

    The block pattern comes from the four ``*_layer_idxs`` lists; the rotary scaling is
    ``rotary_emb_scaling_factor`` when ``use_interpolated_rotary_pos_emb`` is true (as in Arc's code) and 1
    otherwise. Keys that select behaviour Evo2Model does not implement (e.g. ``qkv_proj_bias: true``) are refused.

    Args:
        source: the YAML file, or its parsed mapping.
        name: config name; default: the file name without ``.yml`` (e.g. ``evo2-7b-262k``), else ``model_name``.

    Raises:
        ValueError: naming the file and every missing, inconsistent or unsupported key.
    """
    import yaml

    where = "Arc config"
    if isinstance(source, dict):
        doc = dict(source)
    else:
        path = Path(source)
        where = str(path)
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{where}: cannot read the Arc config: {str(e).splitlines()[0]}") from None
        if name is None:
            name = path.name.rsplit(".", 1)[0]
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: not a mapping of config keys")
    missing = [k for k in _ARC_KEYS if k not in doc]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    problems = [f"{k}: {doc[k]!r} (only {v!r} is supported)" for k, v in _ARC_REQUIRED_VALUES.items()
                if k in doc and doc[k] != v]
    hidden, layers = int(doc["hidden_size"]), int(doc["num_layers"])
    if int(doc["num_filters"]) != hidden:
        problems.append(f"num_filters: {doc['num_filters']} (must equal hidden_size {hidden})")
    pattern = [None] * layers
    for key, symbol in (("hcs_layer_idxs", "S"), ("hcm_layer_idxs", "D"), ("hcl_layer_idxs", "H"),
                        ("attn_layer_idxs", "*")):
        for i in doc[key] or []:
            if not 0 <= int(i) < layers or pattern[int(i)] is not None:
                problems.append(f"{key}: layer {i} is out of range or listed twice")
                continue
            pattern[int(i)] = symbol
    if None in pattern:
        problems.append(f"layers {[i for i, c in enumerate(pattern) if c is None]} are in no *_layer_idxs list")
    if problems:
        raise ValueError(f"{where}: unsupported or inconsistent key(s):\n  " + "\n  ".join(problems))
    interpolated = bool(doc.get("use_interpolated_rotary_pos_emb", False))
    scaling = float(doc.get("rotary_emb_scaling_factor", 1.0)) if interpolated else 1.0
    kwargs = dict(
        name=name or str(doc.get("model_name", "arc")),
        vocab_size=int(doc["vocab_size"]), hidden_size=hidden, num_heads=int(doc["num_attention_heads"]),
        ffn_hidden_size=int(doc["inner_mlp_size"]), pattern="".join(pattern),
        short_filter_length=int(doc["short_filter_length"]), hcs_filter_length=int(doc["hcs_filter_length"]),
        hcm_filter_length=int(doc["hcm_filter_length"]), state_size=int(doc["state_size"]),
        hcs_groups=int(doc["hcs_filter_groups"]), hcm_groups=int(doc["hcm_filter_groups"]),
        hcl_groups=int(doc["hcl_filter_groups"]), rotary_base=float(doc["rotary_emb_base"]), rotary_scaling=scaling,
        eps=float(doc["eps"]), norm_form=str(doc.get("norm_form", "arc")),
        activation_first_layer_only=bool(doc.get("evo2_style_activations", False)), mlp_gelu="exact",
        short_conv_bias=False, attn_out_bias=bool(doc.get("mha_out_proj_bias", True)),
        max_seqlen=int(doc["max_seqlen"]),
        extra={"source_format": "arc_yaml", "arc_model_name": doc.get("model_name")},
    )
    try:
        return Evo2Config(**kwargs)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def config_to_arc_yaml(cfg: Evo2Config) -> str:
    """An Arc-shaped YAML for `cfg` (what Arc's vortex reads), plus our ``norm_form`` key recording the form."""
    import yaml

    idx = {s: [i for i, c in enumerate(cfg.pattern) if c == s] for s in BLOCK_TYPES}
    doc = {
        "model_name": cfg.name, "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "num_filters": cfg.hidden_size, "hcl_layer_idxs": idx["H"], "hcm_layer_idxs": idx["D"],
        "hcs_layer_idxs": idx["S"], "attn_layer_idxs": idx["*"], "hcm_filter_length": cfg.hcm_filter_length,
        "hcl_filter_groups": cfg.hcl_groups, "hcm_filter_groups": cfg.hcm_groups, "hcs_filter_groups": cfg.hcs_groups,
        "hcs_filter_length": cfg.hcs_filter_length, "num_layers": cfg.num_layers,
        "short_filter_length": cfg.short_filter_length, "num_attention_heads": cfg.num_heads,
        "short_filter_bias": False, "eps": cfg.eps, "state_size": cfg.state_size, "rotary_emb_base": cfg.rotary_base,
        "rotary_emb_scaling_factor": cfg.rotary_scaling, "use_interpolated_rotary_pos_emb": cfg.rotary_scaling != 1.0,
        "inner_mlp_size": cfg.ffn_hidden_size, "proj_groups": 1, "hyena_filter_groups": 1,
        "column_split_hyena": False, "column_split": True, "interleave": True,
        "evo2_style_activations": cfg.activation_first_layer_only, "tie_embeddings": True,
        "mha_out_proj_bias": cfg.attn_out_bias, "hyena_out_proj_bias": True, "hyena_flip_x1x2": False,
        "qkv_proj_bias": False, "max_seqlen": cfg.max_seqlen, "final_norm": True, "mlp_activation": "gelu",
        "tokenizer_type": "CharLevelTokenizer", "norm_form": str(cfg.norm_form),
    }
    return yaml.safe_dump(doc, sort_keys=False)
