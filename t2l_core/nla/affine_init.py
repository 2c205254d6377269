"""Initial per-frame affine maps of each atlas layer, chained from robust frame-to-frame affines of the flow.

A camera that pans, rolls and zooms, and an object that turns, start aligned in the atlas: for each layer a
robust affine of each consecutive frame pair's consistent flow (background: outside the masks; foreground:
inside the masks eroded by 2 px) is chained from the middle frame, so every frame's pixels map to the middle
frame's. The fit then refines these maps and the residual grids (NLA, Kasten et al. 2021, Sec. 3).
Measured on ground-truth videos in bench/RESULTS.md ("Layered atlas on ground-truth videos").
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .initialisation import robust_median
from .optical_flow import VideoFlow

Region = Callable[[int], torch.Tensor]  # frame t -> bool [H,W] pixels of the layer


def pair_affine(flow: torch.Tensor, ok: torch.Tensor, irls_iters: int = 3) -> Optional[torch.Tensor]:
    """Robust least-squares affine that moves frame t's pixels along ``flow``.

    Args:
        flow: ``[2,H,W]`` forward flow in pixels.
        ok: ``[H,W]`` bool, the pixels to fit on.
        irls_iters: reweighting rounds (weights 1 / max(residual, 1 px)), so a few wrong vectors do not tilt it.

    Returns:
        ``[2,3]`` float64 (pixels), or None when fewer than 64 pixels are usable.
    """
    ys, xs = torch.nonzero(ok, as_tuple=True)
    if ys.numel() < 64:
        return None
    if ys.numel() > 20000:  # a fixed, evenly spread subset is plenty for 6 parameters
        sel = torch.linspace(0, ys.numel() - 1, 20000).long()
        ys, xs = ys[sel], xs[sel]
    f = flow[:, ys, xs].double()
    X = torch.stack([xs.double(), ys.double(), torch.ones_like(xs, dtype=torch.float64)], -1)  # [N,3]
    Y = torch.stack([xs.double() + f[0], ys.double() + f[1]], -1)  # [N,2]
    w = torch.ones(X.shape[0], dtype=torch.float64)
    A = None
    for _ in range(irls_iters):
        sw = w.sqrt()[:, None]
        A = torch.linalg.lstsq(X * sw, Y * sw).solution  # [3,2]
        w = 1.0 / (X @ A - Y).norm(dim=-1).clamp_min(1.0)
    return A.t()


def erode(mask: torch.Tensor, px: int) -> torch.Tensor:
    """Binary erosion of a bool mask ``[H,W]`` by a (2·px + 1) square."""
    return -F.max_pool2d(-mask.float()[None, None], 2 * px + 1, stride=1, padding=px)[0, 0] > 0.5


def _pair_step(flow: VideoFlow, t: int, region: Region) -> torch.Tensor:
    """``[3,3]`` map from frame t to frame t+1 pixels: the robust affine of the layer's consistent flow, or the
    median flow translation when too few pixels are usable or the affine's determinant leaves [0.8, 1.25]."""
    ok = flow.fwd_ok[t] & region(t)
    f = flow.fwd[t].float()
    A = pair_affine(f, ok)
    if A is not None and not 0.8 <= float(torch.linalg.det(A[:, :2])) <= 1.25:
        A = None
    if A is None:
        use = ok if ok.sum() >= 16 else torch.ones_like(ok)
        A = torch.tensor([[1.0, 0.0, float(robust_median(f[0][use]))],
                          [0.0, 1.0, float(robust_median(f[1][use]))]], dtype=torch.float64)
    M = torch.eye(3, dtype=torch.float64)
    M[:2] = A
    return M


def chained_maps(flow: VideoFlow, region: Region) -> torch.Tensor:
    """``[T,3,3]`` maps from each frame's pixels to the middle frame's, chained from the pair affines."""
    T = flow.frames
    steps = [_pair_step(flow, t, region) for t in range(T - 1)]
    G = [torch.eye(3, dtype=torch.float64) for _ in range(T)]
    ref = T // 2
    for t in range(ref + 1, T):  # G_t = G_{t-1} M_{t-1}^-1 (frame t -> t-1 -> ... -> ref)
        G[t] = G[t - 1] @ torch.linalg.inv(steps[t - 1])
    for t in range(ref - 1, -1, -1):  # G_t = G_{t+1} M_t
        G[t] = G[t + 1] @ steps[t]
    return torch.stack(G)


def _params(G: torch.Tensor, centre: torch.Tensor, height: int, width: int) -> list:
    """Per-frame ``[a11, a12, a21, a22, bx, by]`` on normalised coordinates: (G_t p - centre) / half."""
    half = max(height, width) / 2.0
    ctr = torch.tensor([(width - 1) / 2.0, (height - 1) / 2.0], dtype=torch.float64)
    P, e = G[:, :2, :2], G[:, :2, 2]
    b = ((P @ ctr[:, None])[:, :, 0] + e - centre) / half
    return [[float(P[t, 0, 0]), float(P[t, 0, 1]), float(P[t, 1, 0]), float(P[t, 1, 1]),
             float(b[t, 0]), float(b[t, 1])] for t in range(G.shape[0])]


def _foreground_centre(G: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The mean of the masks' centroids mapped into the middle frame."""
    cents = []
    for t in range(masks.shape[0]):
        m = masks[t] > 0.5
        if m.any():
            ys, xs = torch.nonzero(m, as_tuple=True)
            c = torch.tensor([float(xs.double().mean()), float(ys.double().mean()), 1.0], dtype=torch.float64)
            cents.append((G[t] @ c)[:2])
    if not cents:
        raise ValueError("every mask is empty; give masks that cover the foreground object, or no masks "
                         "for a background-only atlas")
    return torch.stack(cents).mean(0)


def affine_motion_init(flow: VideoFlow, masks: Optional[torch.Tensor], height: int, width: int) -> tuple:
    """Initial per-frame affine parameters of both layers and the uv scale (as :func:`motion_init`).

    Args:
        flow: the video's forward/backward flow with consistency masks.
        masks: ``[T,H,W]`` in 0..1 (1 = foreground), or None for a background-only atlas.
        height, width: the frame size.

    Returns:
        ``(bg_init, fg_init, uv_scale)``: per-frame ``[a11,a12,a21,a22,bx,by]`` lists (fg empty without masks)
        and the mapping-space units per normalised frame unit. The background is centred on the middle of its
        frames' footprint, the foreground on the mean of its mask centroids.
    """
    bg_region = (lambda t: torch.ones(height, width, dtype=torch.bool)) if masks is None else (lambda t: masks[t] < 0.5)
    Gb = chained_maps(flow, bg_region)
    corners = torch.tensor([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]],
                           dtype=torch.float64)
    cc = (Gb[:, None, :2, :] @ corners[None, :, :, None])[..., 0].reshape(-1, 2)  # every frame corner
    lo, hi = cc.min(0).values, cc.max(0).values
    bg = _params(Gb, (lo + hi) / 2, height, width)
    span = (hi - lo) / max(height, width)
    scale = min(0.8, 0.9 / float(span.max()))
    fg: list = []
    if masks is not None:
        Gf = chained_maps(flow, lambda t: erode(masks[t] > 0.5, 2))
        fg = _params(Gf, _foreground_centre(Gf, masks), height, width)
    return bg, fg, float(scale)
