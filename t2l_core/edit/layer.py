"""A trained edit layer (the generator G_θ of paper section 3.1 after training): its weights plus the settings
it was trained with, applied to images and saved as safetensors.

``EditLayer.predict`` runs the generator on any image, one image per forward (so BatchNorm sees that image's
statistics exactly as during training, see generator.py). ``resolution="working"`` (default) runs it at the
size it was trained at (what the training previews showed) and brings the layer to the image's resolution
with a guided filter (:mod:`t2l_core.edit.layer_upsampling`); ``"native"`` runs it at the image's own
resolution, where the result is exactly a direct generator pass. Images whose pass does not fit the memory
budget are generated at the largest size that fits and upscaled, with a warning (or refused with a clear
message). Tiling is deliberately not used: the 7-scale network's receptive field covers the whole image and
its BatchNorm uses whole-image statistics, so tiles (with per-tile or fixed statistics) differ visibly from a
whole-image pass (mean |Δ| 0.03-0.13 measured on a 384x512 photo with 256 px tiles).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .compositing import composite, on_green_screen
from ..device import channels_last_pays
from .crops import short_side_size
from .generator import GeneratorConfig, SkipGenerator
from ..io.safetensors_files import read_metadata, read_tensors, write_tensors
from .layer_upsampling import guided_upsample

FORMAT = "t2l_edit_layer/1"
# where the generator runs: at the training working size (+ guided upsampling) or at the image's own size
RESOLUTIONS = ("working", "native")
# Measured peak of a no-grad fp32 forward on CPU is ~2.8 kB per input pixel; keep a margin.
BYTES_PER_PIXEL = 3200


def default_memory_budget(device: torch.device) -> int:
    """The bytes one generator forward may use.

    Args:
        device: where the generator runs.

    Returns:
        80% of the free CUDA memory, or on CPU half the available RAM (at most 8 GiB; 4 GiB when unknown).
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.8)
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return int(min(avail * 0.5, 8 * 2**30))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def estimate_bytes(h: int, w: int) -> int:
    """Approximate peak memory, in bytes, of one no-grad forward at h×w px."""
    return BYTES_PER_PIXEL * h * w


@dataclass
class LayerOutput:
    """Edit layer rendered on images: all ``[B,C,H,W]`` 0..1 at the input resolution."""

    color: torch.Tensor  # [B,3,H,W] edit colour C
    alpha: torch.Tensor  # [B,1,H,W] opacity α (1 = edit visible)
    composite: torch.Tensor  # [B,3,H,W] α·C + (1−α)·I
    greenscreen: torch.Tensor  # [B,3,H,W] α·C + (1−α)·green

    def rgba(self) -> torch.Tensor:
        """[B,4,H,W] in 0..1: colour and opacity."""
        return torch.cat([self.color, self.alpha], dim=1)


class EditLayer:
    """Trained generator weights + generator config + training info (prompts, sizes, steps...).

    Args:
        state_dict: the generator's weights (copied to CPU float32).
        generator_config: its architecture.
        info: what the training recorded (prompts, working size, steps...), stored in the layer file.
    """

    def __init__(self, state_dict: dict[str, torch.Tensor], generator_config: GeneratorConfig = GeneratorConfig(),
                 info: Optional[dict] = None) -> None:
        self.state_dict = {k: v.detach().to("cpu", torch.float32).clone() for k, v in state_dict.items()}
        self.generator_config = generator_config
        self.info = dict(info or {})
        self._cache: dict[str, SkipGenerator] = {}
        self.notes: list[str] = []  # messages about fallbacks taken by predict()

    # -- model ---------------------------------------------------------------------------------------
    def generator(self, device: torch.device | str = "cpu") -> SkipGenerator:
        """A generator with this layer's weights (cached per device; do not train it).

        Args:
            device: where it runs.

        Returns:
            The generator, without grad, in the memory layout that pays on ``device``.
        """
        key = str(torch.device(device))
        if key not in self._cache:
            with torch.inference_mode(False):
                g = SkipGenerator(self.generator_config)
                g.load_state_dict(self.state_dict)
                # in-place activations, channels-last convolutions where they pay (same values up to float
                # summation order; bench/RESULTS.md)
                g = g.to(device).requires_grad_(False)
                self._cache[key] = g.set_memory_layout(channels_last_pays(device), inplace_activations=True)
        return self._cache[key]

    def drop_generators(self) -> None:
        """Forget the generators :meth:`generator` built (their memory, on a GPU too, is freed once nothing else
        holds them); the weights stay in :attr:`state_dict` and a later pass builds a generator again. A host
        that keeps layers around between runs (ComfyUI's node cache) calls this after each use."""
        self._cache.clear()

    def _generate(self, gen: SkipGenerator, x: torch.Tensor) -> torch.Tensor:
        """One generator pass: [1,3,h,w] -> [1,4,h,w], contiguous."""
        return gen(x).contiguous()

    def working_side(self) -> Optional[int]:
        """Shorter side (px) of the image the layer was trained on (working image or atlas), None if unknown."""
        ws = self.info.get("working_size")
        if ws:
            return int(min(ws))
        size = self.info.get("size")
        return int(size) if size else None

    # -- inference -----------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: torch.Tensor, *, device: torch.device | str | None = None,
                size: Optional[int] = None, memory_budget: Optional[int] = None, oversize: str = "downscale",
                on_image: Optional[Callable[[int, int], None]] = None, resolution: str = "working",
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's colour and opacity on images, one generator pass per image.

        Args:
            images: [B,3,H,W] in 0..1; sides below 129 px are upscaled for the pass.
            device: where the generator runs; None = the images' device.
            size: shorter side of the pass. None = the working size (:meth:`working_side`, at most the image's)
                for ``"working"``, the image's own for ``"native"``, where an int is resized back (bilinear).
            memory_budget: bytes one pass may use; None = :func:`default_memory_budget`.
            oversize: a pass over budget is generated at the largest size that fits and upscaled, with a
                warning also recorded in ``self.notes`` (``"downscale"``), or raises MemoryError (``"error"``).
            on_image: called as ``on_image(i, B)`` after each image (progress / cancellation).
            resolution: ``"working"``: a smaller pass is brought to the image's size by :func:`guided_upsample`
                (opacity 0 stays exactly 0); ``"native"``: see ``size``.

        Returns:
            colour [B,3,H,W] and opacity [B,1,H,W] in 0..1, on the images' device.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B,3,H,W], got {tuple(images.shape)}")
        if oversize not in ("downscale", "error"):
            raise ValueError(f"oversize must be 'downscale' or 'error', got '{oversize}'")
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got '{resolution}'")
        dev = torch.device(device) if device is not None else images.device
        gen = self.generator(dev)
        budget = memory_budget if memory_budget is not None else default_memory_budget(dev)
        colors, alphas = [], []
        h, w = images.shape[-2:]
        working = resolution == "working"
        if working and not size:
            size = min(self.working_side() or min(h, w), min(h, w))
        for i in range(images.shape[0]):
            full = images[i : i + 1].to(dev, torch.float32)
            x = full
            target = size if size else min(h, w)
            target = max(target, gen.min_size)
            if target != min(h, w):  # the working image's size rule (torchvision Resize: long side truncated)
                th, tw = short_side_size(h, w, target)
                x = F.interpolate(x, size=(max(gen.min_size, th), max(gen.min_size, tw)),
                                  mode="bilinear", align_corners=False, antialias=True)
            y = self._run(gen, x, budget, oversize)
            if working and y.shape[-2] <= h and y.shape[-1] <= w and tuple(y.shape[-2:]) != (h, w):
                color, alpha = guided_upsample(y[:, :3], y[:, 3:], full)
            else:
                if tuple(y.shape[-2:]) != (h, w):
                    y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
                color, alpha = y[:, :3], y[:, 3:]
            colors.append(color.to(images.device))
            alphas.append(alpha.to(images.device))
            if on_image is not None:
                on_image(i + 1, images.shape[0])
        return torch.cat(colors), torch.cat(alphas)

    def render(self, images: torch.Tensor, background: Optional[torch.Tensor] = None, **kwargs) -> LayerOutput:
        """:meth:`predict` plus the composite (paper eq. 1) and the green screen (eq. 4).

        Args:
            images: [B,3,H,W] in 0..1.
            background: [B,3,H,W] in 0..1 under the edit; None = the images.
            **kwargs: passed to :meth:`predict`.

        Returns:
            The four [B,C,H,W] images at the input resolution.
        """
        color, alpha = self.predict(images, **kwargs)
        bg = images if background is None else background
        return LayerOutput(color, alpha, composite(color, alpha, bg.to(color)), on_green_screen(color, alpha))

    def _run(self, gen: SkipGenerator, x: torch.Tensor, budget: int, oversize: str) -> torch.Tensor:
        """One pass within ``budget`` bytes: [1,3,h,w] -> [1,4,h,w] (downscaled and upscaled, or MemoryError)."""
        h, w = x.shape[-2:]
        if estimate_bytes(h, w) <= budget:
            return self._generate(gen, x)
        s = math.sqrt(budget / estimate_bytes(h, w))
        sh, sw = int(h * s), int(w * s)
        if oversize == "error" or min(sh, sw) < gen.min_size:
            raise MemoryError(
                f"the {w}x{h} px image needs about {estimate_bytes(h, w) / 2**30:.1f} GiB for the edit layer but the "
                f"memory budget is {budget / 2**30:.2f} GiB. Use a smaller output size (the 'size' option, e.g. "
                f"{max(gen.min_size, int(min(h, w) * s))}), allow oversize='downscale', or free memory."
            )
        msg = (f"edit layer: {w}x{h} px does not fit the memory budget ({budget / 2**30:.2f} GiB); generated at "
               f"{sw}x{sh} and upscaled to {w}x{h}")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        self.notes.append(msg)
        small = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(self._generate(gen, small), size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)

    # -- files ---------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the layer as safetensors (weights + JSON metadata), atomically.

        Args:
            path: the file to write; its folder is created.

        Returns:
            The path written.
        """
        meta = {"format": FORMAT, "generator_config": json.dumps(self.generator_config.to_dict()),
                "info": json.dumps(self.info)}
        return write_tensors(path, self.state_dict, meta)

    @classmethod
    def check_file(cls, path: str | Path, remedy: str = "") -> dict:
        """The metadata of a layer file, read from its header only.

        Args:
            path: the file.
            remedy: what the user should do, appended to error messages.

        Returns:
            ``{key: str}``, the safetensors metadata.

        Raises:
            ValueError: naming the file, when it is missing, empty, truncated, or another kind of file.
        """
        p = Path(path)
        meta = read_metadata(p, "edit layer", remedy)
        if meta.get("format") != FORMAT:
            found = f"format tag '{meta['format']}'" if meta.get("format") else "no Text2LIVE format tag"
            raise ValueError(f"'{p}' is not a Text2LIVE edit layer ({found}, expected '{FORMAT}')."
                             + (f" {remedy}" if remedy else ""))
        return meta

    @classmethod
    def load(cls, path: str | Path, remedy: str = "") -> "EditLayer":
        """Read a layer written by :meth:`save`.

        Args:
            path: the file.
            remedy: what the user should do, appended to error messages.

        Returns:
            The layer.

        Raises:
            ValueError: as :meth:`check_file`.
        """
        cls.check_file(path, remedy)
        state, meta = read_tensors(path, "edit layer", remedy)
        return cls(state, GeneratorConfig(**json.loads(meta["generator_config"])), json.loads(meta.get("info", "{}")))

    def __repr__(self) -> str:
        prompt = self.info.get("prompt")
        return f"EditLayer(prompt={prompt!r}, steps={self.info.get('steps')})"
