"""Load and save images as tensors (PIL). Tensors are float in 0..1, channels first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def load_image(path: str | Path) -> torch.Tensor:
    """Read any PIL-readable image as RGB (grayscale expanded, alpha dropped).

    Args:
        path: the image file.

    Returns:
        [1,3,H,W] float in 0..1.
    """
    return _read_as(path, "RGB", "image").permute(2, 0, 1).unsqueeze(0)


def load_mask(path: str | Path) -> torch.Tensor:
    """Read an image file as a mask: its luminance (white = 1).

    Args:
        path: the image file (any PIL format; colour images are converted to gray).

    Returns:
        [1,1,H,W] float in 0..1.
    """
    return _read_as(path, "L", "mask")[None, None]


def _read_as(path: str | Path, mode: str, what: str) -> torch.Tensor:
    """An image file converted to PIL ``mode``: [H,W,C] (RGB) or [H,W] (L) float in 0..1."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    with Image.open(p) as im:
        arr = np.asarray(im.convert(mode), dtype=np.uint8).copy()
    return torch.from_numpy(arr).float() / 255.0


def array_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """A numpy image as an RGB tensor (alpha dropped, gray expanded).

    Args:
        arr: HxW gray, HxWx3 RGB or HxWx4 RGBA; uint8, or float in 0..1.

    Returns:
        [1,3,H,W] float in 0..1.
    """
    a = np.asarray(arr)
    t = torch.from_numpy(a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32))
    if t.ndim == 2:
        t = t.unsqueeze(-1)
    if t.ndim != 3 or t.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image array HxW, HxWx3 or HxWx4, got shape {a.shape}")
    t = t[..., :3] if t.shape[-1] >= 3 else t.expand(*t.shape[:2], 3)
    return t.permute(2, 0, 1).unsqueeze(0).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """An image tensor as 8-bit values (clamped to 0..1, rounded).

    Args:
        x: [C,H,W] or [1,C,H,W] in 0..1, C in (1, 3, 4).

    Returns:
        HxWxC (HxW when C == 1) uint8 array.
    """
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"to_uint8 takes one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        raise ValueError(f"expected [C,H,W] with C in (1,3,4), got {tuple(x.shape)}")
    arr = (x.detach().float().clamp(0, 1).cpu() * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def save_png(x: torch.Tensor, path: str | Path) -> Path:
    """Write an image as PNG (atomic: ``<path>.part`` renamed into place; folders are created).

    Args:
        x: [C,H,W] or [1,C,H,W] in 0..1; C = 1 gray, 3 RGB, 4 RGBA.
        path: the PNG file.

    Returns:
        The path written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(x)
    tmp = p.with_name(p.name + ".part")
    Image.fromarray(arr).save(tmp, format="PNG")  # L, RGB or RGBA from the array shape
    tmp.replace(p)
    return p


def save_png16(x: torch.Tensor, path: str | Path) -> Path:
    """Write an RGBA image as a 16-bit PNG (PyAV's PNG encoder; atomic, folders are created).

    Args:
        x: [4,H,W] in 0..1 (clamped, rounded to 1/65535).
        path: the PNG file.

    Returns:
        The path written.
    """
    import av

    if x.ndim != 3 or x.shape[0] != 4:
        raise ValueError(f"save_png16 takes an RGBA image [4,H,W], got {tuple(x.shape)}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    u16 = (x.detach().float().clamp(0, 1).cpu() * 65535.0).round().to(torch.int32).permute(1, 2, 0).numpy()
    frame = av.VideoFrame.from_ndarray(u16.astype("<u2"), format="rgba64le").reformat(format="rgba64be")
    encoder = av.CodecContext.create("png", "w")
    encoder.width, encoder.height, encoder.pix_fmt = x.shape[2], x.shape[1], "rgba64be"
    data = b"".join(bytes(packet) for packet in [*encoder.encode(frame), *encoder.encode(None)])
    tmp = p.with_name(p.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(p)
    return p


def load_png16(path: str | Path) -> torch.Tensor:
    """Read a PNG at full depth (PyAV), e.g. a 16-bit STMap.

    Args:
        path: the PNG file.

    Returns:
        [4,H,W] float in 0..1 (RGBA; 8-bit files are read exactly too).
    """
    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        arr = frame.to_ndarray(format="rgba64le").astype(np.float32) / 65535.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
