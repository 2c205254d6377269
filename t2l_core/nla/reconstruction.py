"""Reconstructing the video from a layered atlas (NLA, Kasten et al. 2021, Sec. 3: each pixel is the
alpha-blend of its foreground and background atlas colours), streamed in pixel chunks, and its PSNR."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ..reductions import stable_sum
from .atlas_model import LayeredAtlas, frame_pixel_grid
from .losses import psnr
from .working_size import as_unit_float


@torch.no_grad()
def reconstruct_frame(model: LayeredAtlas, t: int, chunk: int = 65536, crop: Optional[tuple] = None) -> tuple:
    """Reconstruct one frame (or a crop of it), in pixel chunks.

    Args:
        model: the atlas.
        t: the frame index, 0..T-1.
        chunk: pixels per forward pass.
        crop: None, or (top, left, h, w) in pixels.

    Returns:
        (rgb [3,h,w] in 0..1, alpha [h,w] in 0..1), on the CPU.
    """
    cfg = model.cfg
    h, w = (crop[2], crop[3]) if crop is not None else (cfg.height, cfg.width)
    dev = next(model.parameters()).device
    xs, ys = frame_pixel_grid(cfg.height, cfg.width, dev, crop)
    rgb = torch.empty(xs.shape[0], 3, device=dev)
    alpha = torch.empty(xs.shape[0], device=dev)
    for s in range(0, xs.shape[0], chunk):
        x, y = xs[s:s + chunk], ys[s:s + chunk]
        out = model(x, y, torch.full_like(x, t, dtype=torch.long))
        rgb[s:s + chunk] = out["rgb"]
        alpha[s:s + chunk] = out["alpha"]
    return rgb.t().reshape(3, h, w).clamp(0, 1).cpu(), alpha.reshape(h, w).cpu()


@torch.no_grad()
def sampled_psnr(model: LayeredAtlas, frames16: torch.Tensor, idx: tuple, device: torch.device,
                 chunk: int = 65536) -> float:
    """PSNR of the reconstruction on a fixed sample of pixels (a cheap progress measure).

    Args:
        model: the atlas.
        frames16: [T,3,H,W] fp16 in 0..1, on the CPU.
        idx: (t, y, x), long tensors [n] on the CPU.
        device: where the model runs.
        chunk: pixels per forward pass.

    Returns:
        PSNR in dB (peak 1).
    """
    t, y, x = idx
    se = 0.0
    for s in range(0, t.shape[0], chunk):
        tt, yy, xx = t[s:s + chunk], y[s:s + chunk], x[s:s + chunk]
        out = model(xx.float().to(device), yy.float().to(device), tt.to(device))["rgb"].clamp(0, 1)
        se += float(stable_sum((out.cpu() - frames16[tt, :, yy, xx].float()) ** 2))
    return psnr(se / (3 * t.shape[0]))


class _UVExtents:
    """The running uv extent of each layer over reconstructed pixels (for the atlas bounding boxes): every
    background pixel, and foreground pixels with alpha >= a threshold."""

    def __init__(self, layers: tuple, fg_alpha_threshold: float) -> None:
        inf = torch.tensor([math.inf, math.inf])
        self.lo = {layer: inf.clone() for layer in layers}
        self.hi = {layer: -inf.clone() for layer in layers}
        self.lo_any, self.hi_any = inf.clone(), -inf.clone()
        self.threshold = fg_alpha_threshold

    def add(self, model: LayeredAtlas, out: dict) -> None:
        """Widen the extents by one chunk's model outputs ``out``."""
        for layer in model.layers():
            uv = model.to_uv(layer, out[f"m_{layer}"]).cpu()
            if layer == "fg":
                self.lo_any = torch.minimum(self.lo_any, uv.min(0).values)
                self.hi_any = torch.maximum(self.hi_any, uv.max(0).values)
                uv = uv[out["alpha"].cpu() >= self.threshold]
                if uv.shape[0] == 0:
                    continue
            self.lo[layer] = torch.minimum(self.lo[layer], uv.min(0).values)
            self.hi[layer] = torch.maximum(self.hi[layer], uv.max(0).values)

    def result(self) -> dict:
        """{layer: (u0, v0, u1, v1)}; a foreground with no pixel above the threshold uses all its pixels."""
        extents = {}
        for layer in self.lo:
            if not torch.isfinite(self.lo[layer]).all():
                self.lo[layer], self.hi[layer] = self.lo_any, self.hi_any
            lo, hi = self.lo[layer], self.hi[layer]
            extents[layer] = (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
        return extents


@torch.no_grad()
def reconstruct_video(model: LayeredAtlas, frames: Optional[torch.Tensor] = None, extents: Optional[dict] = None,
                      fg_alpha_threshold: float = 0.05, chunk: int = 65536,
                      on_frame: Optional[Callable[[int, int], None]] = None,
                      out_dtype: torch.dtype = torch.float32, keep: bool = True) -> tuple:
    """Reconstruct every frame (streamed), with the PSNR against ``frames`` and the layers' uv extents.

    Args:
        model: the atlas.
        frames: None, or the original [T,3,H,W] in 0..1 or uint8 (for the PSNR, frame by frame).
        extents: None, or a dict that receives {layer: (u0, v0, u1, v1)}: the uv extent of every background
            pixel and of foreground pixels with alpha >= ``fg_alpha_threshold`` (the same pass, for the atlas
            bounding boxes).
        fg_alpha_threshold: see ``extents``.
        chunk: pixels per forward pass.
        on_frame: ``(done, total)`` after each frame (progress and cancellation).
        out_dtype: float32, or uint8 (0..255; a quarter of the memory, for long videos; the PSNR is still
            measured on the unquantised reconstruction).
        keep: False keeps no frame (rgb and alpha are None): only the PSNR and extents are computed.

    Returns:
        (rgb [T,3,H,W], alpha [T,H,W], PSNR in dB vs ``frames`` or nan), on the CPU; 0..1 (or 0..255 as uint8).
    """
    cfg = model.cfg
    dev = next(model.parameters()).device
    T, H, W = cfg.frames, cfg.height, cfg.width
    rgb = torch.empty(T, 3, H, W, dtype=out_dtype) if keep else None
    alpha = torch.empty(T, H, W, dtype=out_dtype) if keep else None
    uv_extents = _UVExtents(model.layers(), fg_alpha_threshold)
    xs, ys = frame_pixel_grid(H, W, dev)
    se = 0.0
    for t in range(T):
        fr = torch.empty(xs.shape[0], 3)
        fa = torch.empty(xs.shape[0])
        for s in range(0, xs.shape[0], chunk):
            x, y = xs[s:s + chunk], ys[s:s + chunk]
            out = model(x, y, torch.full_like(x, t, dtype=torch.long))
            fr[s:s + chunk] = out["rgb"].clamp(0, 1).cpu()
            fa[s:s + chunk] = out["alpha"].cpu()
            uv_extents.add(model, out)
        frame_rgb, frame_alpha = fr.t().reshape(3, H, W), fa.reshape(H, W)
        if keep and out_dtype == torch.uint8:
            rgb[t] = (frame_rgb * 255).round().to(torch.uint8)
            alpha[t] = (frame_alpha.clamp(0, 1) * 255).round().to(torch.uint8)
        elif keep:
            rgb[t], alpha[t] = frame_rgb, frame_alpha
        if frames is not None:
            se += float(stable_sum((frame_rgb - as_unit_float(frames[t])) ** 2))
        if on_frame is not None:
            on_frame(t + 1, T)
    if extents is not None:
        extents.update(uv_extents.result())
    p = psnr(se / (T * 3 * H * W)) if frames is not None else float("nan")
    return rgb, alpha, p
