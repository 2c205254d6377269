"""Load and save images as tensors (PIL). Tensors are float in 0..1, channels first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def load_image(path: str | Path) -> torch.Tensor:
    """Read any PIL-readable file as RGB ``[1,3,H,W]`` float 0..1 (grayscale expanded, alpha dropped)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {p}")
    with Image.open(p) as im:
        im = im.convert("RGB")
        arr = np.asarray(im, dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def array_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """A numpy image (HxW gray, HxWx3 RGB or HxWx4 RGBA; uint8 or float 0..1) -> RGB ``[1,3,H,W]`` 0..1."""
    a = np.asarray(arr)
    t = torch.from_numpy(a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32))
    if t.ndim == 2:
        t = t.unsqueeze(-1)
    if t.ndim != 3 or t.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image array HxW, HxWx3 or HxWx4, got shape {a.shape}")
    t = t[..., :3] if t.shape[-1] >= 3 else t.expand(*t.shape[:2], 3)
    return t.permute(2, 0, 1).unsqueeze(0).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[C,H,W]`` or ``[1,C,H,W]`` 0..1 -> HxWxC (or HxW when C==1) uint8."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"to_uint8 takes one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        raise ValueError(f"expected [C,H,W] with C in (1,3,4), got {tuple(x.shape)}")
    arr = (x.detach().float().clamp(0, 1).cpu() * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def save_png(x: torch.Tensor, path: str | Path) -> Path:
    """Write ``[C,H,W]``/``[1,C,H,W]`` (C = 1 gray, 3 RGB, 4 RGBA) as PNG; creates the folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(x)
    tmp = p.with_name(p.name + ".part")
    Image.fromarray(arr).save(tmp, format="PNG")  # L, RGB or RGBA from the array shape
    tmp.replace(p)
    return p
