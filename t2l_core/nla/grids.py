"""The multi-resolution grid encodings a layered atlas is made of (instead of NLA's MLPs, for speed on CPU):
sums of dense 3D grids over (x, y, t) for the mapping residuals and the opacity, and a pyramid of RGB grids over
the atlas square for the colour. Every grid is sampled with ``F.grid_sample`` (``align_corners=True``)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Grid3D(nn.Module):
    """Sum of dense 3D grids at several resolutions -> C channels. Input [N,3] normalised (xn, yn, tn).

    Each grid covers the frame (x and y rescaled so the frame spans [-1,1] on both axes) and all frames;
    ``r`` is the resolution along the frame's long side.
    """

    def __init__(self, channels: int, spatial: tuple, frames: int, height: int, width: int):
        super().__init__()
        long_side = max(height, width)
        self.sx = long_side / width
        self.sy = long_side / height
        self.grids = nn.ParameterList()
        for r in spatial:
            rx = max(2, int(round(r * width / long_side)))
            ry = max(2, int(round(r * height / long_side)))
            rt = max(1, min(frames, max(2, int(r) // 2)))
            self.grids.append(nn.Parameter(torch.zeros(1, channels, rt, ry, rx)))

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        """The grids' sum at points (trilinear, border padding).

        Args:
            p: [N,3] normalised points (xn, yn, tn).

        Returns:
            [N,C].
        """
        n = p.shape[0]
        q = torch.stack([p[:, 0] * self.sx, p[:, 1] * self.sy, p[:, 2]], dim=-1)
        out = None
        for g in self.grids:
            if g.shape[2] == 1:  # single temporal slice: sample in 2D
                s = F.grid_sample(g[:, :, 0], q[:, :2].view(1, n, 1, 2), mode="bilinear", padding_mode="border", align_corners=True)
            else:
                s = F.grid_sample(g, q.view(1, n, 1, 1, 3), mode="bilinear", padding_mode="border", align_corners=True)
            s = s.reshape(g.shape[1], n)
            out = s if out is None else out + s
        return out.t()


class ColourPyramid(nn.Module):
    """Sum of dense RGB grids over the atlas square [-1,1]^2 at resolutions min_res, 2 min_res, ..., max_res."""

    def __init__(self, min_res: int, max_res: int):
        super().__init__()
        self.levels = nn.ParameterList()
        sizes = [min_res]
        while sizes[-1] * 2 <= max_res:
            sizes.append(sizes[-1] * 2)
        if sizes[-1] != max_res:
            sizes[-1] = max_res  # the finest level is exactly max_res (no power-of-two overshoot)
        if len(sizes) > 1 and sizes[-1] <= sizes[-2]:
            sizes.pop(-2)
        for i, r in enumerate(sizes):
            init = torch.full((1, 3, r, r), 0.5) if i == 0 else torch.zeros(1, 3, r, r)
            self.levels.append(nn.Parameter(init))

    def forward(self, uv: torch.Tensor) -> torch.Tensor:
        """The colour at atlas points.

        Args:
            uv: [N,2] in [-1,1] (u horizontal).

        Returns:
            [N,3] RGB (unclamped, about 0..1).
        """
        n = uv.shape[0]
        g = uv.view(1, n, 1, 2)
        out = None
        for lv in self.levels:
            s = F.grid_sample(lv, g, mode="bilinear", padding_mode="border", align_corners=True).reshape(3, n)
            out = s if out is None else out + s
        return out.t()
