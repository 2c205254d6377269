"""Optical flow between consecutive frames, computed once per video and kept compactly (fp16).

Estimators:
- torchvision RAFT (``raft_large``/``raft_small``) when its weights are found locally (given folders or
  torch's hub cache). Nothing is ever downloaded.
- :func:`pyramid_lk_flow`: an offline coarse-to-fine iterative Lucas-Kanade estimator written here, used
  when no RAFT weights are present, so fitting works without any download.

Flow convention: ``flow[:, y, x] = (dx, dy)`` in pixels such that ``frame_a(x, y) ~ frame_b(x+dx, y+dy)``.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import kornia
import torch
import torch.nn.functional as F

from ..io.safetensors_files import write_tensors

RAFT_PATTERNS = ("raft_large*.pth", "raft_large*.safetensors", "raft_small*.pth", "raft_small*.safetensors")


@dataclass
class VideoFlow:
    """Forward/backward flow of a T-frame video (fp16) and forward-backward consistency masks.

    fwd[t]: frame t -> t+1, bwd[t]: frame t+1 -> t, both [T-1,2,H,W]; fwd_ok/bwd_ok [T-1,H,W] bool
    (forward-backward error < ``fb_threshold`` px and the target inside the frame).
    """

    fwd: torch.Tensor
    bwd: torch.Tensor
    fwd_ok: torch.Tensor
    bwd_ok: torch.Tensor
    estimator: str = "lk"

    @property
    def frames(self) -> int:
        """T, the video's frame count."""
        return self.fwd.shape[0] + 1

    def nbytes(self) -> int:
        """The bytes the flow and its masks take."""
        return sum(t.numel() * t.element_size() for t in (self.fwd, self.bwd, self.fwd_ok, self.bwd_ok))


# ----------------------------------------------------------------------------------------------------
# warping helpers

def sample_at(img: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample an image bilinearly at pixel coordinates (border padding).

    Args:
        img: [C,H,W].
        x, y: pixel coordinates, both of shape S.

    Returns:
        [C,*S].
    """
    C, H, W = img.shape
    gx = 2.0 * x / max(W - 1, 1) - 1.0
    gy = 2.0 * y / max(H - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(1, -1, 1, 2).to(img.dtype)
    out = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(C, *x.shape)


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp images by a flow: each pixel p takes the value at p + flow(p) (bilinear, border padding).

    Args:
        img: [B,C,H,W].
        flow: [B,2,H,W] (dx, dy) in pixels.

    Returns:
        [B,C,H,W].
    """
    B, C, H, W = img.shape
    ys, xs = torch.meshgrid(torch.arange(H, device=img.device, dtype=img.dtype),
                            torch.arange(W, device=img.device, dtype=img.dtype), indexing="ij")
    gx = 2.0 * (xs[None] + flow[:, 0]) / max(W - 1, 1) - 1.0
    gy = 2.0 * (ys[None] + flow[:, 1]) / max(H - 1, 1) - 1.0
    return F.grid_sample(img, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="border", align_corners=True)


def fb_consistency(flow_ab: torch.Tensor, flow_ba: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """Forward-backward consistency of a flow (NLA uses only consistent pixels in its flow terms).

    Args:
        flow_ab, flow_ba: [2,H,W] flows a -> b and b -> a in pixels.
        threshold: the largest round-trip error in pixels.

    Returns:
        [H,W] bool: |f_ab(p) + f_ba(p + f_ab(p))| < threshold and p + f_ab(p) inside the frame.
    """
    _, H, W = flow_ab.shape
    back = warp(flow_ba[None].float(), flow_ab[None].float())[0]
    err = torch.linalg.vector_norm(flow_ab.float() + back, dim=0)
    ys, xs = torch.meshgrid(torch.arange(H, device=flow_ab.device), torch.arange(W, device=flow_ab.device), indexing="ij")
    tx = xs + flow_ab[0].float()
    ty = ys + flow_ab[1].float()
    inside = (tx >= 0) & (tx <= W - 1) & (ty >= 0) & (ty <= H - 1)
    return (err < threshold) & inside


# ----------------------------------------------------------------------------------------------------
# offline estimator

def _gray(img: torch.Tensor) -> torch.Tensor:
    return kornia.color.rgb_to_grayscale(img) if img.shape[1] == 3 else img


def pyramid_lk_flow(img_a: torch.Tensor, img_b: torch.Tensor, window: int = 9, iters: int = 2,
                    min_size: int = 12, reg: float = 1e-6) -> torch.Tensor:
    """Coarse-to-fine iterative Lucas-Kanade flow a -> b.

    At each pyramid level: warp b by the current flow, solve the windowed 2x2 normal equations
    (Tikhonov-regularised by ``reg`` so flat regions keep the coarser estimate), iterate, then 3x3 median.

    Args:
        img_a, img_b: [3,H,W] (or [1,H,W]) in 0..1.
        window: the normal equations' window side (px).
        iters: iterations per pyramid level.
        min_size: the coarsest level's shortest side is at least this (px).
        reg: added to the normal equations' diagonal.

    Returns:
        [2,H,W] flow (dx, dy) in pixels.
    """
    a = _gray(img_a[None].float())
    b = _gray(img_b[None].float())
    pyr_a, pyr_b = [a], [b]
    while min(pyr_a[-1].shape[-2:]) // 2 >= min_size:
        pyr_a.append(kornia.geometry.transform.pyrdown(pyr_a[-1]))
        pyr_b.append(kornia.geometry.transform.pyrdown(pyr_b[-1]))
    flow = torch.zeros(1, 2, *pyr_a[-1].shape[-2:], device=a.device)
    for level in range(len(pyr_a) - 1, -1, -1):
        la, lb = pyr_a[level], pyr_b[level]
        if flow.shape[-2:] != la.shape[-2:]:
            sy = la.shape[-2] / flow.shape[-2]
            sx = la.shape[-1] / flow.shape[-1]
            flow = F.interpolate(flow, size=la.shape[-2:], mode="bilinear", align_corners=False)
            flow = flow * torch.tensor([sx, sy], device=flow.device).view(1, 2, 1, 1)
        grad_a = kornia.filters.spatial_gradient(la, mode="diff", order=1)[:, 0]  # [1,2,H,W] (d/dx, d/dy)
        for _ in range(iters):
            warped_b = warp(lb, flow)
            grad_b = kornia.filters.spatial_gradient(warped_b, mode="diff", order=1)[:, 0]
            g = 0.5 * (grad_a + grad_b)
            ix, iy = g[:, 0:1], g[:, 1:2]
            it = warped_b - la
            prods = torch.cat([ix * ix, ix * iy, iy * iy, ix * it, iy * it], dim=1)
            s = F.avg_pool2d(prods, (1, window), stride=1, padding=(0, window // 2), count_include_pad=False)  # separable box
            s = F.avg_pool2d(s, (window, 1), stride=1, padding=(window // 2, 0), count_include_pad=False)
            sxx, sxy, syy, sxt, syt = s.split(1, dim=1)
            sxx = sxx + reg
            syy = syy + reg
            det = sxx * syy - sxy * sxy
            du = -(syy * sxt - sxy * syt) / det
            dv = -(sxx * syt - sxy * sxt) / det
            flow = flow + torch.cat([du, dv], dim=1).clamp(-2.0, 2.0)
        flow = kornia.filters.median_blur(flow, (3, 3))
    return flow[0]


# ----------------------------------------------------------------------------------------------------
# RAFT (local weights only)

def find_raft_weights(search_dirs: Sequence[str] = ()) -> Optional[str]:
    """Local torchvision RAFT weights (never downloaded).

    Args:
        search_dirs: folders searched (recursively) before torch's hub cache.

    Returns:
        The first ``raft_large*``/``raft_small*`` file found, or None.
    """
    dirs = [d for d in search_dirs if d]
    try:
        dirs.append(os.path.join(torch.hub.get_dir(), "checkpoints"))
    except Exception:
        pass
    for d in dirs:
        for pat in RAFT_PATTERNS:
            hits = sorted(glob.glob(os.path.join(d, "**", pat), recursive=True))
            if hits:
                return hits[0]
    return None


def require_raft_weights(search_dirs: Sequence[str] = ()) -> str:
    """The RAFT weights ``flow="raft"`` needs (checked before any work, and when the flow is computed).

    Args:
        search_dirs: as :func:`find_raft_weights`.

    Returns:
        The file :func:`find_raft_weights` finds.

    Raises:
        FileNotFoundError: none found; the message names the folders searched and the alternative.
    """
    path = find_raft_weights(search_dirs)
    if path is None:
        searched = [d for d in search_dirs if d] + [os.path.join(torch.hub.get_dir(), "checkpoints")]
        raise FileNotFoundError(
            "RAFT weights were requested but none were found (looked for raft_large*/raft_small* .pth or "
            f".safetensors in {searched}). Put torchvision's RAFT weights there, or use the built-in "
            "estimator (flow='lk').")
    return path


RAFT_MIN_SIDE = 128


class RaftFlow:
    """torchvision RAFT from a local weights file (never downloads)."""

    def __init__(self, weights_path: str, device: torch.device, iters: int = 20):
        from torchvision.models.optical_flow import raft_large, raft_small

        small = "raft_small" in os.path.basename(weights_path)
        model = raft_small(weights=None) if small else raft_large(weights=None)
        if weights_path.endswith(".safetensors"):
            from ..io.safetensors_files import read_tensors

            state, _ = read_tensors(weights_path, "RAFT weights", "Put a complete copy of the torchvision RAFT "
                                    "weights there, or use the built-in estimator (flow 'lk').")
        else:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        self.model = model.eval().to(device)
        self.device = device
        self.iters = iters

    @torch.no_grad()
    def __call__(self, img_a: torch.Tensor, img_b: torch.Tensor) -> torch.Tensor:
        H, W = img_a.shape[-2:]
        # RAFT needs sides divisible by 8 and at least 128 px (its correlation pyramid): replicate-pad up to that
        ph, pw = max(RAFT_MIN_SIDE - H, (-H) % 8), max(RAFT_MIN_SIDE - W, (-W) % 8)
        pad = (0, pw, 0, ph)
        a = F.pad(img_a[None].float().to(self.device) * 2 - 1, pad, mode="replicate")
        b = F.pad(img_b[None].float().to(self.device) * 2 - 1, pad, mode="replicate")
        flow = self.model(a, b, num_flow_updates=self.iters)[-1]
        return flow[0, :, :H, :W].cpu()


def make_flow_estimator(device: torch.device, search_dirs: Sequence[str] = (), prefer: str = "auto") -> tuple:
    """The flow estimator to use.

    Args:
        device: where it runs.
        search_dirs: folders searched for RAFT weights.
        prefer: "auto" (RAFT when its weights are local, else the built-in Lucas-Kanade), "raft" (an error
            when no weights are found) or "lk".

    Returns:
        (estimator(img_a [3,H,W], img_b [3,H,W]) -> flow [2,H,W] in pixels, name).
    """
    if prefer == "raft":
        path = require_raft_weights(search_dirs)
        return RaftFlow(path, device), f"raft:{os.path.basename(path)}"
    if prefer == "auto":
        path = find_raft_weights(search_dirs)
        if path is not None:
            return RaftFlow(path, device), f"raft:{os.path.basename(path)}"
    return (lambda a, b: pyramid_lk_flow(a.to(device), b.to(device)).cpu()), "lk"


def empty_video_flow(frames: int, height: int, width: int, name: str = "lk") -> VideoFlow:
    """A video's flow before any pair is computed (filled by :func:`compute_video_flow`).

    Args:
        frames: T >= 2.
        height, width: the frames' size in px.
        name: the estimator's name.

    Returns:
        A :class:`VideoFlow` of zero fp16 flow and false masks.
    """
    if frames < 2:
        raise ValueError("optical flow needs at least 2 frames")
    shape = (frames - 1, height, width)
    return VideoFlow(torch.zeros(frames - 1, 2, height, width, dtype=torch.float16),
                     torch.zeros(frames - 1, 2, height, width, dtype=torch.float16),
                     torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool), estimator=name)


def compute_video_flow(get_frame: Callable[[int], torch.Tensor], frames: int, estimator: Callable,
                       name: str = "lk", fb_threshold: float = 1.0,
                       on_pair: Optional[Callable[[int, int], None]] = None,
                       into: Optional[VideoFlow] = None, start: int = 0) -> VideoFlow:
    """Flow for every consecutive pair, both ways, streamed one pair at a time, with consistency masks.

    Args:
        get_frame: t -> [3,H,W] in 0..1.
        frames: T >= 2.
        estimator: (img_a, img_b) -> flow [2,H,W] (:func:`make_flow_estimator`).
        name: the estimator's name (stored with the flow).
        fb_threshold: see :func:`fb_consistency`.
        on_pair: ``(done, total)`` after each pair is stored (progress and cancellation: pairs ``< done`` are
            complete in the flow when it raises).
        into: the flow to fill (e.g. a partly computed one from :func:`load_flow_progress`); None = a new one.
        start: pairs before this one are already in ``into`` and are kept.

    Returns:
        The :class:`VideoFlow` (fp16 flow); ``into`` itself when given.
    """
    first = get_frame(start)
    H, W = first.shape[-2:]
    flow = into if into is not None else empty_video_flow(frames, H, W, name)
    prev = first
    for t in range(start, frames - 1):
        nxt = get_frame(t + 1)
        f = estimator(prev, nxt).float()
        b = estimator(nxt, prev).float()
        flow.fwd[t] = f.half()
        flow.bwd[t] = b.half()
        flow.fwd_ok[t] = fb_consistency(f, b, fb_threshold)
        flow.bwd_ok[t] = fb_consistency(b, f, fb_threshold)
        prev = nxt
        if on_pair is not None:
            on_pair(t + 1, frames - 1)
    return flow


def frames_fingerprint(frames: torch.Tensor) -> str:
    """A short content hash of a tensor stack (cache and checkpoint keys: two stacks that differ anywhere get
    different keys).

    Args:
        frames: any tensor; its shape, dtype and every value count.

    Returns:
        16 hex digits.
    """
    t = frames.detach().to("cpu").contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)}:{t.dtype}".encode())
    h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()[:16]


def save_flow(flow: VideoFlow, path: str, key: str = "", pairs: Optional[int] = None) -> None:
    """Cache a video's flow (atomic: an interrupted save never leaves a damaged cache).

    Args:
        flow: the flow.
        path: the cache file (.safetensors).
        key: what :func:`load_flow` must be given to use it (the frames' fingerprint and the estimator setting).
        pairs: None for a complete flow, else how many pairs (from the first) are computed.
    """
    meta = {"key": key, "estimator": flow.estimator}
    if pairs is not None:
        meta["pairs"] = str(int(pairs))
    write_tensors(path, {"fwd": flow.fwd, "bwd": flow.bwd, "fwd_ok": flow.fwd_ok.to(torch.uint8),
                         "bwd_ok": flow.bwd_ok.to(torch.uint8)}, meta)


def load_flow_progress(path: str, key: str = "") -> Optional[tuple[VideoFlow, int]]:
    """A cached flow, complete or partly computed.

    Args:
        path: the cache file.
        key: the key it must have been saved with ("" accepts any).

    Returns:
        (flow, pairs computed), or None when there is no cache, it has another key or it is damaged (the flow
        is then computed again).
    """
    if not os.path.isfile(path):
        return None
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            if key and meta.get("key") != key:
                return None
            flow = VideoFlow(f.get_tensor("fwd"), f.get_tensor("bwd"), f.get_tensor("fwd_ok").bool(),
                             f.get_tensor("bwd_ok").bool(), estimator=meta.get("estimator", "?"))
            pairs = int(meta.get("pairs", flow.frames - 1))
    except Exception:  # SafetensorError (truncated, empty), a missing tensor, a bad count: recompute the flow
        return None
    return (flow, pairs) if 0 <= pairs <= flow.frames - 1 else None


def load_flow(path: str, key: str = "") -> Optional[VideoFlow]:
    """A cached complete flow.

    Args:
        path: the cache file.
        key: the key it must have been saved with ("" accepts any).

    Returns:
        The :class:`VideoFlow`, or None when there is no complete cache with this key (see
        :func:`load_flow_progress`).
    """
    found = load_flow_progress(path, key)
    return found[0] if found is not None and found[1] == found[0].frames - 1 else None
