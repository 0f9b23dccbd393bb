"""Evo-2 / StripedHyena 2 configuration and the published model shapes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

# Block symbols of the hybrid layer pattern (NeMo's `hybrid_override_pattern`):
#   S  short explicit filter (hyena_short_conv, "SE"), length 7
#   D  medium regularized filter (hyena_medium_conv, "MR"), length 128
#   H  long implicit modal filter (hyena, "LI"), as long as the sequence
#   *  multi-head self attention with rotary position embeddings
BLOCK_TYPES = "SDH*"


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

    # ------------------------------------------------------------------ derived
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
        """Everything that determines parameter shapes and numerics (used for identity hashes)."""
        d = dataclasses.asdict(self)
        for k in ("name", "extra", "max_seqlen", "modal_gamma_min", "modal_gamma_max", "init_std"):
            d.pop(k)
        return d

    def shape_hash(self) -> str:
        blob = json.dumps(self.shape_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Evo2Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Evo2Config: unknown field(s) {unknown}")
        return cls(**d)

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, **overrides) -> Evo2Config:
        """Published Evo-2 shapes (Arc configs / NeMo Hyena*Config) plus the tiny test flavour.

        Names: tiny, small, 1b, 7b_base (8k), 7b (1M context), 40b_base (8k), 40b (1M context).
        """
        if name not in PRESETS:
            raise ValueError(f"Evo2Config.preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        kwargs = dict(PRESETS[name])
        kwargs.update(overrides)
        return cls(name=name, **kwargs)


_P7 = "SDH*SDHSDH*SDHSDH*SDHSDH*SDHSDH*"
_P40 = "SDH*SDHSDH*SDHSDH*SDHSDH*SDHSDH*SDH*SDHSDH*SDHSDH*"

PRESETS: dict[str, dict] = {
    # Test flavour: every block type once, runs in milliseconds on a CPU.
    "tiny": dict(hidden_size=64, num_heads=4, ffn_hidden_size=128, pattern="SDH*", hcs_groups=16,
                 hcm_groups=16, hcl_groups=64, max_seqlen=1 << 20),
    # The embedded default model's shape: two attention blocks, trainable on a CPU.
    "small": dict(hidden_size=128, num_heads=4, ffn_hidden_size=352, pattern="SDH*SDH*", hcs_groups=16,
                  hcm_groups=16, hcl_groups=128, max_seqlen=1 << 20),
    "1b": dict(hidden_size=1920, num_heads=15, ffn_hidden_size=5120, pattern="SDH*SDHSDH*SDHSDH*SDHSDH*",
               hcs_groups=128, hcm_groups=128, hcl_groups=1920, rotary_base=1e4, max_seqlen=8192),
    "7b_base": dict(hidden_size=4096, num_heads=32, ffn_hidden_size=11008, pattern=_P7, hcs_groups=256,
                    hcm_groups=256, hcl_groups=4096, rotary_base=1e4, max_seqlen=8192),
    "7b": dict(hidden_size=4096, num_heads=32, ffn_hidden_size=11264, pattern=_P7, hcs_groups=256,
               hcm_groups=256, hcl_groups=4096, rotary_base=1e4, rotary_scaling=128.0, max_seqlen=1 << 20),
    "40b_base": dict(hidden_size=8192, num_heads=64, ffn_hidden_size=21888, pattern=_P40, hcs_groups=512,
                     hcm_groups=512, hcl_groups=8192, rotary_base=1e6, max_seqlen=8192),
    "40b": dict(hidden_size=8192, num_heads=64, ffn_hidden_size=22528, pattern=_P40, hcs_groups=512,
                hcm_groups=512, hcl_groups=8192, rotary_base=1e6, rotary_scaling=128.0, max_seqlen=1 << 20),
}
