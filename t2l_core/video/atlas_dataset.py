"""Training examples for a text-driven atlas edit (paper section 3.2, appendix A.4, eqs. 11-12).

One example = a 3-frame segment (t - k, t, t + k) of the video, a spatial crop in each frame and the atlas
crop those crops map to:

- foreground: each frame's crop lies inside that frame's mask box (the bbox of NLA opacity >= 0.95, grown
  by 30 px, each side at least the generator's minimum size); its size is U[0.95, 1] of the box, at least
  the minimum size;
- background: one window of U[0.95, 1] of the frame, shared by the three frames;
- atlas crop = the bounding box (in texels of the discretised atlas) of the uv of every pixel of the three
  crops, clipped to the atlas and grown to the generator's minimum size;
- each crop's uv is expressed relative to the atlas crop as ``grid_sample`` coordinates
  (``align_corners=False``: texel i spans [i, i+1), so no half-texel shift);
- one flip decision per example: the atlas crop and every frame crop are mirrored, u is negated and the
  uv map mirrored, so sampling the flipped atlas crop gives exactly the flipped frame crop;
- colour jitter (0.1 on brightness/contrast/saturation/hue) with p=0.1 on the atlas crop and on each
  frame's direct-pass input.

Frame-side inputs: foreground = original frame x NLA opacity; background = the NLA background
reconstruction (atlas colour at the background uv). The whole atlas is added every ``full_image_every`` steps
(background: downscaled by 3 with antialiasing, the paper's memory trick).

Only the three crops of a step are evaluated through the atlas model: nothing per-pixel is stored for the
whole video (the per-frame mask boxes are 4 integers per frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import kornia.augmentation as K
import torch
import torch.nn.functional as F

from ..nla.atlas_model import LayeredAtlas
from ..nla.render import AtlasBBox, discretise_atlas, frame_alpha, frame_uv
from ..edit.crops import DatasetConfig
from ..edit.generator import MIN_SIZE
from ..seeding import forked_rng, randint, uniform
from ..settings import setting

LAYER_NAMES = {"fg": "fg", "foreground": "fg", "bg": "bg", "background": "bg"}


def layer_key(layer: str) -> str:
    """The short name of an atlas layer.

    Args:
        layer: ``"fg"``/``"foreground"`` or ``"bg"``/``"background"`` (any case).

    Returns:
        ``"fg"`` or ``"bg"``.

    Raises:
        ValueError: another name.
    """
    key = LAYER_NAMES.get(str(layer).strip().lower())
    if key is None:
        raise ValueError(f"layer must be 'fg' (foreground) or 'bg' (background), got {layer!r}")
    return key


@dataclass
class AtlasSamplingConfig:
    """How a step's example is taken from a layer's atlas (the authors' video settings, paper appendix A.4)."""

    frame_offset: int = setting(2, "Frames t-k, t, t+k make one example.", min=0)  # center_frame_distance
    mask_threshold: float = setting(0.95, "Foreground mask box: the NLA opacity >= this, grown by mask_border.",
                                    min=0.0, max=1.0)
    mask_border: int = setting(30, "Px the foreground mask box grows by on every side.", min=0)
    bg_full_downscale: float = setting(3.0, "The whole background atlas is downscaled by this (antialiased) on "
                                            "whole-atlas steps.", min=1.0)
    atlas_scale: float = setting(1.0, "Training atlas texels per native texel (native: about one per frame pixel).",
                                 min=0.0)


def video_crops() -> DatasetConfig:
    """The crop settings of atlas edits: the image ones with the authors' video ``crop_min`` (crops_min_cover).

    Returns:
        The settings; ``size`` and ``scale_*`` are not used by atlas edits.
    """
    return DatasetConfig(crop_min=0.95)


@dataclass
class VideoDatasetConfig:
    """What the atlas dataset samples with: the layer, the atlas sampling and crop settings and the generator's
    minimum input size (each side of every generator input)."""

    layer: str = "fg"
    sampling: AtlasSamplingConfig = field(default_factory=AtlasSamplingConfig)
    crops: DatasetConfig = field(default_factory=video_crops)  # the whole atlas joins every full_image_every steps
    min_size: int = MIN_SIZE


@dataclass
class FrameCrop:
    """One frame's part of an example. All tensors are on the training device."""

    t: int
    box: tuple                       # (top, left, h, w) in frame px
    grid: torch.Tensor               # [1,h,w,2] grid_sample coords of each pixel in the atlas crop (align_corners=False)
    nla_alpha: torch.Tensor          # [1,1,h,w] NLA foreground opacity (1 for a background-only atlas is never used)
    image: torch.Tensor              # [1,3,h,w] direct-pass input: fg = frame x opacity, bg = bg reconstruction


@dataclass
class VideoSample:
    """One step's atlas example: the atlas crop I_Ac (eq. 12) and the three frame crops it maps to (eq. 11)."""

    atlas_crop: torch.Tensor         # [1,3,ha,wa] (jittered, flipped)
    atlas_box: tuple                 # (top, left, h, w) in training-atlas texels (before flipping)
    frames: list                     # [FrameCrop] x 3 (t - k, t, t + k)
    flipped: bool
    direct: int                      # index into ``frames`` of the crop given directly to the generator
    full: Optional[torch.Tensor] = None  # [1,3,H,W] the whole atlas on whole-atlas steps


def training_bbox(bbox: AtlasBBox, atlas_scale: float = 1.0, min_size: int = MIN_SIZE) -> AtlasBBox:
    """The framing of the training atlas: the same uv rectangle with more or fewer texels.

    Args:
        bbox: the NLA's discretised atlas framing.
        atlas_scale: texels per native texel, > 0.
        min_size: both sides are raised to at least this many texels (the generator's minimum input).

    Returns:
        The framing.

    Raises:
        ValueError: ``atlas_scale`` <= 0.
    """
    s = float(atlas_scale)
    if s <= 0:
        raise ValueError(f"atlas_scale must be > 0, got {atlas_scale}")
    s = max(s, min_size / min(bbox.width, bbox.height))
    w = max(min_size, int(round(bbox.width * s)))
    h = max(min_size, int(round(bbox.height * s)))
    return AtlasBBox(bbox.layer, bbox.u0, bbox.v0, bbox.u1, bbox.v1, w, h)


@torch.no_grad()
def mask_boxes(model: LayeredAtlas, threshold: float = 0.95, border: int = 30, min_size: int = MIN_SIZE) -> list:
    """The foreground box of every frame (paper appendix A.4).

    A frame without pixels above ``threshold`` uses the pixels above half its peak opacity, or the whole
    frame if it shows no foreground.

    Args:
        model: the fitted atlas.
        threshold: the NLA opacity the box covers, 0..1.
        border: px the box grows by on every side (clipped to the frame).
        min_size: each side is padded (around its centre, inside the frame) to at least this.

    Returns:
        Per frame (top, left, h, w) in frame px.
    """
    H, W = model.cfg.height, model.cfg.width
    boxes = []
    for t in range(model.cfg.frames):
        a = frame_alpha(model, t)
        sel = a >= threshold
        if not sel.any():
            peak = float(a.max())
            sel = a >= 0.5 * peak if peak >= 0.05 else torch.ones_like(sel)
        ys = torch.nonzero(sel.any(1)).flatten()
        xs = torch.nonzero(sel.any(0)).flatten()
        y0, y1 = max(0, int(ys[0]) - border), min(H, int(ys[-1]) + 1 + border)
        x0, x1 = max(0, int(xs[0]) - border), min(W, int(xs[-1]) + 1 + border)
        y0, y1 = _pad_span(y0, y1, min_size, H)
        x0, x1 = _pad_span(x0, x1, min_size, W)
        boxes.append((y0, x0, y1 - y0, x1 - x0))
    return boxes


def _pad_span(lo: int, hi: int, size: int, limit: int) -> tuple:
    """Grow [lo, hi) around its centre to at least ``size`` (at most ``limit``), kept inside [0, limit)."""
    size = min(size, limit)
    if hi - lo >= size:
        return lo, hi
    lo = max(0, min((lo + hi - size) // 2, limit - size))
    return lo, lo + size


def _crop_side(g: torch.Generator, side: int, cover: float, min_size: int) -> int:
    """A crop side ~ U[round(cover·side), side], at least ``min(min_size, side)``."""
    return max(randint(g, int(round(cover * side)), side), min(min_size, side))


class VideoAtlasDataset:
    """Samples :class:`VideoSample` s for one layer of a fitted atlas (paper appendix A.4).

    Args:
        model: the fitted atlas.
        bbox: the layer's discretised atlas framing.
        frames: [T,3,H,W] uint8 or float 0..1 on the CPU, the original frames (the foreground input).
        config: the sampling settings.
        device: where the examples go.
        on_progress: None, or called as ``on_progress(i, n)`` while the atlas image is sampled.

    Raises:
        ValueError: no foreground layer to edit, frames too small or not the atlas's.
    """

    def __init__(self, model: LayeredAtlas, bbox: AtlasBBox, frames: torch.Tensor, config: VideoDatasetConfig,
                 device: torch.device | str = "cpu", on_progress=None) -> None:
        self.model = model
        self.cfg = config
        self.layer = layer_key(config.layer)
        self.device = torch.device(device)
        T, H, W = model.cfg.frames, model.cfg.height, model.cfg.width
        if self.layer == "fg" and model.map_fg is None:
            raise ValueError("this atlas has no foreground layer (it was fitted without masks): edit the background, "
                             "or fit the atlas again with masks")
        if min(H, W) < config.min_size:
            raise ValueError(f"the video is {W}x{H} px but the edit generator needs at least {config.min_size} px on "
                             "each side: fit the atlas on larger frames (or use a generator with fewer scales)")
        if tuple(frames.shape) != (T, 3, H, W):
            raise ValueError(f"frames are {tuple(frames.shape)} but the atlas was fitted on {T} frames of {W}x{H}")
        self.frames = frames
        self.bbox = training_bbox(bbox, config.sampling.atlas_scale, config.min_size)
        self.atlas = discretise_atlas(model, self.bbox, on_chunk=on_progress)[None].to(self.device)  # [1,3,Ha,Wa]
        sampling = config.sampling
        self.boxes = (mask_boxes(model, sampling.mask_threshold, sampling.mask_border, config.min_size)
                      if self.layer == "fg" else None)
        self.offset = max(0, min(int(config.sampling.frame_offset), (T - 1) // 2))
        j = config.crops.jitter  # brightness = contrast = saturation = hue strength
        self.jitter = K.ColorJitter(j, j, j, j, p=config.crops.jitter_p)
        self._full: Optional[torch.Tensor] = None

    # ---------------------------------------------------------------------------------------------
    def full_atlas(self) -> torch.Tensor:
        """The whole-atlas example [1,3,h,w]: the atlas, background downscaled by ``bg_full_downscale``."""
        if self._full is None:
            x = self.atlas
            if self.layer == "bg" and self.cfg.sampling.bg_full_downscale > 1:
                Ha, Wa = x.shape[-2:]
                s = max(1.0 / self.cfg.sampling.bg_full_downscale, self.cfg.min_size / min(Ha, Wa))
                if s < 1:
                    x = F.interpolate(x, size=(max(self.cfg.min_size, round(Ha * s)), max(self.cfg.min_size, round(Wa * s))),
                                      mode="bilinear", align_corners=False, antialias=True)
            self._full = x
        return self._full

    def frame_boxes(self, g: torch.Generator, ts: list) -> list:
        """The frame crops of frames ``ts``.

        Args:
            g: the RNG.
            ts: the frame indices.

        Returns:
            Per frame (top, left, h, w) in frame px: one window shared by all frames (background), or one
            inside each frame's mask box (foreground).
        """
        H, W = self.model.cfg.height, self.model.cfg.width
        c, crop_min = self.cfg, self.cfg.crops.crop_min
        if self.layer == "bg":
            h, w = _crop_side(g, H, crop_min, c.min_size), _crop_side(g, W, crop_min, c.min_size)
            top, left = randint(g, 0, H - h), randint(g, 0, W - w)
            return [(top, left, h, w)] * len(ts)
        out = []
        for t in ts:
            y0, x0, box_h, box_w = self.boxes[t]
            h, w = _crop_side(g, box_h, crop_min, c.min_size), _crop_side(g, box_w, crop_min, c.min_size)
            out.append((y0 + randint(g, 0, box_h - h), x0 + randint(g, 0, box_w - w), h, w))
        return out

    @torch.no_grad()
    def _frame_input(self, t: int, box: tuple, uv: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The direct-pass input [3,h,w] of a frame crop: frame x opacity (fg) or the NLA reconstruction (bg)."""
        top, left, h, w = box
        if self.layer == "fg":
            f = self.frames[t, :, top:top + h, left:left + w]
            f = f.float() / 255.0 if f.dtype == torch.uint8 else f.float()
            return (f * alpha[None]).clamp(0, 1)
        dev = next(self.model.parameters()).device
        rgb = self.model.colour_at(uv.reshape(-1, 2).to(dev)).t().reshape(3, h, w)
        return rgb.clamp(0, 1).cpu()

    @torch.no_grad()
    def sample(self, step: int, g: torch.Generator) -> VideoSample:
        """One step's example (paper eqs. 11-12).

        Args:
            step: 0-based; the whole atlas joins when ``(step + 1) % full_image_every == 0``.
            g: the RNG of all of the example's randomness, kornia's included.

        Returns:
            The example, its tensors on the dataset's device.
        """
        T = self.model.cfg.frames
        k = self.offset
        t = randint(g, k, T - 1 - k)
        ts = [t - k, t, t + k]
        flipped = uniform(g, 0.0, 1.0) < self.cfg.crops.flip_p
        boxes = self.frame_boxes(g, ts)
        uvs, alphas, pxs = [], [], []
        for ti, box in zip(ts, boxes):
            uv = frame_uv(self.model, ti, self.layer, box)  # [h,w,2]
            uvs.append(uv)
            alphas.append(frame_alpha(self.model, ti, box) if self.layer == "fg" else None)
            pxs.append(self.bbox.to_pixels(uv))
        Ha, Wa = self.atlas.shape[-2:]
        lo = torch.stack([p.reshape(-1, 2).min(0).values for p in pxs]).min(0).values
        hi = torch.stack([p.reshape(-1, 2).max(0).values for p in pxs]).max(0).values
        x0, x1 = _pad_span(max(0, min(Wa - 1, math.floor(float(lo[0])))), max(1, min(Wa, math.ceil(float(hi[0])))),
                           self.cfg.min_size, Wa)
        y0, y1 = _pad_span(max(0, min(Ha - 1, math.floor(float(lo[1])))), max(1, min(Ha, math.ceil(float(hi[1])))),
                           self.cfg.min_size, Ha)
        origin = torch.tensor([x0, y0], dtype=torch.float32)
        extent = torch.tensor([x1 - x0, y1 - y0], dtype=torch.float32)
        atlas_crop = self.atlas[:, :, y0:y1, x0:x1]
        frames = []
        for ti, box, uv, a, px in zip(ts, boxes, uvs, alphas, pxs):
            grid = 2.0 * (px - origin) / extent - 1.0  # [h,w,2]
            image = self._frame_input(ti, box, uv, a)[None]
            alpha = (a if a is not None else torch.zeros(box[2], box[3]))[None, None]
            if flipped:
                grid = grid.flip(1) * torch.tensor([-1.0, 1.0])
                image, alpha = image.flip(-1), alpha.flip(-1)
            frames.append(FrameCrop(ti, box, grid[None].to(self.device), alpha.to(self.device), image.to(self.device)))
        if flipped:
            atlas_crop = atlas_crop.flip(-1)
        with forked_rng(g):
            atlas_crop = self.jitter(atlas_crop)
            for fc in frames:
                fc.image = self.jitter(fc.image)
        direct = randint(g, 0, len(frames) - 1)
        full = None
        every = self.cfg.crops.full_image_every
        if every > 0 and (step + 1) % every == 0:
            full = self.full_atlas()
        return VideoSample(atlas_crop.contiguous(), (y0, x0, y1 - y0, x1 - x0), frames, flipped, direct, full)
