"""The training schema: `TrainConfig` and its sections, validated when built (errors name the field), and
`config_from_hydra`, which checks a composed Hydra config against it (errors name the key)."""

from __future__ import annotations

from dataclasses import dataclass, field

from focus_nemo.focus.config import FocusConfig


@dataclass
class ModelSection:
    checkpoint: str = "embedded"  # a checkpoint path (any format load_evo2 reads) or "embedded"
    preset: str = "tiny"  # used only when checkpoint is "random" (tests)
    dtype: str = "float32"  # the frozen base's weights (the precision policy keeps Hyena filters fp32)
    # Config of a checkpoint path: a preset name (e.g. 7b-262k) or Arc's YAML (evo2-7b-262k.yml); "" = the
    # checkpoint's own (refused for Arc files whose shapes do not determine it).
    config: str = ""


@dataclass
class DataSection:
    train_fasta: str = "bundled:chr20_train"
    train_regions: list[str] = field(default_factory=list)  # empty = every record of the file
    val_fasta: str = "bundled:chr20_heldout"
    val_regions: list[str] = field(default_factory=list)
    sample_len: int = 4096  # bases per training sample (several windows)
    rc_prob: float = 0.5
    max_n_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.sample_len < 1:
            raise ValueError(f"data.sample_len: must be >= 1 base, got {self.sample_len}")
        for name in ("rc_prob", "max_n_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.{name}: must be in [0, 1], got {getattr(self, name)}")


BACKENDS = ("single", "nemo")
PRECISIONS = ("32", "bf16-mixed", "16-mixed")


@dataclass
class TrainerSection:
    backend: str = "single"  # single: one-device PyTorch loop; nemo: NeMo/Megatron (TP/PP/DP)
    accelerator: str = "cpu"  # cpu | gpu
    devices: int = 1  # processes per node (GPUs per node)
    num_nodes: int = 1
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    precision: str = "32"  # 32 | bf16-mixed | 16-mixed
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20
    max_steps: int = 300
    batch_size: int = 2
    grad_clip: float = 1.0
    # nemo backend on GPUs: NeMo wraps its medium Hyena filter in torch.compile(mode="max-autotune"), compiled
    # per rank and per sequence length (minutes, eight ranks at once) for an elementwise product of two
    # tensors; false runs the same product eagerly. CPU runs never compile it.
    compile_medium_filter: bool = True

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"TrainerSection.backend: {self.backend!r} is not one of {BACKENDS}")
        if self.accelerator not in ("cpu", "gpu"):
            raise ValueError(f"TrainerSection.accelerator: {self.accelerator!r} is not 'cpu' or 'gpu'")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainerSection.precision: {self.precision!r} is not one of {PRECISIONS}")
        for name in ("devices", "num_nodes", "tensor_model_parallel_size", "pipeline_model_parallel_size",
                     "max_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainerSection.{name}: must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"trainer.lr: must be > 0, got {self.lr}")
        for name in ("weight_decay", "warmup_steps", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"trainer.{name}: must be >= 0, got {getattr(self, name)}")
        world = self.devices * self.num_nodes
        mp = self.tensor_model_parallel_size * self.pipeline_model_parallel_size
        if world % mp:
            raise ValueError(f"TrainerSection.tensor_model_parallel_size: TP x PP = {mp} does not divide "
                             f"devices x num_nodes = {world}")
        if self.backend == "single" and world != 1:
            raise ValueError(f"TrainerSection.devices: the single backend runs one process; got devices x "
                             f"num_nodes = {world} (use backend: nemo)")

    @property
    def data_parallel_size(self) -> int:
        mp = self.tensor_model_parallel_size * self.pipeline_model_parallel_size
        return self.devices * self.num_nodes // mp


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    focus: FocusConfig = field(default_factory=lambda: FocusConfig(k=100, window=1024))
    data: DataSection = field(default_factory=DataSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    eval_samples: int = 8
    eval_len: int = 4096
    eval_every: int = 0  # 0 = only before and after training
    log_every: int = 10
    save_every: int = 50
    seed: int = 0
    run_dir: str = "runs/focus"
    resume: bool = True
    threads: int = 0  # torch's CPU threads; 0: torch's default

    def __post_init__(self) -> None:
        if self.eval_len < 1:
            raise ValueError(f"eval_len: must be >= 1 base, got {self.eval_len}")
        if self.threads < 0:
            raise ValueError(f"threads: must be >= 1 (or 0 for torch's default), got {self.threads}")
        for name in ("eval_samples", "eval_every", "log_every", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")


def config_from_hydra(cfg) -> TrainConfig:
    """Validate a composed Hydra/OmegaConf config against the typed schema (errors name the key)."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), raw)
    return OmegaConf.to_object(merged)
