"""CPU stand-ins that let NeMo 2.7.3's Hyena (Evo-2) model run without CUDA, on gloo, in fp32.

NeMo's Hyena code and parts of Megatron Core assume a GPU even where the arithmetic does not need
one. Each shim below replaces one such assumption with a CPU equivalent and names the error it
fixes. `apply()` installs them all; it is idempotent. `cpu_shims()` is the context-manager form:
it applies the shims on entry and, if it was the one that applied them, restores the originals on
exit.

Two of NeMo's assumptions are not about the device but about optional CUDA packages, and the model
this package builds (the plain Megatron spec of `focus_nemo.nemo.spec`) must not need them on any
device: `HyenaStack.final_norm` is hard-coded `TENorm` (Transformer Engine), and NeMo's default
``fast_conv_proj=True`` calls the `causal_conv1d` package's kernel, which the ``nemo`` extra does not
install. `apply_portable()` replaces those two (and, without Transformer Engine, NeMo's TE-only
stack spec) on every device, CUDA or not, leaving a real `causal_conv1d` kernel in place where the
package is installed; `apply()` always includes it, and adds the CPU shims only without CUDA.

Usage::

    from focus_nemo.nemo import cpu_shims
    cpu_shims.apply()          # before building the Megatron model

The shims cover building the model, its forward pass and distributed checkpoint save/load (also
through `nemo.lightning`'s trainer and `MegatronStrategy`) and training with `nemo.lightning`'s
trainer, `MegatronStrategy` and Megatron's (non-distributed, fp32) optimizer.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F

# (owner, attribute name, original value) for every patched attribute, in the order applied.
_PATCHES: list[tuple[object, str, object]] = []
_MISSING = object()  # the attribute did not exist before patching
_APPLIED = False  # the CPU shims
_PORTABLE = False  # the device-independent shims


def _patch(owner: object, name: str, value: object) -> None:
    _PATCHES.append((owner, name, owner.__dict__.get(name, _MISSING)))
    setattr(owner, name, value)


def is_applied() -> bool:
    """Whether the shims are currently installed."""
    return _APPLIED


# --------------------------------------------------------------------------- replacements
def _cpu_current_device() -> torch.device:
    # Fixes "AssertionError: Torch not compiled with CUDA enabled" from the many
    # `torch.empty(..., device=torch.cuda.current_device())` calls (Hyena conv weights and biases,
    # rotary embeddings, Float16Module, checkpoint strategies): the answer is simply the CPU.
    return torch.device("cpu")


def _noop_synchronize(device=None) -> None:
    # Fixes "AssertionError: Torch not compiled with CUDA enabled" in dist-checkpointing's preload
    # step; CPU work is already synchronous.
    return None


class _NoStream:
    """Fixes "RuntimeError: torch.cuda.Stream requires CUDA support" in
    `MegatronParallel.init_model_parallel` (``with torch.cuda.stream(torch.cuda.Stream())``).

    `torch.cuda.stream(None)` is already a no-op context, so constructing a stream gives None; it
    stays a class so that ``isinstance(x, torch.cuda.Stream)`` keeps working (always False).
    """

    def __new__(cls, *args, **kwargs):
        return None


@functools.lru_cache(maxsize=32)
def _cpu_causal_mask(sq: int) -> torch.Tensor:
    # Megatron builds the default causal mask with device="cuda" whenever attention_mask is None,
    # which is always the case in the Hyena forward ("Torch not compiled with CUDA enabled").
    return torch.triu(torch.ones(sq, sq, dtype=torch.bool), diagonal=1)


def _causal_conv1d_reference(x, weight, bias=None, activation=None, **kwargs):
    """F.conv1d stand-in for the CUDA `causal_conv1d_fn` with its [channels, k] weight layout.

    NeMo's `fast_conv_proj=True` (the default, and the layout of every Evo-2 checkpoint) calls
    the CUDA kernel, which raises "ImportError: causal_conv1d is required by the Hyena model but
    cannot be imported" without it. The kernel is a depthwise causal convolution whose last tap
    multiplies the current sample, i.e. F.conv1d on the input left-padded by k-1 samples.
    """
    if activation not in (None, "identity"):
        raise ValueError(f"causal_conv1d reference: unsupported activation {activation!r}")
    channels, k = weight.shape
    y = F.conv1d(F.pad(x, (k - 1, 0)), weight.unsqueeze(1).to(x.dtype), bias, groups=channels)
    return y


def _plain_decay_filter(self, L, *args, **kwargs):
    # `ExplicitSingleDecayFilter.filter` is wrapped in torch.compile(mode="max-autotune"). On CPU
    # that works but its first call costs ~20 s of Inductor compilation (per process, and again
    # under inference mode) for a two-tensor product; the eager product is the same arithmetic.
    return self.h[:, :L] * self.decay[:, :L]


class _StaysOnCpu(torch.Tensor):
    """A tensor whose ``.to("cuda", ...)`` is a no-op (for pinned staging tensors headed to a GPU)."""

    def to(self, *args, **kwargs):
        if args and str(args[0]).startswith("cuda") or str(kwargs.get("device", "")).startswith("cuda"):
            return self.as_subclass(torch.Tensor)
        return super().to(*args, **kwargs)


class _TorchWithCpuFactories:
    """The torch module, except that tensor factories asked for device="cuda" build on the CPU, and
    pinned tensors (a staging step before a copy to the GPU) are plain CPU tensors that stay put."""

    _FACTORIES = ("zeros", "ones", "empty", "full", "tensor")

    def __getattr__(self, name: str):
        value = getattr(torch, name)
        if name not in self._FACTORIES:
            return value

        @functools.wraps(value)
        def on_cpu(*args, **kwargs):
            if str(kwargs.get("device", "")).startswith("cuda"):
                kwargs["device"] = "cpu"
            if kwargs.pop("pin_memory", False):
                return value(*args, **kwargs).as_subclass(_StaysOnCpu)
            return value(*args, **kwargs)

        return on_cpu


def _make_cpu_rng_tracker_class():
    from megatron.core.tensor_parallel import random as mp_random

    class CpuRNGStatesTracker(mp_random.CudaRNGStatesTracker):
        """Megatron's named-RNG-state tracker, keeping the named states on the CPU generator.

        Megatron initialises every tensor-parallel weight inside `get_cuda_rng_tracker().fork()`;
        the CUDA tracker fails on CPU ("Torch not compiled with CUDA enabled" from
        `torch.cuda.get_rng_state`). Forking the CPU generator keeps the intended semantics:
        a separate, reproducible stream per name (the model-parallel stream differs per TP rank).
        """

        def add(self, name, seed):
            self._is_initialized = True
            if seed in self.seeds_:
                raise Exception(f"seed {seed} already exists")
            if name in self.states_:
                raise Exception(f"rng state {name} already exists")
            self.seeds_.add(seed)
            self.states_[name] = torch.Generator().manual_seed(seed).get_state()

        @contextlib.contextmanager
        def fork(self, name=mp_random._MODEL_PARALLEL_RNG_TRACKER_NAME):
            if name not in self.states_:
                raise Exception(f"rng state {name} is not added")
            outer = torch.get_rng_state()
            torch.set_rng_state(self.states_[name])
            try:
                yield
            finally:
                self.states_[name] = torch.get_rng_state()
                torch.set_rng_state(outer)

    return CpuRNGStatesTracker


# --------------------------------------------------------------------------- installation
def _install_megatron_shims() -> None:
    import megatron.core.fusions.fused_softmax as fused_softmax
    import megatron.core.transformer.utils as transformer_utils
    from megatron.core.tensor_parallel import random as mp_random

    _patch(torch.cuda, "current_device", _cpu_current_device)
    _patch(torch.cuda, "synchronize", _noop_synchronize)
    _patch(torch.cuda, "Stream", _NoStream)

    # fused_softmax imported the function by name, so both bindings need the CPU version.
    _patch(transformer_utils, "get_default_causal_mask", _cpu_causal_mask)
    _patch(fused_softmax, "get_default_causal_mask", _cpu_causal_mask)

    # Every `get_cuda_rng_tracker()` and `model_parallel_cuda_manual_seed()` goes through
    # initialize_rng_tracker, so installing the CPU tracker there covers all callers, including
    # modules that imported get_cuda_rng_tracker by name.
    tracker_cls = _make_cpu_rng_tracker_class()

    def initialize_cpu_rng_tracker(use_te_rng_tracker=False, inference_rng_tracker=False,
                                   use_cudagraphable_rng=False, force_reset=False):
        if force_reset or not mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED:
            mp_random._CUDA_RNG_STATE_TRACKER = tracker_cls()
            mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True

    _patch(mp_random, "initialize_rng_tracker", initialize_cpu_rng_tracker)

    # FP32Optimizer.__init__ allocates its constant loss scale with device='cuda' ("Torch not compiled
    # with CUDA enabled" when NeMo's MegatronOptimizerModule builds the optimizer).
    from megatron.core.optimizer import optimizer as mcore_optimizer

    def fp32_optimizer_init_on_cpu(self, optimizer, config, init_state_fn):
        mcore_optimizer.MegatronOptimizer.__init__(self, optimizer, config, init_state_fn)
        self._scale = torch.tensor([1.0], dtype=torch.float)
        self.is_stub_optimizer = optimizer is None

    _patch(mcore_optimizer.FP32Optimizer, "__init__", fp32_optimizer_init_on_cpu)
    # The mixed-precision optimizer (bf16/fp16 models with fp32 main params) allocates its loss scale and
    # overflow flag with device='cuda' ("Torch not compiled with CUDA enabled" when it is built).
    _patch(mcore_optimizer, "torch", _TorchWithCpuFactories())

    # Float16OptimizerWithFloat16Params sorts the parameters by `param.type()` against the CUDA names only
    # ("TypeError: Wrapped parameters must be one of torch.cuda.FloatTensor, ... Received
    # torch.BFloat16Tensor"); while it is built, CPU tensors report the CUDA name of their dtype.
    original_f16_init = mcore_optimizer.Float16OptimizerWithFloat16Params.__init__

    @functools.wraps(original_f16_init)
    def float16_optimizer_init_on_cpu(self, *args, **kwargs):
        with _cuda_type_names():
            original_f16_init(self, *args, **kwargs)

    _patch(mcore_optimizer.Float16OptimizerWithFloat16Params, "__init__", float16_optimizer_init_on_cpu)

    # The pipeline schedules count tokens in `torch.zeros([], device="cuda")` ("Torch not compiled
    # with CUDA enabled" at the first training step); their module sees CPU factories instead.
    from megatron.core.pipeline_parallel import schedules

    _patch(schedules, "torch", _TorchWithCpuFactories())

    # The gradient norm (computed at every optimizer step) and clipping allocate their overflow
    # buffers with device='cuda'; without TE or Apex they already use Megatron's plain-torch kernels.
    import megatron.core.utils as mcore_utils
    from megatron.core.optimizer import clip_grads

    _patch(clip_grads, "torch", _TorchWithCpuFactories())
    _patch(mcore_utils, "torch", _TorchWithCpuFactories())  # local_multi_tensor_l2_norm's result

    # Clipping asserts `param.grad.type() == 'torch.cuda.FloatTensor'`; the CPU version scales the
    # same gradients by the same coefficient.
    def clip_grad_by_total_norm_on_cpu(parameters, max_norm, total_norm, use_decoupled_grad=False):
        if isinstance(parameters, torch.Tensor):
            parameters = [parameters]
        clip_coeff = max_norm / (total_norm + 1.0e-6)
        if clip_coeff < 1.0:
            for p in parameters:
                g = getattr(p, "decoupled_grad", None) if use_decoupled_grad else p.grad
                if g is not None:
                    g.detach().mul_(clip_coeff)

    _patch(mcore_optimizer, "clip_grad_by_total_norm_fp32", clip_grad_by_total_norm_on_cpu)
    if mp_random._CUDA_RNG_STATE_TRACKER_INITIALIZED and not isinstance(
        mp_random._CUDA_RNG_STATE_TRACKER, tracker_cls
    ):
        initialize_cpu_rng_tracker(force_reset=True)


@contextlib.contextmanager
def _cuda_type_names():
    """`Tensor.type()` (no argument) of a CPU tensor returns the CUDA type name (torch.cuda.BFloat16Tensor)."""
    original = torch.Tensor.type

    def type_(self, *args, **kwargs):
        name = original(self, *args, **kwargs)
        if not args and not kwargs and isinstance(name, str) and self.device.type == "cpu":
            return name.replace("torch.", "torch.cuda.", 1)
        return name

    torch.Tensor.type = type_
    try:
        yield
    finally:
        torch.Tensor.type = original


def causal_conv1d_is_stub(hyena_utils) -> bool:
    """Whether NeMo's `causal_conv1d_fn` is its own stub that raises (the `causal_conv1d` package is absent)."""
    return getattr(hyena_utils.causal_conv1d_fn, "__module__", None) == hyena_utils.__name__


def _install_portable_shims() -> None:
    """The shims every device needs for the plain-Megatron model (see the module docstring)."""
    import nemo.collections.llm.gpt.model.hyena as nemo_hyena
    from megatron.core.transformer.torch_norm import WrappedTorchNorm
    from nemo.collections.llm.gpt.model.megatron.hyena import hyena_block, hyena_layer_specs, hyena_utils

    # `HyenaStack.final_norm` is hard-coded `TENorm(...)`, whatever the spec; without Transformer
    # Engine, Megatron's TENorm stub raises "ImportError: Transformer Engine is not installed" (on a GPU
    # too). Megatron's torch norm computes the same RMSNorm, under the same parameter name.
    _patch(hyena_block, "TENorm", WrappedTorchNorm)

    # See _causal_conv1d_reference; F.conv1d runs on any device. A real kernel stays where installed.
    if causal_conv1d_is_stub(hyena_utils):
        _patch(hyena_utils, "causal_conv1d_fn", _causal_conv1d_reference)

    # NeMo's spec without Transformer Engine still uses TENorm for every norm ("ImportError:
    # Transformer Engine is not installed" when the layers are built), and with use_te=True it
    # needs TE linears. Without TE, `HyenaConfig.configure_model` gets the local torch spec.
    if not hyena_layer_specs.HAVE_TE:
        original_spec = nemo_hyena.get_hyena_stack_spec

        def get_hyena_stack_spec_without_te(*args, **kwargs):
            from focus_nemo.nemo.spec import hyena_stack_spec

            return hyena_stack_spec()

        get_hyena_stack_spec_without_te.__wrapped__ = original_spec
        _patch(nemo_hyena, "get_hyena_stack_spec", get_hyena_stack_spec_without_te)


def _install_nemo_shims() -> None:
    import nemo.lightning.megatron_init as megatron_init
    from nemo.collections.llm.gpt.model.megatron.hyena import hyena_utils

    # See _plain_decay_filter.
    _patch(hyena_utils.ExplicitSingleDecayFilter, "filter", _plain_decay_filter)

    # `megatron_init._set_random_seed` seeds the model-parallel RNG only when CUDA devices exist;
    # without it the first `get_cuda_rng_tracker().fork()` fails with "rng state
    # model-parallel-rng is not added".
    original_seed = megatron_init._set_random_seed

    def set_random_seed_with_cpu_tracker(seed_):
        original_seed(seed_)
        if torch.cuda.device_count() == 0:
            from megatron.core import tensor_parallel
            from megatron.core.parallel_state import get_pipeline_model_parallel_rank

            tensor_parallel.model_parallel_cuda_manual_seed(seed_ + 100 * get_pipeline_model_parallel_rank())

    _patch(megatron_init, "_set_random_seed", set_random_seed_with_cpu_tracker)

    # MegatronStrategy.training_step and the data sampler log scalars through
    # `torch.tensor(x, pin_memory=True).to("cuda")` ("pin_memory=True requires a CUDA or other
    # accelerator backend" at the end of the first training step).
    from nemo.lightning.pytorch.plugins import data_sampler
    from nemo.lightning.pytorch.strategies import megatron_strategy

    _patch(megatron_strategy, "torch", _TorchWithCpuFactories())
    _patch(data_sampler, "torch", _TorchWithCpuFactories())


def apply_portable() -> None:
    """Install the shims that every device needs (idempotent): no Transformer Engine and no `causal_conv1d`
    package required by the model this package builds, on a GPU as on a CPU."""
    global _PORTABLE
    if _PORTABLE:
        return
    try:
        _install_portable_shims()
    except BaseException:
        remove()
        raise
    _PORTABLE = True


def compile_medium_filter(enabled: bool) -> None:
    """Whether NeMo's medium Hyena filter (`ExplicitSingleDecayFilter.filter`, wrapped in
    ``torch.compile(mode="max-autotune")``) runs compiled (NeMo's own) or eagerly (`_plain_decay_filter`,
    the same product). Eager is what the CPU shims install; on GPUs compiling happens per rank and per
    sequence length. A process-wide setting; `remove` restores NeMo's own."""
    from nemo.collections.llm.gpt.model.megatron.hyena import hyena_utils

    cls = hyena_utils.ExplicitSingleDecayFilter
    plain = cls.__dict__.get("filter") is _plain_decay_filter
    if enabled and plain and not _APPLIED:
        for n, (owner, name, original) in enumerate(_PATCHES):
            if owner is cls and name == "filter":
                setattr(cls, name, original)
                del _PATCHES[n]
                break
    elif not enabled and not plain:
        _patch(cls, "filter", _plain_decay_filter)


def medium_filter_compiled() -> bool:
    """Whether NeMo's medium Hyena filter currently runs through torch.compile."""
    from nemo.collections.llm.gpt.model.megatron.hyena import hyena_utils

    return hyena_utils.ExplicitSingleDecayFilter.__dict__.get("filter") is not _plain_decay_filter


def portable_applied() -> bool:
    """Whether the device-independent shims (`apply_portable`) are currently installed."""
    return _PORTABLE


def apply() -> bool:
    """Install the device-independent shims (`apply_portable`) and, without CUDA, every CPU shim (idempotent).

    Returns:
        True if the CPU shims are installed after the call, False when CUDA is available (then only
        `apply_portable`'s are: the GPU code paths are the real ones).
    """
    global _APPLIED
    apply_portable()
    if _APPLIED:
        return True
    if torch.cuda.is_available():
        return False
    try:
        _install_megatron_shims()
        _install_nemo_shims()
    except BaseException:
        remove()
        raise
    _APPLIED = True
    return True


def remove() -> None:
    """Restore every patched attribute (modules built while the shims were on keep their state)."""
    global _APPLIED, _PORTABLE
    while _PATCHES:
        owner, name, original = _PATCHES.pop()
        if original is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    _APPLIED = _PORTABLE = False


@contextlib.contextmanager
def cpu_shims():
    """Context manager form of `apply()`; restores the originals on exit if it installed them."""
    installed_here = not _APPLIED and apply()
    try:
        yield
    finally:
        if installed_here:
            remove()
