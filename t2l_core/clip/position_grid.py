"""The patch position grid of a ViT CLIP at any image size (Text2LIVE Appendix A.3).

The square grid of patch position embeddings is interpolated bicubically to (H/p rows x W/p columns), DINO
style (scale factors (rows+0.1)/g and (cols+0.1)/g), for every input that is not square (as the authors do);
the stock embedding is used untouched for square inputs with the native g x g grid.

The authors' code transposes the interpolated grid for non-square inputs; that is a bug and the correct
mapping is the default. ``mode="t2l-compat"`` reproduces it for comparisons.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POS_GRID_MODES = ("correct", "t2l-compat")


def interpolate_pos_grid(pos_patches: torch.Tensor, rows: int, cols: int, mode: str = "correct",
                         square: bool = True) -> torch.Tensor:
    """Resample a square grid of patch position embeddings.

    Args:
        pos_patches: [g*g, C] embeddings of a g x g grid, row-major.
        rows, cols: the patch grid of the image (H // p, W // p).
        mode: ``correct`` returns the grid resampled to rows x cols; ``t2l-compat`` reproduces the authors'
            transposed interpolation (a cols x rows grid flattened and read as rows x cols).
        square: whether the image is square (H == W). As in the authors' code, the stock grid is used
            untouched only for a square image with a g x g grid; a non-square image whose grid is still
            g x g (e.g. 224x250 at patch 32) is resampled with the same scale factors as any other size.
    Returns:
        [rows*cols, C], row-major over (rows, cols).
    """
    n, dim = pos_patches.shape
    g = int(round(n**0.5))
    if g * g != n:
        raise ValueError(f"position embedding has {n} patch entries, not a square grid")
    if mode not in POS_GRID_MODES:
        raise ValueError(f"pos_grid must be one of {POS_GRID_MODES}, got '{mode}'")
    if rows == g and cols == g and square:
        return pos_patches
    out_r, out_c = (rows, cols) if mode == "correct" else (cols, rows)
    grid = pos_patches.reshape(1, g, g, dim).permute(0, 3, 1, 2).float()
    # DINO's +0.1 keeps floor(g * scale) == target; the scale itself sets the sampling positions.
    grid = F.interpolate(grid, scale_factor=((out_r + 0.1) / g, (out_c + 0.1) / g), mode="bicubic", align_corners=False)
    if grid.shape[-2:] != (out_r, out_c):
        raise RuntimeError(f"position grid interpolation produced {tuple(grid.shape[-2:])}, expected {(out_r, out_c)}")
    return grid.permute(0, 2, 3, 1).reshape(out_r * out_c, dim).to(pos_patches.dtype)
