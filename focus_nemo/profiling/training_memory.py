"""Memory of one FOCUS training step per device, before the run: parameters, gradients, optimizer state,
activations, logits and the distillation teacher (`estimate_training_memory`, `estimate_for_config`), and a
measurement of the same on CPU (`measure_step_peak`) that checks the estimate at small shapes.

What each term counts (per tensor-parallel rank; P_base, P_focus: this rank's parameter counts):

* ``base_parameters``: the frozen base in the compute dtype (``bf16-mixed``: bf16, NeMo's Float16Module),
  matrices split over the TP ranks, norms and the row-parallel biases replicated;
* ``focus_parameters``: the adapter in the compute dtype, plus its fp32 master copy under 16-bit precision;
* ``gradients``: fp32, one per adapter parameter (Megatron's gradient buffer, ``grad_reduce_in_fp32``);
* ``optimizer_state``: Adam's two fp32 moments per adapter parameter;
* ``activations``: what the student forward saves for the backward. Nothing is saved before the first
  attention block except the Focus tokens' MLP inputs (the base is frozen and the Focus memory first enters
  there); from it on, per block and token, ``SAVED[kind] x hidden + MLP_SAVED x ffn`` elements of the compute
  dtype, of which ``REPLICATED x hidden`` (residual stream and norms) on every rank and the rest split over
  TP. Hyena mixers see the n ordinary bases, attention and MLPs also the n/k Focus tokens (k: the smallest
  training ratio);
* ``logits``: fp32 logits and log-probabilities of the n ordinary bases (full vocabulary on every rank), two
  more with distillation;
* ``teacher``: the working set of the frozen base's forward without gradients (its attention through the
  fused kernels: no [L, L] scores), while the student's activations are held: one layer at a time, the
  long-filter FFT convolution (``TEACHER_FFT`` x hidden) or a block's projections; plus its logits.

The per-token coefficients were measured on the NeMo local spec on CPU (live allocations after each aten op,
`measure_step_peak`) and are checked there within 30 % (tests/nemo/test_teacher_memory.py); CUDA kernels
(flash attention, cuFFT workspaces) and the caching allocator's fragmentation add to them on a GPU.
"""

from __future__ import annotations

import ctypes
from dataclasses import asdict, dataclass

import torch

SAVED = {"*": 8.1, "S": 9.0, "D": 12.0, "H": 12.0}  # x hidden, per token, saved by one block after the first *
MLP_SAVED = 3.33  # x ffn, per token, saved by a block's gated MLP
REPLICATED = 4.0  # x hidden of a block's saved elements that every TP rank holds (no sequence parallelism)
TEACHER_FFT = 38.0  # x hidden, per token, compute dtype: the long-filter FFT convolution's working set
TEACHER_BLOCK = 10.0  # x hidden (+ 4 x ffn), per token: any other block's working set in the teacher

_BYTES = {"32": 4, "bf16-mixed": 2, "16-mixed": 2}
TERMS = ("base_parameters", "focus_parameters", "gradients", "optimizer_state", "activations", "logits", "teacher")


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes per device of one training step (see the module docstring for each term)."""

    base_parameters: int
    focus_parameters: int
    gradients: int
    optimizer_state: int
    activations: int
    logits: int
    teacher: int

    @property
    def step_peak(self) -> int:
        """What a forward-backward step adds on top of the model and optimizer: activations, logits, the
        teacher's working set (held together at the teacher's forward) and the adapter's gradients."""
        return self.activations + self.logits + self.teacher + self.gradients

    @property
    def total(self) -> int:
        return self.base_parameters + self.focus_parameters + self.optimizer_state + self.step_peak

    def to_dict(self) -> dict:
        return {**asdict(self), "step_peak": self.step_peak, "total": self.total}


def parameter_counts(evo2, tp: int = 1) -> tuple[int, int]:
    """(base, Focus) parameters on one of `tp` tensor-parallel ranks (the single-device model's shapes,
    built on the meta device: nothing is allocated)."""
    from focus_nemo.evo2 import Evo2Model
    from focus_nemo.focus import FocusConfig, FocusModel

    with torch.device("meta"):
        fm = FocusModel(Evo2Model(evo2), FocusConfig(k=2, window=4))
    base = 0
    for name, p in fm.base.named_parameters():
        replicated = "norm" in name or name.endswith("out_proj.bias")
        base += p.numel() if replicated else -(-p.numel() // tp)
    focus = 0
    for p in fm.focus_parameters().values():
        replicated = p.dim() == 1  # the Focus embedding and output biases
        focus += p.numel() if replicated else p.numel() // tp
    return base, focus


def estimate_training_memory(evo2, *, seq_len: int, micro_batch: int = 1, tp: int = 1,
                             precision: str = "bf16-mixed", k: int = 100, distill: bool = True) -> TrainingMemory:
    """Per-device memory of one training step of a FOCUS adapter on `evo2` (an `Evo2Config`).

    Args:
        seq_len: bases per training sample (``data.sample_len``).
        micro_batch: samples per step and device (``trainer.batch_size``).
        tp: tensor-parallel size.
        precision: ``trainer.precision`` (compute dtype of the base and the activations).
        k: the smallest compression ratio trained (the most Focus tokens).
        distill: whether the distillation teacher runs (``focus.distill_weight > 0``).
    """
    if precision not in _BYTES:
        raise ValueError(f"precision: {precision!r} is not one of {sorted(_BYTES)}")
    act = _BYTES[precision]
    half = act == 2
    base, focus = parameter_counts(evo2, tp)
    D, F, V, B = evo2.hidden_size, evo2.ffn_hidden_size, evo2.vocab_size, micro_batch
    n = seq_len
    f = -(-n // k)
    first = evo2.pattern.find("*")
    saved = 0.0
    for i, kind in enumerate(evo2.pattern):
        mlp = (n + f) * MLP_SAVED * F / tp
        if first < 0 or i < first:
            saved += f * (2 * D) + f * MLP_SAVED * F / tp  # the Focus tokens' norm and MLP inputs only
            continue
        tokens = n + f if kind == "*" else n
        c = SAVED.get(kind, SAVED["D"])
        saved += tokens * (REPLICATED * D + (c - REPLICATED) * D / tp) + mlp
    activations = int(B * saved * act)
    logits = int(B * n * V * 4 * (1 + (1 if distill else 0)))
    teacher = 0
    if distill:
        fft = TEACHER_FFT * D / tp * act if "H" in evo2.pattern else 0
        block = (TEACHER_BLOCK * D / tp + 4 * F / tp) * act
        teacher = int(B * n * (max(fft, block) + 2 * V * 4))
    master = 4 if half else 0
    return TrainingMemory(base_parameters=base * act, focus_parameters=focus * (act + master),
                          gradients=focus * 4, optimizer_state=focus * 8, activations=activations, logits=logits,
                          teacher=teacher)


def estimate_for_config(cfg, evo2=None) -> TrainingMemory:
    """`estimate_training_memory` for a `TrainConfig` (the model's config read from its checkpoint or
    preset when `evo2` is None)."""
    if evo2 is None:
        evo2 = model_config(cfg.model)
    ratios = cfg.focus.train_ratios or [cfg.focus.k]
    t = cfg.trainer
    precision = t.precision
    return estimate_training_memory(evo2, seq_len=cfg.data.sample_len, micro_batch=t.batch_size,
                                    tp=t.tensor_model_parallel_size, precision=precision, k=min(ratios),
                                    distill=cfg.focus.distill_weight > 0)


def model_config(section):
    """The `Evo2Config` of a model section: its checkpoint's (only the config is read), or the section's
    preset where the checkpoint is not on this machine (estimating before the files are copied)."""
    from focus_nemo.evo2 import Evo2Config
    from focus_nemo.evo2.checkpoint import read_checkpoint
    from focus_nemo.evo2.nemo2 import read_nemo2_config
    from focus_nemo.loading import resolve_checkpoint

    try:
        name, path = resolve_checkpoint(section.checkpoint, section.preset)
    except (OSError, ValueError):
        return Evo2Config.preset(section.preset)
    if path is None:
        return Evo2Config.preset(name)
    if (path / "context").is_dir():
        return read_nemo2_config(path)
    return read_checkpoint(path, config=getattr(section, "config", "") or None)[1]


def format_memory(m: TrainingMemory, title: str = "") -> str:
    """A table of the terms in GiB (per device)."""
    rows = [title] if title else []
    rows += [f"{name:<18} {getattr(m, name) / 2**30:10.3f} GiB" for name in TERMS]
    rows += [f"{'total':<18} {m.total / 2**30:10.3f} GiB"]
    return "\n".join(rows)


# --------------------------------------------------------------------------- measurement (CPU, glibc)
class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _heap_in_use():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None

    def in_use() -> int:
        m = libc.mallinfo2()
        return m.uordblks + m.hblkhd  # heap blocks in use + mmapped blocks (large tensors)

    return in_use


def measure_step_peak(fn) -> int:
    """Peak growth of the process's allocated memory (glibc's in-use heap and mmapped blocks, sampled after
    every aten op) while `fn()` runs on the CPU: tensors an op creates and frees inside itself are not seen.

    Raises:
        RuntimeError: without glibc's mallinfo2 (Linux, glibc >= 2.33).
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    in_use = _heap_in_use()
    if in_use is None:
        raise RuntimeError("measure_step_peak: needs glibc's mallinfo2 (Linux, glibc >= 2.33)")

    class Peak(TorchDispatchMode):
        base = in_use()
        peak = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            Peak.peak = max(Peak.peak, in_use() - Peak.base)
            return out

    with Peak():
        fn()
    return Peak.peak
