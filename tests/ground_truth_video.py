"""Ground-truth videos for the layered atlas: a photograph cut-out that bends and turns over a panned photograph.

Every frame is rendered from two canonical textures through exactly known per-pixel correspondences, so
where each canonical texture point is in each frame is known to float64 precision.

Layers and their canonical textures
-----------------------------------
- background: ``skimage.data.coffee`` (or ``rocket`` for portrait video) upsampled so the camera path stays
  inside it; canonical coordinates are background-texture pixels (x, y).
- foreground: the face of ``skimage.data.chelsea`` inside an ellipse with an anti-aliased edge (RGBA texture);
  canonical coordinates are foreground-texture pixels (x, y), about one texture pixel per frame pixel.

Correspondences (frame pixel q = (x, y) of frame t, float64)
------------------------------------------------------------
- background: ``c_bg = o(t) + z(t) R(phi(t)) q`` (camera pan, roll and zoom; a similarity, inverted exactly);
- foreground (the object's backward warp, smooth and invertible on the object)::

      u  = R(-theta(t)) (q - centre(t)) / r          object-local, about [-1, 1] on the object
      w  = (u_x / s(t), u_y s(t))                     area-preserving stretch ("breathing")
      n  = (w_x + a(t) sin(pi/2 w_y + pi/4), w_y + b(t) w_x^2)   bending: a sideways S-bend and a droop
      c_fg = n r + texture centre

  ``rigid`` motion has a = b = 0 and s = 1 (a rotating, translating rigid cut-out). The warp's Jacobian
  determinant stays above about 0.8 on the object (no fold, no self-occlusion); frame positions of canonical
  points (the forward warp) are found by Newton's method on it to ~1e-9 px.

A frame is ``alpha rgb_fg(c_fg) + (1 - alpha) rgb_bg(c_bg)`` with ``alpha = texture_alpha(c_fg)``, every
texture sampled with ``F.grid_sample`` (bilinear, float64) at the exact correspondences.

Variants (:func:`make_ground_truth_video`): ``rigid``, ``nonrigid`` (bending and turning, fully in view),
``exit`` (non-rigid, drifting out of the frame until half of it is outside in the last frame, so part of
it is occluded by the frame border in about the second half of the video), ``bg_only``
(camera motion only, no foreground). Portrait video: pass ``height > width`` (e.g. 768 x 432).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as skdata
from skimage.transform import resize

VARIANTS = ("rigid", "nonrigid", "exit", "bg_only")
DT = torch.float64


def _rot(theta: torch.Tensor) -> torch.Tensor:
    """[...] angles -> [...,2,2] rotation matrices [[cos, -sin], [sin, cos]] (pixel space: x right, y down)."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def sample_texture(tex: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of a texture [C,h,w] at texture pixel coordinates c [...,2] (x, y; pixel centres at
    integers, align_corners=True) -> [C,...]; zeros outside the texture."""
    _, h, w = tex.shape
    shp = c.shape[:-1]
    g = c.reshape(1, -1, 1, 2).to(tex.dtype)
    g = torch.stack([2 * g[..., 0] / (w - 1) - 1, 2 * g[..., 1] / (h - 1) - 1], -1)
    out = F.grid_sample(tex[None], g, mode="bilinear", padding_mode="zeros", align_corners=True)[0, :, :, 0]
    return out.reshape(tex.shape[0], *shp)


@dataclass
class Motion:
    """Per-frame motion parameters (float64 tensors of length T)."""

    cam_origin: torch.Tensor     # [T,2] background texture px of frame pixel (0, 0)
    cam_roll: torch.Tensor       # [T] radians
    cam_zoom: torch.Tensor       # [T] background texture px per frame px
    centre: torch.Tensor         # [T,2] object centre in frame px
    theta: torch.Tensor          # [T] object turn (radians)
    stretch: torch.Tensor        # [T] s(t)
    bend_a: torch.Tensor         # [T] sideways S-bend amplitude (object radii)
    bend_b: torch.Tensor         # [T] droop amplitude (object radii)


@dataclass
class GroundTruthVideo:
    """A rendered video and its exact correspondences. Frames [T,3,H,W] float32 0..1, alpha [T,H,W]."""

    variant: str
    frames: torch.Tensor
    alpha: torch.Tensor
    masks: Optional[torch.Tensor]        # [T,H,W] alpha > 0.5 (None for bg_only)
    bg_texture: torch.Tensor             # [3,hb,wb] float64
    fg_texture: Optional[torch.Tensor]   # [4,hf,wf] float64 (rgb, alpha); None for bg_only
    motion: Motion
    radius: float                        # object radius r in frame px (also fg texture px per object unit)
    fg_tex_centre: tuple                 # (x, y) texture px of the object centre
    height: int
    width: int

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def size(self) -> tuple:
        return (self.height, self.width)

    @property
    def layers(self) -> tuple:
        return ("bg",) if self.fg_texture is None else ("fg", "bg")

    # ---------------------------------------------------------------- frame -> canonical
    def canonical(self, layer: str, q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Canonical texture coordinates [N,2] of frame points q [N,2] (x, y; float) at frames t [N] (long)."""
        q = q.to(DT)
        m = self.motion
        if layer == "bg":
            A = m.cam_zoom[t][:, None, None] * _rot(m.cam_roll[t])
            return m.cam_origin[t] + (A @ q[:, :, None])[:, :, 0]
        if layer != "fg" or self.fg_texture is None:
            raise ValueError(f"layer must be 'fg' or 'bg' (and this video has layers {self.layers}), got {layer!r}")
        d = q - m.centre[t]
        u = (_rot(-m.theta[t]) @ d[:, :, None])[:, :, 0] / self.radius
        s = m.stretch[t]
        wx, wy = u[:, 0] / s, u[:, 1] * s
        nx = wx + m.bend_a[t] * torch.sin(0.5 * math.pi * wy + 0.25 * math.pi)
        ny = wy + m.bend_b[t] * wx * wx
        return torch.stack([nx * self.radius + self.fg_tex_centre[0], ny * self.radius + self.fg_tex_centre[1]], -1)

    def canonical_frame(self, layer: str, t: int) -> torch.Tensor:
        """Canonical coordinates of every pixel of frame t: [H,W,2] float64."""
        H, W = self.size
        ys, xs = torch.meshgrid(torch.arange(H, dtype=DT), torch.arange(W, dtype=DT), indexing="ij")
        q = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)
        return self.canonical(layer, q, torch.full((q.shape[0],), t, dtype=torch.long)).reshape(H, W, 2)

    def jacobian(self, layer: str, q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """d canonical / d q [N,2,2] (autograd, float64)."""
        q = q.to(DT).detach().requires_grad_(True)
        with torch.enable_grad():
            c = self.canonical(layer, q, t)
            gx = torch.autograd.grad(c[:, 0].sum(), q, retain_graph=True)[0]
            gy = torch.autograd.grad(c[:, 1].sum(), q)[0]
        return torch.stack([gx, gy], 1).detach()

    # ---------------------------------------------------------------- canonical -> frame
    def frame_position(self, layer: str, c: torch.Tensor, t: torch.Tensor, iters: int = 30) -> torch.Tensor:
        """Frame position [N,2] (x, y) of canonical points c [N,2] at frames t [N]: the exact inverse."""
        c = c.to(DT)
        m = self.motion
        if layer == "bg":
            A = m.cam_zoom[t][:, None, None] * _rot(m.cam_roll[t])
            return torch.linalg.solve(A, (c - m.cam_origin[t])[:, :, None])[:, :, 0]
        # start from the unbent inverse, then Newton on the bending
        n = (c - torch.tensor(self.fg_tex_centre, dtype=DT)) / self.radius
        s = m.stretch[t]
        u = torch.stack([n[:, 0] * s, n[:, 1] / s], -1)
        q = m.centre[t] + (_rot(m.theta[t]) @ u[:, :, None])[:, :, 0] * self.radius
        for _ in range(iters):
            r = self.canonical("fg", q, t) - c
            J = self.jacobian("fg", q, t)
            q = q - torch.linalg.solve(J, r[:, :, None])[:, :, 0]
            if float(r.abs().max()) < 1e-10:
                break
        return q

    def alpha_at(self, q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """True foreground opacity [N] at frame points q [N,2] (any float position), frames t [N]."""
        if self.fg_texture is None:
            return torch.zeros(q.shape[0], dtype=DT)
        return sample_texture(self.fg_texture[3:], self.canonical("fg", q, t))[0]

    def visible(self, layer: str, q: torch.Tensor, t: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
        """[N] bool: frame point q of frame t shows ``layer`` purely (and its neighbours at +-``margin`` px
        too), inside the frame by ``margin``: fg alpha >= 0.99 for fg, <= 0.01 for bg."""
        H, W = self.size
        ok = (q[:, 0] >= margin) & (q[:, 0] <= W - 1 - margin) & (q[:, 1] >= margin) & (q[:, 1] <= H - 1 - margin)
        for dx, dy in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-1, 1), (1, -1)):
            a = self.alpha_at(q + torch.tensor([dx * margin, dy * margin], dtype=DT), t)
            ok &= (a >= 0.99) if layer == "fg" else (a <= 0.01)
        return ok


# -------------------------------------------------------------------------------------------------------------
# construction

def _photo(name: str) -> torch.Tensor:
    img = getattr(skdata, name)().astype(np.float64) / 255.0
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()


def _resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    out = resize(img.permute(1, 2, 0).numpy(), (h, w), anti_aliasing=True, order=3)
    return torch.from_numpy(np.clip(out, 0, 1)).permute(2, 0, 1).contiguous().to(DT)


def make_motion(variant: str, frames: int, height: int, width: int, radius: float) -> Motion:
    """Smooth motion of a variant (see the module docstring), scaled to the frame size."""
    T, H, W = frames, height, width
    L = max(H, W)
    s = torch.linspace(0, 1, T, dtype=DT)
    tau = 2 * math.pi * s
    # camera: pan 0.15 L right and 0.05 L down, a slow roll of +-3 degrees and a 6 % zoom-in
    pan = torch.stack([0.15 * L * s, 0.05 * L * torch.sin(0.5 * tau)], -1)
    roll = math.radians(3.0) * torch.sin(tau)
    zoom = 1.0 - 0.06 * s
    # the frame centre looks at texture point ``pan`` (shifted into the texture below)
    centre_f = torch.tensor([(W - 1) / 2, (H - 1) / 2], dtype=DT)
    origin = pan - (zoom[:, None, None] * _rot(roll) @ centre_f[None, :, None])[:, :, 0]
    if variant == "exit":
        # the object drifts right, decelerating, until its centre is on the right frame border: it starts
        # leaving the frame a little before the middle frame and ends half outside
        cx = 0.4 * W + 0.6 * (W - 1) * (1 - (1 - s) ** 2)
    else:
        cx = W / 2 + 0.18 * W * torch.sin(tau)
    cy = H / 2 + 0.12 * H * torch.sin(tau + 1.0)
    centre = torch.stack([cx, cy], -1)
    if variant == "rigid":
        theta = math.radians(25.0) * torch.sin(0.75 * tau)
        one = torch.ones(T, dtype=DT)
        return Motion(origin, roll, zoom, centre, theta, one, 0 * one, 0 * one)
    theta = math.radians(25.0) * torch.sin(0.75 * tau)
    stretch = 1.0 + 0.10 * torch.sin(1.5 * tau)
    bend_a = 0.15 * torch.sin(tau)
    bend_b = 0.15 * torch.sin(tau + 1.0)
    return Motion(origin, roll, zoom, centre, theta, stretch, bend_a, bend_b)


def make_ground_truth_video(variant: str = "nonrigid", frames: int = 50, height: int = 432, width: int = 768,
                            radius_frac: float = 0.3, uint8: bool = False) -> GroundTruthVideo:
    """Render a ground-truth video. ``radius_frac``: object radius as a fraction of the short frame side.
    ``uint8``: frames as uint8 0..255, masks as bool and no ``alpha`` (empty), rendered a frame at a time, so
    long full-HD videos fit in memory (a quarter of float32 frames)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    T, H, W = frames, height, width
    radius = radius_frac * min(H, W)
    motion = make_motion(variant, T, H, W, radius)

    # background texture: big enough for every frame corner at every t (plus a margin)
    corners = torch.tensor([[0, 0], [W - 1, 0], [0, H - 1], [W - 1, H - 1]], dtype=DT)
    tt = torch.arange(T).repeat_interleave(4)
    stub = GroundTruthVideo(variant, torch.empty(0), torch.empty(0), None, torch.empty(0), None, motion, radius, (0.0, 0.0), H, W)
    cc = stub.canonical("bg", corners.repeat(T, 1), tt)
    lo, hi = cc.min(0).values - 4, cc.max(0).values + 4
    shift = -lo
    motion.cam_origin = motion.cam_origin + shift
    need_w, need_h = float(hi[0] - lo[0]), float(hi[1] - lo[1])
    photo = _photo("rocket" if H > W else "coffee")
    k = max(need_w / photo.shape[2], need_h / photo.shape[1])
    bg_tex = _resize(photo, int(math.ceil(photo.shape[1] * k)) + 1, int(math.ceil(photo.shape[2] * k)) + 1)

    fg_tex, centre_tex = None, (0.0, 0.0)
    if variant != "bg_only":
        # texture of the object: the cat's face, ellipse of semi-axes (1.0, 0.8) object radii, 1 px soft edge
        side = int(math.ceil(2.6 * radius)) | 1
        cat = _photo("chelsea")[:, 10:280, 70:370]
        rgb = _resize(cat, side, side)
        cx = cy = (side - 1) / 2
        ys, xs = torch.meshgrid(torch.arange(side, dtype=DT), torch.arange(side, dtype=DT), indexing="ij")
        ex, ey = (xs - cx) / radius, (ys - cy) / (0.8 * radius)
        rr = torch.sqrt(ex ** 2 + ey ** 2)
        a = (0.5 - (rr - 1.0) * 0.8 * radius).clamp(0, 1)
        fg_tex = torch.cat([rgb, a[None]], 0)
        centre_tex = (cx, cy)

    video = GroundTruthVideo(variant, torch.empty(0), torch.empty(0), None, bg_tex, fg_tex, motion, radius, centre_tex, H, W)
    out = torch.empty(T, 3, H, W, dtype=torch.uint8 if uint8 else torch.float32)
    alpha = torch.zeros(0 if uint8 else T, H, W)
    masks = torch.zeros(T, H, W, dtype=torch.bool) if uint8 else None
    for t in range(T):
        bg = sample_texture(bg_tex, video.canonical_frame("bg", t))
        if fg_tex is None:
            frame = bg.float()
        else:
            fg = sample_texture(fg_tex, video.canonical_frame("fg", t))
            a = fg[3:]
            frame = (a * fg[:3] + (1 - a) * bg).float()
            if uint8:
                masks[t] = a[0] > 0.5
            else:
                alpha[t] = a[0].float()
        out[t] = (frame.clamp(0, 1) * 255).round().to(torch.uint8) if uint8 else frame
    if uint8:
        video.frames, video.alpha = out, alpha
        video.masks = None if fg_tex is None else masks
        return video
    video.frames = out.clamp(0, 1)
    video.alpha = alpha
    video.masks = None if fg_tex is None else (alpha > 0.5).float()
    return video
