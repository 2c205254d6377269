"""A synthetic video with KNOWN motion, built from real skimage.data photographs.

Background: ``skimage.data.astronaut`` panned by the camera at a constant sub-pixel velocity (frame content
moves by ``-bg_velocity`` px per frame). Foreground: an elliptical patch of ``skimage.data.chelsea`` (soft,
anti-aliased edge) moving over it at ``fg_velocity`` px per frame. Exposed ground truth: the soft opacity,
binary masks, foreground centres, true forward flow and the point correspondences of both layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as skdata
from skimage.transform import resize


@dataclass
class SyntheticVideo:
    frames: torch.Tensor         # [T,3,H,W] float 0..1
    alpha: torch.Tensor          # [T,H,W] true soft foreground opacity
    masks: torch.Tensor          # [T,H,W] binary masks (alpha > 0.5), what a segmenter would give
    bg_origin: tuple             # (x, y) of frame pixel (0,0) in background-image px at t=0
    bg_velocity: tuple           # camera velocity in background-image px per frame
    fg_centers: torch.Tensor     # [T,2] (x, y) centre of the foreground ellipse in frame px
    fg_velocity: tuple
    fg_radii: tuple

    @property
    def shape(self) -> tuple:
        return tuple(self.frames.shape)

    def bg_point(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Background-image coordinates [N,2] seen at frame pixel (x, y, t) (ignoring occlusion)."""
        return torch.stack([x + self.bg_origin[0] + self.bg_velocity[0] * t,
                            y + self.bg_origin[1] + self.bg_velocity[1] * t], dim=-1)

    def fg_point(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Object-local coordinates [N,2] (relative to the ellipse centre) at frame pixel (x, y, t)."""
        c = self.fg_centers[t.long()]
        return torch.stack([x - c[:, 0], y - c[:, 1]], dim=-1)

    def bg_frame_displacement(self, t0: int, t1: int) -> tuple:
        """Where a background point at frame t0 moves to in frame t1 (dx, dy) in frame px."""
        return (-(t1 - t0) * self.bg_velocity[0], -(t1 - t0) * self.bg_velocity[1])

    def fg_frame_displacement(self, t0: int, t1: int) -> tuple:
        return ((t1 - t0) * self.fg_velocity[0], (t1 - t0) * self.fg_velocity[1])

    def true_flow(self, t: int) -> torch.Tensor:
        """Forward flow t -> t+1 [2,H,W]: the object's velocity where alpha(t) > 0.5, else the pan."""
        _, _, H, W = self.frames.shape
        flow = torch.empty(2, H, W)
        flow[0] = -self.bg_velocity[0]
        flow[1] = -self.bg_velocity[1]
        inside = self.alpha[t] > 0.5
        flow[0][inside] = self.fg_velocity[0]
        flow[1][inside] = self.fg_velocity[1]
        return flow


def _sample(img: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Bilinear sample img [C,h,w] at pixel coordinates px, py [H,W] (align_corners=True) -> [C,H,W]."""
    _, h, w = img.shape
    grid = torch.stack([2 * px / (w - 1) - 1, 2 * py / (h - 1) - 1], dim=-1)[None]
    return F.grid_sample(img[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def make_synthetic_video(frames: int = 8, height: int = 48, width: int = 64,
                         bg_velocity: tuple = (1.5, 0.5), fg_velocity: tuple = (-2.0, 1.0),
                         fg_radii: tuple | None = None, bg_zoom: float = 1.0) -> SyntheticVideo:
    """Build the video. ``bg_zoom`` > 1 shows a smaller part of the photograph (less fine detail)."""
    T, H, W = frames, height, width
    # background photograph, resized so the whole pan stays inside it
    bg = skdata.astronaut().astype(np.float32) / 255.0  # 512x512x3
    need_w = W + abs(bg_velocity[0]) * (T - 1) + 4
    need_h = H + abs(bg_velocity[1]) * (T - 1) + 4
    side = int(np.ceil(max(need_w, need_h, 1.6 * max(H, W)) * bg_zoom))
    bg = resize(bg, (side, side), anti_aliasing=True).astype(np.float32)
    bg_t = torch.from_numpy(bg).permute(2, 0, 1).contiguous()
    ox = 2.0 + (0 if bg_velocity[0] >= 0 else abs(bg_velocity[0]) * (T - 1))
    oy = 2.0 + (0 if bg_velocity[1] >= 0 else abs(bg_velocity[1]) * (T - 1))

    # foreground: the cat's face from chelsea inside a soft ellipse
    rx, ry = fg_radii if fg_radii is not None else (0.2 * W, 0.22 * H)
    cat = skdata.chelsea().astype(np.float32) / 255.0  # 300x451
    face = cat[20:260, 80:360]
    pw, ph = int(np.ceil(2 * rx + 6)), int(np.ceil(2 * ry + 6))
    face = resize(face, (ph, pw), anti_aliasing=True).astype(np.float32)
    face_t = torch.from_numpy(face).permute(2, 0, 1).contiguous()

    c0 = torch.tensor([W / 2 - fg_velocity[0] * (T - 1) / 2, H / 2 - fg_velocity[1] * (T - 1) / 2])
    centers = torch.stack([c0 + torch.tensor(fg_velocity, dtype=torch.float32) * t for t in range(T)])

    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    out = torch.empty(T, 3, H, W)
    alpha = torch.empty(T, H, W)
    for t in range(T):
        b = _sample(bg_t, xs + ox + bg_velocity[0] * t, ys + oy + bg_velocity[1] * t)
        dx, dy = xs - centers[t, 0], ys - centers[t, 1]
        f = _sample(face_t, dx + (pw - 1) / 2, dy + (ph - 1) / 2)
        r = torch.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
        a = (0.5 - (r - 1.0) * min(rx, ry)).clamp(0, 1)
        alpha[t] = a
        out[t] = a * f + (1 - a) * b
    return SyntheticVideo(frames=out.clamp(0, 1), alpha=alpha, masks=(alpha > 0.5).float(), bg_origin=(ox, oy),
                          bg_velocity=tuple(bg_velocity), fg_centers=centers, fg_velocity=tuple(fg_velocity),
                          fg_radii=(rx, ry))
