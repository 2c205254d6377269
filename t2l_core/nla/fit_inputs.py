"""Checks before an atlas fit starts: the frames and masks it is given, and whether it fits in memory."""

from __future__ import annotations

from typing import Optional

import torch

from ..io.input_checks import require_finite
from ..settings import default_of
from .atlas_model import AtlasConfig
from .config import NLAFitConfig
from .working_size import working_shape


def validate_inputs(frames: torch.Tensor, masks: Optional[torch.Tensor]) -> None:
    """Refuse inputs a fit cannot use, with a message that says what to change.

    Args:
        frames: [T,3,H,W] RGB, 0..1, at least 2 frames of at least 16 px on each side.
        masks: None, or [T,H,W] with 1 = foreground.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [T,3,H,W] (RGB), got {tuple(frames.shape)}")
    T, _, H, W = frames.shape
    require_finite(frames, "the frames")
    if masks is not None:
        require_finite(masks, "the masks")
    if T < 2:
        raise ValueError("fitting an atlas needs a video of at least 2 frames; got 1 frame")
    if min(H, W) < 16:
        raise ValueError(f"frames of {W}x{H} are too small; use at least 16 px on each side")
    if masks is not None:
        if masks.ndim != 3 or tuple(masks.shape) != (T, H, W):
            raise ValueError(f"masks must be [T,H,W] = [{T},{H},{W}] to match the frames, got {tuple(masks.shape)}. "
                             "Give one mask per frame at the frames' size (resize the masks or the frames).")


def estimate_fit_memory(frames: int, height: int, width: int, has_fg: bool,
                        batch: int = default_of(NLAFitConfig, "batch_pixels"),
                        working_size: int = default_of(NLAFitConfig, "working_size"), frame_bytes: int = 4,
                        keep_reconstruction: bool = True) -> int:
    """Rough peak bytes of a fit on CPU.

    Counts the input and fp16 frames, the fp16 flow, the masks, the reconstruction outputs, the grids with
    their gradients and Adam state, and one batch of activations. A fit at a working size
    (:attr:`NLAFitConfig.working_size`, or of uint8 frames) keeps only the input, its uint8 copy and a uint8
    reconstruction at full size; the fp16 frames, flow and masks are at the working size.

    Args:
        frames, height, width: the video's size T, H, W.
        has_fg: whether the atlas has a foreground layer (masks were given).
        batch: pixels per step (:attr:`NLAFitConfig.batch_pixels`).
        working_size: :attr:`NLAFitConfig.working_size`.
        frame_bytes: bytes per value of the given frames (4 for float32, 1 for uint8 frames with uint8 or
            bool masks, 0 for frames and masks streamed from their files).
        keep_reconstruction: whether the fit keeps its reconstruction (``fit_nla``'s argument).

    Returns:
        Bytes (an estimate, not a bound).
    """
    h, w = working_shape(height, width, int(working_size))
    if (h, w) == (height, width) and frame_bytes > 1:
        # per pixel: input fp32 (12) + fp16 copy (6) + fwd/bwd flow fp16 (8) + ok masks (2) + masks (8) + uint8
        # originals (3) + reconstruction rgb/alpha fp32 (16)
        b = frames * height * width * (55 if keep_reconstruction else 39)
    else:
        # full size, per pixel: input (3 values) + its uint8 copy (3, none for uint8 or streamed input) + masks
        # (float32, uint8/bool with uint8 frames) + uint8 reconstruction rgb/alpha (4); working size: fp16
        # frames (6) + flow (8) + ok masks (2) + masks (4)
        full = 3 * frame_bytes + (3 if frame_bytes > 1 else 0) + (frame_bytes if has_fg else 0) + 4 * keep_reconstruction
        b = frames * (height * width * full + h * w * 20)
    cfg = AtlasConfig(h, w, frames, has_foreground=has_fg)
    colour = int(cfg.resolved_colour_max_res() ** 2 * 3 * 4 / 3)  # pyramid ~ 4/3 of the finest level
    alpha = sum(r * r * h / max(h, w) * min(frames, max(2, r // 2)) for r in cfg.resolved_alpha_res()) if has_fg else 0
    b += int((colour + alpha) * 4 * 5)  # param, grad, 2 Adam moments, slack
    b += batch * 64 * 4 * 40  # activations of one step
    return int(b)


def available_ram_bytes() -> Optional[int]:
    """The available RAM.

    Returns:
        Bytes (MemAvailable of /proc/meminfo), None where that is not readable (not Linux).
    """
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fit_memory(frames: int, height: int, width: int, has_fg: bool,
                     batch: int = default_of(NLAFitConfig, "batch_pixels"),
                     working_size: int = default_of(NLAFitConfig, "working_size"), frame_bytes: int = 4,
                     keep_reconstruction: bool = True) -> int:
    """Refuse a fit that would not fit in the available RAM (MemoryError saying what to reduce).

    Args: as :func:`estimate_fit_memory`.

    Returns:
        The estimated bytes.
    """
    need = estimate_fit_memory(frames, height, width, has_fg, batch, working_size, frame_bytes, keep_reconstruction)
    avail = available_ram_bytes()
    if avail is not None and need > 0.9 * avail:
        raise MemoryError(
            f"fitting {frames} frames of {width}x{height} needs about {need / 2**30:.1f} GiB but only "
            f"{avail / 2**30:.1f} GiB RAM is available: use fewer frames, a smaller resolution or a smaller "
            f"working_size.")
    return need
