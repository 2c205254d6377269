"""Reading frames and masks (a directory of images, or a video file decoded with PyAV) and writing frames and
RGBA images as PNGs."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch

from .frame_sources import image_folder_masks, open_frames
from .image_files import save_png


def read_video_file(path: str, max_frames: Optional[int] = None) -> torch.Tensor:
    """Decode a video file with PyAV.

    Args:
        path: the video file.
        max_frames: stop after this many frames (None or 0: all).

    Returns:
        [T,3,H,W] float in 0..1.
    """
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
    """Frames from a directory of images (sorted by name) or a video file, all in memory.

    Args:
        source: a folder of images of one size, or a video file.
        max_frames: at most this many frames (None or 0: all).
        size: None, or (H, W) to resize to (bilinear, antialiased).

    Returns:
        [T,3,H,W] float in 0..1.
    """
    if os.path.isfile(source):
        frames = read_video_file(source, max_frames)
    else:  # a folder of images, or the not-found error naming the path
        frames = open_frames(source, max_frames)[:].float() / 255.0
    if size is not None and tuple(frames.shape[-2:]) != tuple(size):
        frames = torch.nn.functional.interpolate(frames, size=tuple(size), mode="bilinear", antialias=True,
                                                 align_corners=False).clamp(0, 1)
    return frames


def read_masks(directory: str, max_frames: Optional[int] = None) -> torch.Tensor:
    """Masks from a directory of images (sorted by name; the alpha channel if present, else the luminance).

    Args:
        directory: the folder.
        max_frames: at most this many masks (None or 0: all).

    Returns:
        [T,H,W] float in 0..1.
    """
    return image_folder_masks(directory, max_frames)[:].float() / 255.0


def read_rgba(path: str) -> tuple:
    """Read an RGBA (or RGB) image.

    Args:
        path: the image file.

    Returns:
        (rgb [3,H,W], alpha [H,W]) float in 0..1; alpha is 1 without an alpha channel.
    """
    from PIL import Image

    im = Image.open(path)
    rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    t = torch.from_numpy(rgba).permute(2, 0, 1)
    alpha = t[3] if "A" in im.getbands() else torch.ones_like(t[3])
    return t[:3].contiguous(), alpha.contiguous()


def write_rgba(path: str, rgb: torch.Tensor, alpha: Optional[torch.Tensor] = None) -> str:
    """Write an RGB or RGBA image as PNG (8 bits per channel).

    Args:
        path: the PNG file (folders are created).
        rgb: [3,H,W] in 0..1.
        alpha: None, or [H,W] in 0..1.

    Returns:
        ``path``.
    """
    save_png(rgb if alpha is None else torch.cat([rgb, alpha[None]], 0), path)
    return path


def frame_png_path(directory: str, t: int, prefix: str = "frame") -> str:
    """Where frame ``t`` of a written sequence goes: ``<directory>/<prefix>_00000.png`` for frame 0."""
    return os.path.join(directory, f"{prefix}_{t:05d}.png")


def write_frames(frames: torch.Tensor, directory: str, prefix: str = "frame") -> list:
    """Write frames as PNGs ``<prefix>_00000.png``, ``<prefix>_00001.png``, ...

    Args:
        frames: [T,3,H,W] in 0..1.
        directory: the folder (created).
        prefix: the file names' start.

    Returns:
        The paths written, in frame order.
    """
    paths = []
    for t in range(frames.shape[0]):
        p = frame_png_path(directory, t, prefix)
        save_png(frames[t], p)
        paths.append(p)
    return paths
