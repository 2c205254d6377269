"""Temporal-consistency measure for the video edit tests: edited frames warped by the TRUE motion of the
synthetic video (tests/synthetic_video.py) should agree with each other."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _warp(img: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """img [C,H,W] sampled at (x + dx, y + dy) (bilinear, pixel coordinates, border padding)."""
    _, H, W = img.shape
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    grid = torch.stack([2 * (xs + dx) / (W - 1) - 1, 2 * (ys + dy) / (H - 1) - 1], dim=-1)[None]
    return F.grid_sample(img[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def background_flicker(video, frames: torch.Tensor, margin: int = 3) -> float:
    """Mean |E_t(p) - E_{t+1}(p + d)| over background pixels p of consecutive frames, d the true camera
    displacement; pixels within ``margin`` px of the frame border or near the foreground are excluded."""
    T, _, H, W = frames.shape
    fg = F.max_pool2d(video.alpha[:, None], 7, stride=1, padding=3)[:, 0] > 1e-3  # dilated true foreground
    total, count = 0.0, 0
    for t in range(T - 1):
        dx, dy = video.bg_frame_displacement(t, t + 1)
        warped = _warp(frames[t + 1], dx, dy)
        fg_next = _warp(fg[t + 1][None].float(), dx, dy)[0] > 0
        ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        inside = ((xs + dx >= margin) & (xs + dx <= W - 1 - margin) & (ys + dy >= margin) & (ys + dy <= H - 1 - margin)
                  & (xs >= margin) & (xs <= W - 1 - margin) & (ys >= margin) & (ys <= H - 1 - margin))
        ok = inside & ~fg[t] & ~fg_next
        total += float((frames[t] - warped).abs().mean(0)[ok].sum())
        count += int(ok.sum())
    return total / max(count, 1)


def foreground_flicker(video, frames: torch.Tensor, shrink: float = 0.7) -> float:
    """Same for the foreground: pixels well inside the moving ellipse (normalised radius < ``shrink``),
    warped by the object's true displacement."""
    T, _, H, W = frames.shape
    rx, ry = video.fg_radii
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    total, count = 0.0, 0
    for t in range(T - 1):
        dx, dy = video.fg_frame_displacement(t, t + 1)
        warped = _warp(frames[t + 1], dx, dy)
        c = video.fg_centers[t]
        ok = (((xs - c[0]) / rx) ** 2 + ((ys - c[1]) / ry) ** 2).sqrt() < shrink
        ok &= (xs + dx >= 0) & (xs + dx <= W - 1) & (ys + dy >= 0) & (ys + dy <= H - 1)
        total += float((frames[t] - warped).abs().mean(0)[ok].sum())
        count += int(ok.sum())
    return total / max(count, 1)
