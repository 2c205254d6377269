"""Run-time speed and memory settings shared by the training loops: threads, autocast, memory format,
the staged backward, recomputation, CUDA memory and the CPU heap.

The fast path changes how things are computed, never what: channels-last convolutions, the fused CLIP
image kernels of :mod:`t2l_core.runtime.fused_clip`, autocast only where the hardware gains from it, a staged
backward (:func:`t2l_core.edit.objective.edit_objective`, :func:`deferred_output`), the generator's cheap
layers recomputed in the backward pass, and freed CPU memory handed back at once (:mod:`t2l_core.runtime.cpu_heap`).

Precision (``autocast``): the generator's gradients must agree with fp32 ones (tests/test_precision.py,
bench/RESULTS.md). bf16 autocast of the generator does not (its BatchNorm-normalised 7-scale stack loses
the gradient's direction at initialisation), bf16 autocast of CLIP alone does, as in the authors' code
(fp32 generator, fp16 CLIP). So ``"auto"`` is ``"bf16-clip"`` on CUDA with TF32 matrix products, and fp32
on CPU, where bf16 matrix products and convolutions run *slower* than fp32 on CPUs without AMX (measured on
the development Xeon, bench/RESULTS.md). ``"bf16"``/``"fp16"`` autocast the generator too (not a default:
they fail the gradient agreement); ``"off"`` is plain fp32 everywhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
from dataclasses import dataclass, fields, replace
from typing import Callable, Iterator, Optional, Sequence

import torch

from ..edit.views import ViewAugmenter, ViewConfig
from .cpu_heap import mmap_threshold_scope, release_freed_heap

# off = fp32 everywhere; *-clip = autocast for the CLIP passes only (generator fp32); bf16/fp16 = both
AUTOCAST_MODES = ("auto", "off", "bf16", "fp16", "bf16-clip", "fp16-clip")
# what "auto" means: on CUDA (with bf16 support) CLIP in bf16 and the generator in fp32 with TF32; on CPU fp32
CUDA_DEFAULT_AUTOCAST = "bf16-clip"
CPU_DEFAULT_AUTOCAST = "off"


def resolve_autocast(mode: str, device: torch.device) -> str:
    """``mode`` with ``"auto"`` replaced by what it means on ``device``: ``"bf16-clip"`` on a CUDA device that
    supports bf16, ``"off"`` (fp32) elsewhere."""
    if mode not in AUTOCAST_MODES:
        raise ValueError(f"autocast must be one of {AUTOCAST_MODES}, got '{mode}'")
    if mode != "auto":
        return mode
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return CUDA_DEFAULT_AUTOCAST
    return CPU_DEFAULT_AUTOCAST


def autocast_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of the CLIP image passes for ``mode`` on ``device`` (None = no autocast)."""
    mode = resolve_autocast(mode, device)
    if mode == "off":
        return None
    if mode.startswith("fp16"):
        if device.type != "cuda":
            raise ValueError(f"autocast='{mode}' needs a CUDA device; use 'bf16-clip' or 'off' on CPU")
        return torch.float16
    return torch.bfloat16


def generator_autocast_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of the generator for ``mode`` on ``device``: only ``"bf16"``/``"fp16"`` autocast it."""
    return autocast_dtype(mode, device) if resolve_autocast(mode, device) in ("bf16", "fp16") else None


@contextlib.contextmanager
def tf32_scope(device: torch.device, enabled: bool) -> Iterator[None]:
    """Allow TF32 matrix products and convolutions on CUDA inside the block (restored after); a no-op on CPU."""
    if not enabled or device.type != "cuda":
        yield
        return
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    matmul.fp32_precision, conv.fp32_precision = "tf32", "tf32"
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` context for ``dtype``, or an explicitly disabled one when ``dtype`` is None."""
    if dtype is None:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def thread_scope(threads: int = 0) -> Iterator[None]:
    """Use ``threads`` intra-op threads inside the block (0 = leave the user's/torch's setting alone)."""
    if threads is None or threads <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def channels_last(x: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """``x`` in channels-last memory format (4-D tensors only; a no-op when disabled)."""
    return x.contiguous(memory_format=torch.channels_last) if enabled and x.ndim == 4 else x


def prepare_module(module: torch.nn.Module, channels_last_layout: bool,
                   inplace_activations: Optional[bool] = None) -> torch.nn.Module:
    """Channels-last memory format and/or in-place LeakyReLUs (changes ``module`` in place and returns it).

    In-place activations are safe in the generator: each LeakyReLU follows a BatchNorm or a convolution,
    whose backward passes do not need their outputs (autograd's version check would raise otherwise);
    it saves one full-resolution activation per LeakyReLU. ``inplace_activations`` None = as the layout.
    """
    if inplace_activations is None:
        inplace_activations = channels_last_layout
    if inplace_activations:
        for m in module.modules():
            if isinstance(m, torch.nn.LeakyReLU):
                m.inplace = True
    return module.to(memory_format=torch.channels_last) if channels_last_layout else module


def free_cuda_memory(device: torch.device) -> None:
    """Release cached CUDA blocks (before and after a long run); a no-op on CPU."""
    if device.type == "cuda" and torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def maybe_compile(module: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """``torch.compile(module, dynamic=True)`` when ``enabled`` (crop sizes change every step)."""
    if not enabled:
        return module
    return torch.compile(module, dynamic=True)


@dataclass(frozen=True)
class FastMeasures:
    """Which measures of the fast path are on. Each changes how a step is computed, never what.

    ``channels_last``: the generator in channels-last layout.
    ``inplace_activations``: the generator's LeakyReLUs in place (one feature map fewer kept per activation).
    ``fused_clip``: the CLIP image side through :func:`t2l_core.runtime.fused_clip.fast_clip`.
    ``staged_backward``: back-propagate CLIP pass by CLIP pass; extra examples regenerated for their backward.
    ``recompute_tails``: the generator's layers after each 3x3 convolution recomputed in the backward pass.
    ``mmap_large_blocks``: on CPU, blocks of 4 MiB and more mmapped while training, so freeing one gives its
    pages straight back (:func:`t2l_core.runtime.cpu_heap.mmap_threshold_scope`).
    ``trim_heap``: on CPU, the heap's free pages returned to the OS after each step
    (:func:`t2l_core.runtime.cpu_heap.release_freed_heap`).
    """

    channels_last: bool = True
    inplace_activations: bool = True
    fused_clip: bool = True
    staged_backward: bool = True
    recompute_tails: bool = True
    mmap_large_blocks: bool = True
    trim_heap: bool = True

    @classmethod
    def none(cls) -> "FastMeasures":
        return cls(**{f.name: False for f in fields(cls)})

    def without(self, *names: str) -> "FastMeasures":
        """A copy with the named measures off (e.g. ``without("trim_heap")``)."""
        return replace(self, **{n: False for n in names})


_FORCED_MEASURES: contextvars.ContextVar[Optional[FastMeasures]] = contextvars.ContextVar("forced_measures",
                                                                                        default=None)


@contextlib.contextmanager
def forced_measures(measures: FastMeasures) -> Iterator[None]:
    """Inside the block, fast-path runtimes use exactly ``measures`` (for benchmarks that ablate them)."""
    token = _FORCED_MEASURES.set(measures)
    try:
        yield
    finally:
        _FORCED_MEASURES.reset(token)


def channels_last_pays(device: torch.device | str = "cpu") -> bool:
    """Whether the generator runs faster in channels-last layout on ``device``.

    On CUDA, yes (cuDNN's NHWC kernels). On a CPU only where PyTorch dispatches AVX-512 kernels: there the
    layout is as fast or faster (bench/RESULTS.md), while on AVX2-only CPUs oneDNN's channels-last
    convolution backward made a 512 px step ~1.25x slower than the standard layout.
    """
    if torch.device(device).type != "cpu":
        return True
    return torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")


def default_measures(device: torch.device, save_memory: bool = False) -> FastMeasures:
    """The fast path's measures on ``device``: the fastest set that keeps the memory target.

    Measured one at a time at 512 px on AVX-512 and AVX2 CPUs (bench/fast_measures.py, bench/RESULTS.md):

    * the fused CLIP kernels, the staged backward and in-place activations pay everywhere (faster or free);
    * blocks of 4 MiB and more mmapped and the generator's recomputed tails cost ~5% each and keep the
      peak under 4 GiB at 512 px (without them it is ~4.5 and ~3.9 GiB);
    * trimming the heap after every step costs ~8% and saves nothing once large blocks are mmapped:
      only ``save_memory`` turns it on;
    * the channels-last layout is faster on some CPUs and much slower on others (AVX2 without AVX-512):
      on CPU it follows :func:`channels_last_pays`, from the CPU's vector instructions.

    ``save_memory`` turns every measure on (and the runtime adds activation checkpointing), channels-last
    included even where it is slower: the standard layout's convolution backward allocates im2col buffers
    that raise the peak again.
    """
    if save_memory:
        return FastMeasures()
    if device.type != "cpu":
        return FastMeasures(trim_heap=False, mmap_large_blocks=False)
    return FastMeasures(trim_heap=False, channels_last=channels_last_pays())


class EditRuntime:
    """How a training loop runs its CLIP and generator passes, from a config's speed fields.

    Usage in a loop (image and video editing)::

        rt = EditRuntime.from_config(clip, config)   # config.fast / autocast / compile / save_memory
        gen = rt.prepare(build_generator(...))       # channels-last in place when fast
        generate = rt.wrap(gen)                      # x [B,3,h,w] -> [B,4,h,w] fp32
        ... edit_objective(rt.clip, ...)             # fused image kernels when fast

    ``measures`` picks the fast path's measures one by one (benchmarks); None = :func:`default_measures`
    for the device and ``save_memory``.
    """

    def __init__(self, clip, fast: bool = True, autocast_mode: str = "auto", compile: bool = False,
                 save_memory: bool = False, measures: Optional[FastMeasures] = None) -> None:
        from .fused_clip import fast_clip

        self.device = clip.device
        self.fast = bool(fast)
        # save_memory (fast path only): every memory measure on, and CLIP block and full-resolution generator
        # activations recomputed in the backward pass (activation checkpointing; same values, more work)
        self.save_memory = self.fast and bool(save_memory)
        if not self.fast:
            measures = FastMeasures.none()
        elif measures is None:
            measures = _FORCED_MEASURES.get() or default_measures(self.device, self.save_memory)
        self.measures = measures
        self.clip_amp = autocast_dtype(autocast_mode, self.device) if self.fast else None  # CLIP image passes
        self.amp = generator_autocast_dtype(autocast_mode, self.device) if self.fast else None  # generator
        # TF32 on CUDA where the generator stays fp32 by default ("auto"): ~fp32 gradients, tensor-core speed
        self.tf32 = self.fast and autocast_mode == "auto"
        use_fused = measures.fused_clip or self.clip_amp is not None or self.save_memory
        self.clip = fast_clip(clip, self.clip_amp, checkpoint_blocks=self.save_memory) if use_fused else clip
        self.compile = self.fast and bool(compile)
        # staged backward: the objective back-propagates one CLIP pass at a time and extra examples are
        # re-generated for their backward pass, so activations of one pass/example are alive at a time
        self.staged_backward = measures.staged_backward
        on_cpu = self.device.type == "cpu"  # see t2l_core.runtime.cpu_heap
        self.mmap_large_blocks = measures.mmap_large_blocks and on_cpu
        self.trim_heap = measures.trim_heap and on_cpu

    @classmethod
    def from_config(cls, clip, config) -> "EditRuntime":
        return cls(clip, getattr(config, "fast", True), getattr(config, "autocast", "auto"),
                   getattr(config, "compile", False), getattr(config, "save_memory", False))

    def prepare(self, gen: torch.nn.Module) -> torch.nn.Module:
        if hasattr(gen, "recompute_top"):
            gen.recompute_top = self.save_memory
        if hasattr(gen, "recompute_tails"):  # cheap recomputation after each 3×3 convolution
            gen.recompute_tails = self.measures.recompute_tails
        return prepare_module(gen, self.measures.channels_last, self.measures.inplace_activations)

    def augmenter(self, views: ViewConfig) -> ViewAugmenter:
        """The CLIP-view augmenter; with ``save_memory`` it recomputes its intermediates in the backward pass.

        (Not on the plain fast path: with the staged backward the augmentations' intermediates are gone before
        the generator's backward pass, where the peak is, so redoing kornia's warps and colour jitter, ~0.1 s
        per 16 views on a CPU, would buy nothing there.)
        """
        return ViewAugmenter(views, recompute=self.save_memory)

    def heap_scope(self):
        """Context for the training loop (fast path, CPU): large freed blocks go straight back to the OS
        (:func:`t2l_core.runtime.cpu_heap.mmap_threshold_scope`); a no-op elsewhere. On CUDA with ``autocast="auto"``
        it also allows TF32 (:func:`tf32_scope`)."""
        stack = contextlib.ExitStack()
        stack.enter_context(mmap_threshold_scope(enabled=self.mmap_large_blocks))
        stack.enter_context(tf32_scope(self.device, self.tf32))
        return stack

    def end_step(self) -> None:
        """After each training step (fast path, CPU): give the heap pages freed during the step back to the OS
        (:func:`t2l_core.runtime.cpu_heap.release_freed_heap`); a no-op elsewhere."""
        if self.trim_heap:
            release_freed_heap()

    def wrap(self, gen: torch.nn.Module):
        fn = maybe_compile(gen, self.compile)
        device, amp, fast = self.device, self.amp, self.measures.channels_last

        def generate(x: torch.Tensor) -> torch.Tensor:
            with autocast(device, amp):
                # back to the standard layout: the loss side (crops, resizes, warps, CLIP) is faster on it
                return fn(channels_last(x, fast)).float().contiguous()

        return generate


def deferred_output(generate: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``generate(x)`` computed without a graph, as a leaf that collects the loss gradient in ``.grad``.

    Pair with :func:`backward_deferred`, which regenerates it with a graph and back-propagates that gradient
    (one more forward pass of the example, none of its activations kept meanwhile).
    """
    with torch.no_grad():
        out = generate(x)
    return out.requires_grad_(True)


def backward_deferred(generate: Callable[[torch.Tensor], torch.Tensor], inputs: Sequence[torch.Tensor],
                      outputs: Sequence[torch.Tensor], cancel_point: Callable[[], None] = lambda: None) -> None:
    """Back-propagate each :func:`deferred_output` leaf's ``.grad`` through a fresh ``generate(x)``, one at a time.

    The generator is deterministic for a given input (BatchNorm uses the input's own statistics), so the
    regenerated output equals the leaf and the parameter gradients equal those of a single backward pass.
    """
    for x, leaf in zip(inputs, outputs):
        cancel_point()
        if leaf.grad is not None:
            generate(x).backward(leaf.grad)
