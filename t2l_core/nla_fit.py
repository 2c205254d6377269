"""Fitting a layered atlas to a video: random pixel batches streamed from the frames, Adam, NLA losses.

Entry point: :func:`fit_nla`. Frames are kept once in fp16 ([T,3,H,W], 2 bytes per value), flow in fp16
(:mod:`t2l_core.optical_flow`); each step gathers only the sampled pixels, so memory does not grow with
per-pixel features. Cancellation (``hooks.check_cancel`` raising) or an error saves a resumable safetensors
checkpoint first and re-raises; ``resume=True`` continues from it when it belongs to the same run. A
non-finite loss stops the fit before its backward pass, with the last good state saved. A finished fit
removes its checkpoint and flow cache unless ``keep_checkpoint`` (:mod:`t2l_core.checkpoint_files`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from . import nla_losses as L
from .atlas import AtlasConfig, LayeredAtlas, frame_pixel_grid
from .device import resolve_device
from .optical_flow import VideoFlow, compute_video_flow, frames_fingerprint, load_flow, make_flow_estimator, save_flow
from .checkpoint_files import (NonFiniteLoss, all_finite, nonfinite_message, optimizer_tensors, remove_run_file,
                               resumed_note, stale_note)
from .input_checks import require_finite
from .progress import Hooks, losses_to_floats

CODE_VERSION = "nla-1"


@dataclass
class NLAFitConfig:
    """Fit hyper-parameters (stored with the atlas)."""

    iterations: int = 2000
    batch_pixels: int = 8192
    seed: int = 0
    lr_colour: float = 0.01
    lr_alpha: float = 0.05
    lr_mapping: float = 0.002
    lr_affine: float = 0.002
    lr_final_ratio: float = 0.1          # learning rates decay exponentially to this fraction at the last step
    atlas_resolution: int = 0            # long side of the discretised atlas images (0 = native)
    flow: str = "auto"                   # "auto" (RAFT if weights are local, else built-in LK) | "raft" | "lk"
    init_colour: bool = True             # start the atlas from the frames splatted through the initial mappings
    target_psnr: float = 0.0             # stop early once the sampled PSNR reaches this (0 = run all iterations)
    eval_every: int = 250                # how often the sampled PSNR is measured when target_psnr > 0
    eval_pixels: int = 100_000           # pixels in the fixed random evaluation sample
    checkpoint_every: int = 0            # also save a checkpoint every N steps (0 = only on cancel/error)
    motion_init: str = "affine"          # initial per-frame maps: "affine" (chained flow affines) | "translation"
    weights: L.NLALossWeights = field(default_factory=L.NLALossWeights)

    def to_dict(self) -> dict:
        d = asdict(self)
        return d

    @staticmethod
    def from_dict(d: dict) -> "NLAFitConfig":
        d = dict(d)
        w = L.NLALossWeights(**d.pop("weights", {}))
        return NLAFitConfig(weights=w, **d)


@dataclass
class FittedNLA:
    """A fitted layered atlas plus the original frames it was fitted on (uint8, for blending edits)."""

    model: LayeredAtlas
    frames_u8: torch.Tensor              # [T,3,H,W] uint8
    fit_config: dict
    psnr: float = float("nan")
    steps: int = 0
    flow_estimator: str = ""
    bboxes: dict = field(default_factory=dict)   # {layer: AtlasBBox} of the discretised atlas images
    # transient (never saved): (rgb [T,3,H,W], alpha [T,H,W]) computed for the PSNR right after fitting
    reconstruction: Optional[tuple] = field(default=None, repr=False)
    notes: list = field(default_factory=list, repr=False)  # transient: what the fit wants the user to know

    @property
    def cfg(self) -> AtlasConfig:
        return self.model.cfg

    @property
    def num_frames(self) -> int:
        return self.cfg.frames

    @property
    def size(self) -> tuple:
        return (self.cfg.height, self.cfg.width)

    def original_frames(self) -> torch.Tensor:
        """[T,3,H,W] float 0..1 (decoded from the stored uint8)."""
        return self.frames_u8.float() / 255.0

    def atlas_images(self, on_progress: Optional[Callable[[int, int], None]] = None) -> dict:
        """{layer: [3,Ha,Wa]} discretised atlas colour images over :attr:`bboxes` (0..1).

        ``on_progress(done, total)`` is called after each chunk of texels of all layers together."""
        from .atlas_render import CHUNK, discretise_atlas

        chunks = {layer: -(-bbox.height * bbox.width // CHUNK) for layer, bbox in self.bboxes.items()}
        total, done, out = sum(chunks.values()), 0, {}
        for layer, bbox in self.bboxes.items():
            base = done
            step = None if on_progress is None else (lambda i, n, base=base: on_progress(base + i, total))
            out[layer] = discretise_atlas(self.model, bbox, on_chunk=step)
            done += chunks[layer]
        return out

    def check_frames(self, frames: torch.Tensor) -> None:
        """Refuse frames [T,3,H,W] of another size or count than the fit, with a message saying what to change."""
        T, _, H, W = frames.shape
        if (H, W) != self.size or T != self.num_frames:
            raise ValueError(
                f"this atlas was fitted on {self.num_frames} frames of {self.cfg.width}x{self.cfg.height} (WxH), "
                f"but got {T} frames of {W}x{H}. Resize/trim the frames to match, or fit a new atlas for this video.")


# ----------------------------------------------------------------------------------------------------
# validation and initialisation

def validate_inputs(frames: torch.Tensor, masks: Optional[torch.Tensor]) -> None:
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


def estimate_fit_memory(frames: int, height: int, width: int, has_fg: bool, batch: int = 8192) -> int:
    """Rough peak bytes of a fit on CPU: input + fp16 frames, fp16 flow, masks, reconstruction outputs,
    grids with gradients and Adam state, one batch of activations."""
    px = frames * height * width
    # per pixel: input fp32 (12) + fp16 copy (6) + fwd/bwd flow fp16 (8) + ok masks (2) + masks (8) + uint8
    # originals (3) + reconstruction rgb/alpha fp32 (16)
    b = px * 55
    cfg = AtlasConfig(height, width, frames, has_foreground=has_fg)
    colour = int(cfg.resolved_colour_max_res() ** 2 * 3 * 4 / 3)  # pyramid ~ 4/3 of the finest level
    alpha = sum(r * r * height / max(height, width) * min(frames, max(2, r // 2)) for r in cfg.resolved_alpha_res()) if has_fg else 0
    b += int((colour + alpha) * 4 * 5)  # param, grad, 2 Adam moments, slack
    b += batch * 64 * 4 * 40  # activations of one step
    return int(b)


def available_ram_bytes() -> Optional[int]:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fit_memory(frames: int, height: int, width: int, has_fg: bool, batch: int = 8192) -> int:
    """Estimated bytes of a fit; raises a clear error when it exceeds the available RAM."""
    need = estimate_fit_memory(frames, height, width, has_fg, batch)
    avail = available_ram_bytes()
    if avail is not None and need > 0.9 * avail:
        raise MemoryError(
            f"fitting {frames} frames of {width}x{height} needs about {need / 2**30:.1f} GiB but only "
            f"{avail / 2**30:.1f} GiB RAM is available: use fewer frames or a smaller resolution.")
    return need


def _robust_median(v: torch.Tensor) -> torch.Tensor:
    return v.median() if v.numel() > 0 else torch.tensor(0.0)


def motion_init(flow: VideoFlow, masks: Optional[torch.Tensor], height: int, width: int) -> tuple:
    """Initial per-frame affine params for both layers and the uv scale, from flow and mask centroids.

    Background: translation following the median consistent flow outside the masks (camera path).
    Foreground: translation following the mask centroid. Returns (bg_init, fg_init, uv_scale).
    """
    T = flow.frames
    half = max(height, width) / 2.0
    disp = torch.zeros(T, 2)
    for t in range(T - 1):
        ok = flow.fwd_ok[t].clone()
        if masks is not None:
            ok &= masks[t] < 0.5
        f = flow.fwd[t].float()
        if ok.sum() < 16:
            ok = torch.ones_like(ok)
        d = torch.stack([_robust_median(f[0][ok]), _robust_median(f[1][ok])])
        disp[t + 1] = disp[t] + d
    disp = disp - disp.mean(0, keepdim=True)
    bg = [[1.0, 0.0, 0.0, 1.0, -float(disp[t, 0]) / half, -float(disp[t, 1]) / half] for t in range(T)]
    span_x = width / max(height, width) + float(disp[:, 0].max() - disp[:, 0].min()) / (2 * half)
    span_y = height / max(height, width) + float(disp[:, 1].max() - disp[:, 1].min()) / (2 * half)
    scale = min(0.8, 0.9 / max(span_x, span_y))
    fg: list = []
    if masks is not None:
        cents = []
        for t in range(T):
            m = masks[t] > 0.5
            if m.any():
                ys, xs = torch.nonzero(m, as_tuple=True)
                cents.append(((xs.float().mean() - (width - 1) / 2) / half, (ys.float().mean() - (height - 1) / 2) / half))
            else:
                cents.append(None)
        known = [c for c in cents if c is not None]
        if not known:
            raise ValueError("every mask is empty; give masks that cover the foreground object, or no masks "
                             "for a background-only atlas")
        last = known[0]
        filled = []
        for c in cents:
            last = c if c is not None else last
            filled.append(last)
        fg = [[1.0, 0.0, 0.0, 1.0, -float(cx), -float(cy)] for cx, cy in filled]
    return bg, fg, float(scale)


def pair_affine(flow: torch.Tensor, ok: torch.Tensor, irls_iters: int = 3) -> Optional[torch.Tensor]:
    """Robust least-squares affine [2,3] (pixels) that moves frame t's pixels along ``flow`` [2,H,W], fitted on
    the pixels where ``ok`` [H,W]; None when fewer than 64 pixels are usable. Iteratively reweighted
    (weights 1 / max(residual, 1 px)) so a few wrong flow vectors do not tilt it."""
    ys, xs = torch.nonzero(ok, as_tuple=True)
    if ys.numel() < 64:
        return None
    if ys.numel() > 20000:  # a fixed, evenly spread subset is plenty for 6 parameters
        sel = torch.linspace(0, ys.numel() - 1, 20000).long()
        ys, xs = ys[sel], xs[sel]
    f = flow[:, ys, xs].double()
    X = torch.stack([xs.double(), ys.double(), torch.ones_like(xs, dtype=torch.float64)], -1)  # [N,3]
    Y = torch.stack([xs.double() + f[0], ys.double() + f[1]], -1)                               # [N,2]
    w = torch.ones(X.shape[0], dtype=torch.float64)
    A = None
    for _ in range(irls_iters):
        sw = w.sqrt()[:, None]
        A = torch.linalg.lstsq(X * sw, Y * sw).solution  # [3,2]
        r = (X @ A - Y).norm(dim=-1)
        w = 1.0 / r.clamp_min(1.0)
    return A.t()


def _erode(m: torch.Tensor, px: int) -> torch.Tensor:
    """Binary erosion of a bool mask [H,W] by a (2 px + 1) square."""
    return -F.max_pool2d(-m.float()[None, None], 2 * px + 1, stride=1, padding=px)[0, 0] > 0.5


def affine_motion_init(flow: VideoFlow, masks: Optional[torch.Tensor], height: int, width: int) -> tuple:
    """Initial per-frame affine params of both layers and the uv scale, from chained frame-to-frame affines.

    For each layer, a robust affine of the consistent flow of each frame pair (background: outside the
    masks; foreground: inside the masks eroded by 2 px) is chained from the middle frame, so frame t's pixels
    map to the middle frame's: a camera that pans, rolls and zooms and an object that turns start aligned.
    Pairs with too few usable pixels fall back to the median flow translation (the same as
    :func:`motion_init`), and an affine whose determinant leaves [0.8, 1.25] (a bad flow field) too. Each
    layer is centred: background on the middle of its frames' footprint, foreground on the mean of its mask
    centroids. Returns (bg_init, fg_init, uv_scale) like :func:`motion_init`.
    """
    T = flow.frames
    half = max(height, width) / 2.0
    ctr = torch.tensor([(width - 1) / 2.0, (height - 1) / 2.0], dtype=torch.float64)

    def chain(region) -> torch.Tensor:
        """[T,3,3] maps from frame t pixels to middle-frame pixels."""
        steps = []
        for t in range(T - 1):
            ok = flow.fwd_ok[t] & region(t)
            A = pair_affine(flow.fwd[t].float(), ok)
            if A is not None:
                det = float(torch.linalg.det(A[:, :2]))
                if not 0.8 <= det <= 1.25:
                    A = None
            if A is None:
                use = ok if ok.sum() >= 16 else torch.ones_like(ok)
                f = flow.fwd[t].float()
                A = torch.tensor([[1.0, 0.0, float(_robust_median(f[0][use]))],
                                  [0.0, 1.0, float(_robust_median(f[1][use]))]], dtype=torch.float64)
            M = torch.eye(3, dtype=torch.float64)
            M[:2] = A
            steps.append(M)
        G = [torch.eye(3, dtype=torch.float64) for _ in range(T)]
        ref = T // 2
        for t in range(ref + 1, T):      # G_t = G_{t-1} M_{t-1}^-1 (frame t -> t-1 -> ... -> ref)
            G[t] = G[t - 1] @ torch.linalg.inv(steps[t - 1])
        for t in range(ref - 1, -1, -1):  # G_t = G_{t+1} M_t
            G[t] = G[t + 1] @ steps[t]
        return torch.stack(G)

    def params(G: torch.Tensor, centre: torch.Tensor) -> list:
        """Per-frame [a11,a12,a21,a22,bx,by] on normalised coordinates: (G_t p - centre) / half."""
        P, e = G[:, :2, :2], G[:, :2, 2]
        b = ((P @ ctr[:, None])[:, :, 0] + e - centre) / half
        return [[float(P[t, 0, 0]), float(P[t, 0, 1]), float(P[t, 1, 0]), float(P[t, 1, 1]),
                 float(b[t, 0]), float(b[t, 1])] for t in range(T)]

    if masks is None:
        bg_region = lambda t: torch.ones(height, width, dtype=torch.bool)  # noqa: E731
    else:
        bg_region = lambda t: masks[t] < 0.5  # noqa: E731
    Gb = chain(bg_region)
    corners = torch.tensor([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]],
                           dtype=torch.float64)
    cc = (Gb[:, None, :2, :] @ corners[None, :, :, None])[..., 0].reshape(-1, 2)  # every frame corner
    lo, hi = cc.min(0).values, cc.max(0).values
    bg = params(Gb, (lo + hi) / 2)
    span = (hi - lo) / (2 * half)
    scale = min(0.8, 0.9 / float(span.max()))
    fg: list = []
    if masks is not None:
        Gf = chain(lambda t: _erode(masks[t] > 0.5, 2))
        cents = []
        for t in range(T):
            m = masks[t] > 0.5
            if m.any():
                ys, xs = torch.nonzero(m, as_tuple=True)
                c = torch.tensor([float(xs.double().mean()), float(ys.double().mean()), 1.0], dtype=torch.float64)
                cents.append((Gf[t] @ c)[:2])
        if not cents:
            raise ValueError("every mask is empty; give masks that cover the foreground object, or no masks "
                             "for a background-only atlas")
        fg = params(Gf, torch.stack(cents).mean(0))
    return bg, fg, float(scale)


@torch.no_grad()
def init_alpha_from_masks(model: LayeredAtlas, masks: torch.Tensor, logit: float = 4.0) -> None:
    """Start the opacity at the masks: the finest alpha grid gets +-``logit`` from the (resampled) masks."""
    g = model.alpha_grid.grids[-1]
    m = F.interpolate(masks.float()[None, None], size=tuple(g.shape[2:]), mode="trilinear", align_corners=True)
    g.copy_((2 * m - 1) * logit)


@torch.no_grad()
def init_colour_from_frames(model: LayeredAtlas, frames16: torch.Tensor, masks: Optional[torch.Tensor],
                            on_frame=None) -> None:
    """Start the atlas colour at the frames splatted through the initial mappings (streamed per frame).

    Every pixel is splatted bilinearly onto the finest colour grid's nodes with weight 1-mask (bg) or mask
    (fg); the finest level becomes the weighted mean colour minus the coarser levels (nodes nobody reached
    keep the coarse colour). With the flow-initialised mappings this gives a good atlas at step 0.
    """
    lv = model.colour.levels[-1]
    R = lv.shape[-1]
    dev = lv.device
    acc = torch.zeros(4, R * R, device=dev)
    T, _, H, W = frames16.shape
    xs, ys = frame_pixel_grid(H, W, dev)
    for t in range(T):
        rgb = frames16[t].reshape(3, -1).float().to(dev)
        tt = torch.full_like(xs, t, dtype=torch.long)
        for layer in model.layers():
            if masks is None:
                w = torch.ones_like(xs)
            else:
                m = masks[t].reshape(-1).float().to(dev)
                w = m if layer == "fg" else 1 - m
            uv = model.uv(layer, xs, ys, tt)
            p = (uv + 1) * 0.5 * (R - 1)  # align_corners=True node coordinates
            x0, y0 = torch.floor(p[:, 0]), torch.floor(p[:, 1])
            fx, fy = p[:, 0] - x0, p[:, 1] - y0
            vals = torch.cat([rgb, torch.ones_like(xs)[None]], 0) * w[None]
            for dx, dy, k in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
                xi, yi = (x0 + dx).long(), (y0 + dy).long()
                ok = (xi >= 0) & (xi < R) & (yi >= 0) & (yi < R) & (k * w > 0)
                acc.index_add_(1, (yi * R + xi)[ok], vals[:, ok] * k[ok])
        if on_frame is not None:
            on_frame(t + 1, T)
    den = acc[3].reshape(R, R)
    mean = acc[:3].reshape(3, R, R) / den.clamp_min(1e-6)
    nodes = torch.stack(torch.meshgrid(torch.linspace(-1, 1, R, device=dev), torch.linspace(-1, 1, R, device=dev),
                                       indexing="xy"), -1).reshape(-1, 2)
    lv.zero_()
    coarse = model.colour(nodes).t().reshape(3, R, R)
    lv.copy_(torch.where(den[None] > 0.05, mean - coarse, torch.zeros_like(mean))[None])


def fit_key(frames: torch.Tensor, masks: Optional[torch.Tensor], cfg: NLAFitConfig) -> str:
    """Key of the fit's inputs and settings (every frame and mask value, every setting but
    ``checkpoint_every``); names the checkpoint file."""
    h = hashlib.sha1(CODE_VERSION.encode())
    h.update(frames_fingerprint(frames).encode())
    if masks is not None:
        h.update(frames_fingerprint(masks[:, None]).encode())
    d = cfg.to_dict()
    d.pop("checkpoint_every", None)
    if d.get("motion_init") == "translation":  # what configs without this setting do: keep their key
        d.pop("motion_init")
    h.update(json.dumps(d, sort_keys=True).encode())
    return h.hexdigest()[:16]


def resume_key(key: str, flow_estimator: str, device: torch.device) -> str:
    """What a checkpoint must match to be resumed: :func:`fit_key`, the flow estimator actually used (``auto``
    picks RAFT or the built-in one by what is installed) and the device class (CPU and CUDA round
    differently)."""
    return hashlib.sha1(f"{key}|{flow_estimator}|{torch.device(device).type}".encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------
# streaming evaluation

@torch.no_grad()
def reconstruct_frame(model: LayeredAtlas, t: int, chunk: int = 65536, crop: Optional[tuple] = None) -> tuple:
    """Reconstruction rgb [3,h,w] and alpha [h,w] of frame t (or a crop (top,left,h,w)), in pixel chunks."""
    cfg = model.cfg
    h, w = (crop[2], crop[3]) if crop is not None else (cfg.height, cfg.width)
    dev = next(model.parameters()).device
    xs, ys = frame_pixel_grid(cfg.height, cfg.width, dev, crop)
    rgb = torch.empty(xs.shape[0], 3, device=dev)
    alpha = torch.empty(xs.shape[0], device=dev)
    for s in range(0, xs.shape[0], chunk):
        x, y = xs[s:s + chunk], ys[s:s + chunk]
        out = model(x, y, torch.full_like(x, t, dtype=torch.long))
        rgb[s:s + chunk] = out["rgb"]
        alpha[s:s + chunk] = out["alpha"]
    return rgb.t().reshape(3, h, w).clamp(0, 1).cpu(), alpha.reshape(h, w).cpu()


@torch.no_grad()
def sampled_psnr(model: LayeredAtlas, frames16: torch.Tensor, idx: tuple, device, chunk: int = 65536) -> float:
    """PSNR of the reconstruction on a fixed sample of pixels idx = (t, y, x) (cheap progress measure)."""
    t, y, x = idx
    se = 0.0
    for s in range(0, t.shape[0], chunk):
        tt, yy, xx = t[s:s + chunk], y[s:s + chunk], x[s:s + chunk]
        out = model(xx.float().to(device), yy.float().to(device), tt.to(device))["rgb"].clamp(0, 1)
        se += float(((out.cpu() - frames16[tt, :, yy, xx].float()) ** 2).sum())
    return L.psnr(se / (3 * t.shape[0]))


@torch.no_grad()
def reconstruct_video(model: LayeredAtlas, frames: Optional[torch.Tensor] = None, extents: Optional[dict] = None,
                      fg_alpha_threshold: float = 0.05, chunk: int = 65536,
                      on_frame: Optional[Callable[[int, int], None]] = None) -> tuple:
    """Reconstruct every frame (streamed). Returns (rgb [T,3,H,W], alpha [T,H,W], psnr vs ``frames`` or nan).

    If ``extents`` is a dict it receives {layer: (u0, v0, u1, v1)}: the uv extent of every bg pixel and of
    fg pixels with alpha >= ``fg_alpha_threshold`` (the same pass, for the atlas bounding boxes).
    ``on_frame(t, T)`` is called after each frame (progress / cancellation)."""
    cfg = model.cfg
    dev = next(model.parameters()).device
    T, H, W = cfg.frames, cfg.height, cfg.width
    rgb = torch.empty(T, 3, H, W)
    alpha = torch.empty(T, H, W)
    inf = torch.tensor([math.inf, math.inf])
    lo = {layer: inf.clone() for layer in model.layers()}
    hi = {layer: -inf.clone() for layer in model.layers()}
    lo_any, hi_any = inf.clone(), -inf.clone()
    xs, ys = frame_pixel_grid(H, W, dev)
    se = 0.0
    for t in range(T):
        fr = torch.empty(xs.shape[0], 3)
        fa = torch.empty(xs.shape[0])
        for s in range(0, xs.shape[0], chunk):
            x, y = xs[s:s + chunk], ys[s:s + chunk]
            out = model(x, y, torch.full_like(x, t, dtype=torch.long))
            fr[s:s + chunk] = out["rgb"].clamp(0, 1).cpu()
            fa[s:s + chunk] = out["alpha"].cpu()
            for layer in model.layers():
                uv = model.to_uv(layer, out[f"m_{layer}"]).cpu()
                if layer == "fg":
                    lo_any = torch.minimum(lo_any, uv.min(0).values)
                    hi_any = torch.maximum(hi_any, uv.max(0).values)
                    uv = uv[out["alpha"].cpu() >= fg_alpha_threshold]
                    if uv.shape[0] == 0:
                        continue
                lo[layer] = torch.minimum(lo[layer], uv.min(0).values)
                hi[layer] = torch.maximum(hi[layer], uv.max(0).values)
        rgb[t] = fr.t().reshape(3, H, W)
        alpha[t] = fa.reshape(H, W)
        if frames is not None:
            se += float(((rgb[t] - frames[t].float()) ** 2).sum())
        if on_frame is not None:
            on_frame(t + 1, T)
    if extents is not None:
        for layer in model.layers():
            if not torch.isfinite(lo[layer]).all():  # no fg pixel above the threshold: use all pixels
                lo[layer], hi[layer] = lo_any, hi_any
            extents[layer] = (float(lo[layer][0]), float(lo[layer][1]), float(hi[layer][0]), float(hi[layer][1]))
    p = L.psnr(se / rgb.numel()) if frames is not None else float("nan")
    return rgb, alpha, p


# ----------------------------------------------------------------------------------------------------
# checkpoints

def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict:
    out = {}
    for i, group in enumerate(opt.param_groups):
        for j, p in enumerate(group["params"]):
            st = opt.state.get(p, {})
            for k in ("exp_avg", "exp_avg_sq"):
                if k in st:
                    out[f"opt.{i}.{j}.{k}"] = st[k].detach().cpu().contiguous()
            if "step" in st:
                out[f"opt.{i}.{j}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    return out


def _load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict) -> None:
    for i, group in enumerate(opt.param_groups):
        for j, p in enumerate(group["params"]):
            pre = f"opt.{i}.{j}."
            if pre + "exp_avg" in tensors:
                opt.state[p] = {
                    # the fused Adam keeps its step count on the parameter's device
                    "step": torch.tensor(float(tensors[pre + "step"][0]), device=p.device),
                    "exp_avg": tensors[pre + "exp_avg"].to(p.device),
                    "exp_avg_sq": tensors[pre + "exp_avg_sq"].to(p.device),
                }


def save_checkpoint(path: str, model: LayeredAtlas, opt: torch.optim.Optimizer, step: int, gen: torch.Generator,
                    key: str, fit_cfg: NLAFitConfig) -> None:
    """Resumable checkpoint (safetensors): model + Adam state + step + RNG state; config in metadata."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(_optimizer_tensors(opt))
    tensors["rng_state"] = gen.get_state().clone()
    meta = {"key": key, "step": str(step), "atlas_config": json.dumps(model.cfg.to_dict()),
            "fit_config": json.dumps(fit_cfg.to_dict()), "format": "t2l-nla-checkpoint"}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(path: str, key: str) -> Optional[tuple]:
    """(tensors, step, atlas_config) if ``path`` holds a checkpoint for ``key``; None otherwise."""
    if not path or not os.path.isfile(path):
        return None
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("key") != key:
            return None
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, int(meta["step"]), AtlasConfig.from_dict(json.loads(meta["atlas_config"]))


# ----------------------------------------------------------------------------------------------------
# the loop

def _param_groups(model: LayeredAtlas, cfg: NLAFitConfig) -> list:
    groups = [{"params": list(model.colour.parameters()), "lr": cfg.lr_colour}]
    maps = [model.map_bg] + ([model.map_fg] if model.map_fg is not None else [])
    groups.append({"params": [m.affine for m in maps], "lr": cfg.lr_affine})
    groups.append({"params": [p for m in maps for p in m.residual.parameters()], "lr": cfg.lr_mapping})
    if model.alpha_grid is not None:
        groups.append({"params": list(model.alpha_grid.parameters()), "lr": cfg.lr_alpha})
    return groups


def _gather_rgb(frames16: torch.Tensor, t: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return frames16[t, :, y, x].float()


def training_step(model: LayeredAtlas, frames16: torch.Tensor, masks: Optional[torch.Tensor], flow: VideoFlow,
                  step: int, total: int, cfg: NLAFitConfig, gen: torch.Generator, device: torch.device,
                  defer_logs: bool = False) -> tuple:
    """One loss evaluation on a random pixel batch. Returns (total loss, dict of float terms); with
    ``defer_logs`` the terms stay detached device tensors for :func:`step_logs` after the backward pass.
    The pixel batch is drawn and gathered on the CPU; its copies to a GPU are queued without waiting for
    the device (``non_blocking``: pageable memory is staged at once), so a step has no host-device wait."""
    T, _, H, W = frames16.shape
    w = cfg.weights
    N = cfg.batch_pixels
    t = torch.randint(0, T, (N,), generator=gen)
    y = torch.randint(0, H, (N,), generator=gen)
    x = torch.randint(0, W, (N,), generator=gen)
    pixel_scale = (max(H, W) / 2.0) / model.cfg.uv_scale

    xf, yf = x.float().to(device, non_blocking=True), y.float().to(device, non_blocking=True)
    td = t.to(device, non_blocking=True)
    # the pixel, its right neighbour and its lower neighbour in one pass
    out = model(torch.cat([xf, xf + 1, xf]), torch.cat([yf, yf, yf + 1]), torch.cat([td, td, td]))
    rgb, rgb_x, rgb_y = out["rgb"].split(N)
    target = _gather_rgb(frames16, t, y, x).to(device, non_blocking=True)
    x1 = (x + 1).clamp(max=W - 1)
    y1 = (y + 1).clamp(max=H - 1)
    gt_dx = _gather_rgb(frames16, t, y, x1).to(device, non_blocking=True) - target
    gt_dy = _gather_rgb(frames16, t, y1, x).to(device, non_blocking=True) - target
    in_x = (x < W - 1).to(device, non_blocking=True)[:, None].float()
    in_y = (y < H - 1).to(device, non_blocking=True)[:, None].float()

    terms: dict = {}
    terms["rgb"] = L.rgb_loss(rgb, target)
    terms["gradient"] = L.gradient_loss((rgb_x - rgb) * in_x, (rgb_y - rgb) * in_y, gt_dx * in_x, gt_dy * in_y)

    alpha_all = out["alpha"]
    alpha = alpha_all[:N]
    layers = model.layers()
    gsteps = w.steps("global_rigidity", total)
    gpx = float(max(2, round(w.global_rigidity_px * max(H, W) / 768)))

    # flow correspondences (forward for t < T-1, backward for t > 0)
    has_f = t < T - 1
    has_b = t > 0
    tf = t.clamp(max=T - 2)
    tb = (t - 1).clamp(min=0)
    ff = flow.fwd[tf, :, y, x].float()
    fb = flow.bwd[tb, :, y, x].float()
    ok_f = (flow.fwd_ok[tf, y, x] & has_f).to(device, non_blocking=True)
    ok_b = (flow.bwd_ok[tb, y, x] & has_b).to(device, non_blocking=True)
    xm = torch.cat([xf + ff[:, 0].to(device, non_blocking=True), xf + fb[:, 0].to(device, non_blocking=True)])
    ym = torch.cat([yf + ff[:, 1].to(device, non_blocking=True), yf + fb[:, 1].to(device, non_blocking=True)])
    tm = torch.cat([(t + 1).clamp(max=T - 1), (t - 1).clamp(min=0)]).to(device, non_blocking=True)

    terms["rigidity"] = torch.zeros((), device=device)
    terms["flow"] = torch.zeros((), device=device)
    terms["global_rigidity"] = torch.zeros((), device=device)
    for layer in layers:
        m_all = out[f"m_{layer}"]
        m, m_x, m_y = m_all.split(N)
        # local rigidity with 1 px forward differences (same as NLA's backward ones up to the sign)
        J = L.mapping_jacobian(m_x, m, m, 1.0, pixel_scale)  # column 0 from M(p+ex)-M(p) ...
        J = torch.stack([J[..., 0], (m_y - m) * pixel_scale], dim=-1)  # ... column 1 from M(p+ey)-M(p)
        terms["rigidity"] = terms["rigidity"] + L.rigidity_from_jacobian(J).mean()
        if step < gsteps:
            mg = model.mapping(layer, torch.cat([xf - gpx, xf]), torch.cat([yf, yf - gpx]), torch.cat([td, td]))
            mgx, mgy = mg.split(N)
            gw = w.global_rigidity_fg if layer == "fg" else w.global_rigidity_bg
            terms["global_rigidity"] = terms["global_rigidity"] + gw * L.rigidity_loss(m, mgx, mgy, gpx, pixel_scale)
        mm = model.mapping(layer, xm, ym, tm)
        mf, mb = mm.split(N)
        wgt = alpha if layer == "fg" else (1 - alpha)
        terms["flow"] = terms["flow"] + 0.5 * (L.flow_consistency_loss(m, mf, ok_f, wgt, pixel_scale)
                                               + L.flow_consistency_loss(m, mb, ok_b, wgt, pixel_scale))
        if step < w.steps("warmup", total):
            terms[f"warmup_{layer}"] = L.mapping_warmup_loss(m, model.initial_mapping(layer, xf, yf, td))

    if "fg" in layers:
        am = model.alpha(xm, ym, tm)
        af, ab = am.split(N)
        terms["alpha_flow"] = 0.5 * (L.alpha_flow_loss(alpha, af, ok_f) + L.alpha_flow_loss(alpha, ab, ok_b))
        terms["sparsity"] = L.sparsity_loss(out["rgb_fg"][:N], alpha)
        if masks is not None and step < w.steps("bootstrap", total):
            terms["bootstrap"] = L.alpha_bootstrap_loss(alpha, masks[t, y, x].float().to(device, non_blocking=True))

    weights = {"rgb": w.rgb, "gradient": w.gradient, "rigidity": w.rigidity, "global_rigidity": 1.0, "flow": w.flow,
               "alpha_flow": w.alpha_flow, "sparsity": w.sparsity, "bootstrap": w.bootstrap,
               "warmup_fg": w.warmup, "warmup_bg": w.warmup}
    total_loss = L.weighted_total(terms, weights)
    pending = {k: v.detach() for k, v in terms.items()}
    return total_loss, (pending if defer_logs else step_logs(pending))


def step_logs(terms: dict) -> dict:
    """A step's detached loss terms -> floats (one device-to-host transfer) plus the batch PSNR."""
    logs = losses_to_floats(terms)
    logs["psnr_batch"] = L.psnr(logs["rgb"] / 3.0)
    return logs


def fit_nla(frames: torch.Tensor, masks: Optional[torch.Tensor] = None, config: Optional[NLAFitConfig] = None,
            hooks: Optional[Hooks] = None, device: str | torch.device = "auto",
            checkpoint_path: Optional[str] = None, resume: bool = True, flow: Optional[VideoFlow] = None,
            flow_search_dirs: Sequence[str] = (), flow_cache_path: Optional[str] = None,
            keep_checkpoint: bool = False) -> FittedNLA:
    """Fit a layered atlas to ``frames`` [T,3,H,W] (0..1) with optional ``masks`` [T,H,W] (1 = foreground).

    Without masks the atlas has only a background layer. ``checkpoint_path``: where a resumable checkpoint
    is written on cancel/error (and every ``config.checkpoint_every`` steps); with ``resume`` an existing
    checkpoint of the same inputs, config, flow estimator and device class is continued (another one is not
    used and is replaced; ``notes`` of the result say so). Flow is computed once (or taken from ``flow`` /
    ``flow_cache_path``, where it is kept while the fit may be resumed). A finished fit removes the
    checkpoint and the flow cache unless ``keep_checkpoint``. Returns a :class:`FittedNLA` with the
    reconstruction PSNR.
    """
    cfg = config or NLAFitConfig()
    hooks = hooks or Hooks()
    validate_inputs(frames, masks)
    check_fit_memory(frames.shape[0], frames.shape[2], frames.shape[3], masks is not None, cfg.batch_pixels)
    with torch.inference_mode(False), torch.enable_grad():
        # frames are only read (an fp16 copy is made inside); masks are small enough to copy
        return _fit(frames.detach(), None if masks is None else masks.detach().clone().float(), cfg, hooks,
                    resolve_device(device), checkpoint_path, resume, flow, flow_search_dirs, flow_cache_path,
                    keep_checkpoint)


def _fit(frames, masks, cfg, hooks, device, checkpoint_path, resume, flow, flow_search_dirs, flow_cache_path,
         keep_checkpoint=False):
    T, _, H, W = frames.shape
    frames16 = frames.to(torch.float16)
    fp = f"{frames_fingerprint(frames)}:{cfg.flow}"
    if flow is None and flow_cache_path:
        flow = load_flow(flow_cache_path, key=fp)
    if flow is None:
        estimator, name = make_flow_estimator(device, flow_search_dirs, cfg.flow)
        flow = compute_video_flow(lambda i: frames[i].float(), T, estimator, name,
                                  on_pair=hooks.phase_callback("optical flow (frame pairs)"))
        if flow_cache_path:
            save_flow(flow, flow_cache_path, key=fp)
    if flow.frames != T or tuple(flow.fwd.shape[-2:]) != (H, W):
        raise ValueError("the given optical flow does not match the frames (count or size); recompute it")
    require_finite(flow.fwd, "the optical flow", "Check the frames, or use the built-in estimator (flow 'lk').")
    require_finite(flow.bwd, "the optical flow", "Check the frames, or use the built-in estimator (flow 'lk').")
    key = resume_key(fit_key(frames, masks, cfg), flow.estimator, device)
    notes: list = []

    if cfg.motion_init not in ("affine", "translation"):
        raise ValueError(f"motion_init must be 'affine' or 'translation', got {cfg.motion_init!r}")
    init_fn = affine_motion_init if cfg.motion_init == "affine" else motion_init
    bg_init, fg_init, scale = init_fn(flow, masks, H, W)
    acfg = AtlasConfig(height=H, width=W, frames=T, has_foreground=masks is not None, uv_scale=scale,
                       fg_init=fg_init, bg_init=bg_init)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    start = 0
    ck = load_checkpoint(checkpoint_path, key) if (resume and checkpoint_path) else None
    if ck is not None:
        tensors, start, acfg = ck
        if start > 0:
            notes.append(resumed_note(checkpoint_path, start, cfg.iterations))
    elif resume and checkpoint_path and os.path.isfile(checkpoint_path):
        notes.append(stale_note(checkpoint_path))
    model = LayeredAtlas(acfg).to(device)
    opt = torch.optim.Adam(_param_groups(model, cfg), betas=(0.9, 0.99), fused=True)
    if ck is None:
        if masks is not None:
            init_alpha_from_masks(model, masks)
        if cfg.init_colour:
            init_colour_from_frames(model, frames16, masks, on_frame=hooks.phase_callback("atlas colour init (frames)"))
    if ck is not None:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        _load_optimizer_tensors(opt, tensors)
        gen.set_state(tensors["rng_state"])

    total = int(cfg.iterations)
    step = start
    base_lrs = [g["lr"] for g in opt.param_groups]
    eval_idx = None
    if cfg.target_psnr > 0:
        eg = torch.Generator().manual_seed(12345)
        n = int(cfg.eval_pixels)
        eval_idx = (torch.randint(0, T, (n,), generator=eg), torch.randint(0, H, (n,), generator=eg),
                    torch.randint(0, W, (n,), generator=eg))
    try:
        while step < total:
            hooks.cancel_point()
            for g, base in zip(opt.param_groups, base_lrs):  # stateless decay to lr_final_ratio (resume-safe)
                g["lr"] = base * cfg.lr_final_ratio ** (step / max(total, 1))
            opt.zero_grad(set_to_none=True)
            gen_state = gen.get_state()  # the RNG at the start of this step, for the last-good-state checkpoint
            loss, pending = training_step(model, frames16, masks, flow, step, total, cfg, gen, device, defer_logs=True)
            if not bool(torch.isfinite(loss.detach())):  # before backward: NaN sample positions must not get there
                saved = None
                if checkpoint_path and all_finite(model.parameters(), optimizer_tensors(opt)):
                    at_start = torch.Generator()
                    at_start.set_state(gen_state)
                    save_checkpoint(checkpoint_path, model, opt, step, at_start, key, cfg)
                    saved = checkpoint_path
                raise NonFiniteLoss(nonfinite_message(
                    step + 1, {k: round(v, 6) for k, v in step_logs(pending).items()}, saved,
                    "Lower the learning rates, or check the frames and masks."))
            loss.backward()
            opt.step()
            logs = step_logs(pending)  # after the step: the host never waits for the device inside it
            step += 1
            if cfg.checkpoint_every and checkpoint_path and step % cfg.checkpoint_every == 0:
                save_checkpoint(checkpoint_path, model, opt, step, gen, key, cfg)
            if eval_idx is not None and (step % cfg.eval_every == 0 or step == total):
                logs["psnr_sampled"] = sampled_psnr(model, frames16, eval_idx, device)
                if logs["psnr_sampled"] >= cfg.target_psnr:
                    total = step  # reached the target: this is the last step
            hooks.step(step, total, logs, lambda: reconstruct_frame(model, (step // max(hooks.preview_every, 1)) % T)[0].permute(1, 2, 0))
    except NonFiniteLoss:
        raise
    except BaseException:
        if checkpoint_path:
            save_checkpoint(checkpoint_path, model, opt, step, gen, key, cfg)
        raise
    if checkpoint_path and keep_checkpoint:
        save_checkpoint(checkpoint_path, model, opt, step, gen, key, cfg)
    elif checkpoint_path:
        remove_run_file(checkpoint_path)
    if flow_cache_path and not keep_checkpoint:
        remove_run_file(flow_cache_path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    extents: dict = {}
    rec_rgb, rec_alpha, p = reconstruct_video(model, frames, extents, on_frame=hooks.phase_callback("reconstruction (frames)"))
    u8 = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)
    from .atlas_render import bbox_from_extent

    bboxes = {layer: bbox_from_extent(model, layer, extents[layer], cfg.atlas_resolution) for layer in model.layers()}
    return FittedNLA(model=model, frames_u8=u8, fit_config=cfg.to_dict(), psnr=p, steps=step,
                     flow_estimator=flow.estimator, bboxes=bboxes,
                     reconstruction=(rec_rgb, rec_alpha), notes=notes)
