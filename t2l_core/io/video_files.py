"""Reading frames (a directory of images or a video file decoded with PyAV) and writing frames as PNGs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _list_images(directory: str) -> list:
    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTS)}) in {directory}")
    return files


def read_video_file(path: str, max_frames: Optional[int] = None) -> torch.Tensor:
    """Decode a video with PyAV -> [T,3,H,W] float 0..1."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
            if max_frames and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"no video frames could be decoded from {path}")
    return torch.stack(frames).permute(0, 3, 1, 2).float() / 255.0


def read_frames(source: str, max_frames: Optional[int] = None, size: Optional[tuple] = None) -> torch.Tensor:
    """Frames from a directory of images (sorted by name) or a video file -> [T,3,H,W] float 0..1.

    ``size=(H, W)`` resizes (bilinear, antialiased)."""
    from PIL import Image

    if os.path.isdir(source):
        files = _list_images(source)[: max_frames or None]
        arrs = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        shapes = {a.shape for a in arrs}
        if len(shapes) != 1:
            raise ValueError(f"the images in {source} have different sizes {sorted(shapes)}; give frames of one size")
        frames = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255.0
    elif os.path.isfile(source):
        frames = read_video_file(source, max_frames)
    else:
        raise FileNotFoundError(f"no frames directory or video file at {source}")
    if size is not None and tuple(frames.shape[-2:]) != tuple(size):
        frames = torch.nn.functional.interpolate(frames, size=tuple(size), mode="bilinear", antialias=True,
                                                 align_corners=False).clamp(0, 1)
    return frames


def read_masks(directory: str, max_frames: Optional[int] = None) -> torch.Tensor:
    """Masks from a directory of images -> [T,H,W] float 0..1 (the alpha channel if present, else luminance)."""
    from PIL import Image

    out = []
    for f in _list_images(directory)[: max_frames or None]:
        im = Image.open(f)
        band = im.getchannel("A") if "A" in im.getbands() else im.convert("L")
        out.append(torch.from_numpy(np.asarray(band, dtype=np.float32) / 255.0))
    return torch.stack(out)


def read_rgba(path: str) -> tuple:
    """An RGBA (or RGB) image -> (rgb [3,H,W], alpha [H,W]) float 0..1; alpha is 1 without an alpha channel."""
    from PIL import Image

    im = Image.open(path)
    rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    t = torch.from_numpy(rgba).permute(2, 0, 1)
    alpha = t[3] if "A" in im.getbands() else torch.ones_like(t[3])
    return t[:3].contiguous(), alpha.contiguous()


def write_rgba(path: str, rgb: torch.Tensor, alpha: Optional[torch.Tensor] = None) -> str:
    from PIL import Image

    arr = rgb if alpha is None else torch.cat([rgb, alpha[None]], 0)
    a = (arr.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    Image.fromarray(a).save(path)
    return path


def write_frames(frames: torch.Tensor, directory: str, prefix: str = "frame") -> list:
    """Write [T,3,H,W] (0..1) as PNGs ``<prefix>_00000.png``... Returns the paths."""
    from PIL import Image

    os.makedirs(directory, exist_ok=True)
    paths = []
    for t in range(frames.shape[0]):
        a = (frames[t].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        p = os.path.join(directory, f"{prefix}_{t:05d}.png")
        Image.fromarray(a).save(p)
        paths.append(p)
    return paths
