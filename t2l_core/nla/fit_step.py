"""One step of the atlas fit: a random pixel batch and the NLA loss terms on it.

The terms are those of NLA (Kasten et al. 2021, Sec. 3; :mod:`t2l_core.nla.losses`): reconstruction (colour
and its spatial gradient), per layer the mapping terms (local and, early on, global rigidity, optical-flow
consistency and the warm-up towards the initial mapping), and for a foreground layer the opacity terms
(alpha flow consistency, sparsity and, early on, alpha bootstrapping from the masks). Our grid mappings add
one term of their own: a prior that keeps a layer's residual grids near its per-frame affine motion where
nothing else fixes them. Each term is added in a fixed order, so a step computes the same floating-point
sums on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..progress import losses_to_floats
from ..reductions import stable_mean
from . import losses as L
from .atlas_model import LayeredAtlas
from .config import NLAFitConfig
from .optical_flow import VideoFlow


@dataclass
class PixelBatch:
    """A step's random pixels: indices on the CPU (to gather frames, flow and masks) and coordinates on the
    model's device."""

    t: torch.Tensor   # [N] long, frame index
    y: torch.Tensor   # [N] long, row
    x: torch.Tensor   # [N] long, column
    xf: torch.Tensor  # [N] float x on the device
    yf: torch.Tensor  # [N] float y on the device
    td: torch.Tensor  # [N] long t on the device

    @property
    def n(self) -> int:
        """The batch size N."""
        return int(self.t.shape[0])


@dataclass
class FlowMatches:
    """Where the batch's pixels move by optical flow: the forward points (frame t+1) then the backward ones
    (frame t-1), each half [N], and which of them are flow-consistent."""

    xm: torch.Tensor    # [2N] float
    ym: torch.Tensor    # [2N] float
    tm: torch.Tensor    # [2N] long
    ok_f: torch.Tensor  # [N] bool, forward flow consistent (and t < T-1)
    ok_b: torch.Tensor  # [N] bool, backward flow consistent (and t > 0)


def sample_pixels(frames16: torch.Tensor, n: int, gen: torch.Generator, device: torch.device) -> PixelBatch:
    """Draw ``n`` pixels (t, y, x) uniformly with replacement (NLA samples every pixel of every frame).

    The copies to a GPU are queued without waiting for the device (``non_blocking``).

    Args:
        frames16: [T,3,H,W] (only its shape is used).
        n: pixels per step.
        gen: the fit's CPU generator (draws t, then y, then x).
        device: the model's device.

    Returns:
        The :class:`PixelBatch`.
    """
    T, _, H, W = frames16.shape
    t = torch.randint(0, T, (n,), generator=gen)
    y = torch.randint(0, H, (n,), generator=gen)
    x = torch.randint(0, W, (n,), generator=gen)
    xf, yf = x.float().to(device, non_blocking=True), y.float().to(device, non_blocking=True)
    return PixelBatch(t, y, x, xf, yf, t.to(device, non_blocking=True))


def _gather_rgb(frames16: torch.Tensor, t: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return frames16[t, :, y, x].float()


def reconstruction_terms(out: dict, frames16: torch.Tensor, b: PixelBatch, device: torch.device) -> dict:
    """The colour term ||c_hat - c||^2 and the gradient term on 1 px forward differences (NLA Sec. 3).

    Args:
        out: the model's outputs at the pixels, their right neighbours and their lower neighbours ([3N]).
        frames16: [T,3,H,W] fp16 in 0..1 on the CPU.
        b: the pixel batch.
        device: the model's device.

    Returns:
        {"rgb": scalar, "gradient": scalar}; differences across the frame border count as 0.
    """
    _, _, H, W = frames16.shape
    t, y, x = b.t, b.y, b.x
    rgb, rgb_x, rgb_y = out["rgb"].split(b.n)
    target = _gather_rgb(frames16, t, y, x).to(device, non_blocking=True)
    x1 = (x + 1).clamp(max=W - 1)
    y1 = (y + 1).clamp(max=H - 1)
    gt_dx = _gather_rgb(frames16, t, y, x1).to(device, non_blocking=True) - target
    gt_dy = _gather_rgb(frames16, t, y1, x).to(device, non_blocking=True) - target
    in_x = (x < W - 1).to(device, non_blocking=True)[:, None].float()
    in_y = (y < H - 1).to(device, non_blocking=True)[:, None].float()
    return {"rgb": L.rgb_loss(rgb, target),
            "gradient": L.gradient_loss((rgb_x - rgb) * in_x, (rgb_y - rgb) * in_y, gt_dx * in_x, gt_dy * in_y)}


def flow_matches(flow: VideoFlow, b: PixelBatch, device: torch.device) -> FlowMatches:
    """The batch's flow correspondences: forward for t < T-1, backward for t > 0.

    Args:
        flow: the video's flow (fp16 [T-1,2,H,W] each way) and consistency masks.
        b: the pixel batch.
        device: the model's device.

    Returns:
        The :class:`FlowMatches` (points of pixels without a neighbour frame are not valid).
    """
    T, t, y, x = flow.frames, b.t, b.y, b.x
    has_f = t < T - 1
    has_b = t > 0
    tf = t.clamp(max=T - 2)
    tb = (t - 1).clamp(min=0)
    ff = flow.fwd[tf, :, y, x].float()
    fb = flow.bwd[tb, :, y, x].float()
    ok_f = (flow.fwd_ok[tf, y, x] & has_f).to(device, non_blocking=True)
    ok_b = (flow.bwd_ok[tb, y, x] & has_b).to(device, non_blocking=True)
    xm = torch.cat([b.xf + ff[:, 0].to(device, non_blocking=True), b.xf + fb[:, 0].to(device, non_blocking=True)])
    ym = torch.cat([b.yf + ff[:, 1].to(device, non_blocking=True), b.yf + fb[:, 1].to(device, non_blocking=True)])
    tm = torch.cat([(t + 1).clamp(max=T - 1), (t - 1).clamp(min=0)]).to(device, non_blocking=True)
    return FlowMatches(xm, ym, tm, ok_f, ok_b)


@dataclass
class StepScale:
    """Per-step constants of the mapping terms."""

    step: int           # 0-based step
    total: int          # the fit's iterations
    pixel_scale: float  # mapping units -> pixels: (L/2) / uv_scale, L = max(H, W)
    global_px: float    # the global rigidity's finite difference in pixels (NLA: 100 px at 768 px)


def add_layer_terms(terms: dict, model: LayeredAtlas, layer: str, out: dict, b: PixelBatch, matches: FlowMatches,
                    alpha: torch.Tensor, weights: L.NLALossWeights, s: StepScale) -> None:
    """Add one layer's mapping terms to ``terms`` (NLA Sec. 3): local rigidity, global rigidity (early steps,
    weighted per layer), flow consistency weighted by alpha (fg) or 1 - alpha (bg), the warm-up, and the prior
    towards the per-frame affine motion when the layer's weight is not 0.

    Args:
        terms: the step's terms; "rigidity", "flow" and "global_rigidity" are accumulated over layers,
            ``warmup_<layer>`` and ``residual_<layer>`` are set.
        model: the atlas.
        layer: "fg" or "bg".
        out: the model's outputs at the pixels and their right/lower neighbours ([3N]).
        b: the pixel batch.
        matches: the batch's flow correspondences.
        alpha: [N] foreground opacity at the pixels, in (0, 1).
        weights: the loss weights and schedules.
        s: the step's constants.
    """
    N = b.n
    m, m_x, m_y = out[f"m_{layer}"].split(N)
    # local rigidity with 1 px forward differences (same as NLA's backward ones up to the sign)
    J = L.mapping_jacobian(m_x, m, m, 1.0, s.pixel_scale)  # column 0 from M(p+ex)-M(p) ...
    J = torch.stack([J[..., 0], (m_y - m) * s.pixel_scale], dim=-1)  # ... column 1 from M(p+ey)-M(p)
    terms["rigidity"] = terms["rigidity"] + stable_mean(L.rigidity_from_jacobian(J))
    if s.step < weights.steps("global_rigidity", s.total):
        gpx = s.global_px
        mg = model.mapping(layer, torch.cat([b.xf - gpx, b.xf]), torch.cat([b.yf, b.yf - gpx]), torch.cat([b.td, b.td]))
        mgx, mgy = mg.split(N)
        gw = weights.global_rigidity_fg if layer == "fg" else weights.global_rigidity_bg
        terms["global_rigidity"] = terms["global_rigidity"] + gw * L.rigidity_loss(m, mgx, mgy, gpx, s.pixel_scale)
    mf, mb = model.mapping(layer, matches.xm, matches.ym, matches.tm).split(N)
    wgt = alpha if layer == "fg" else (1 - alpha)
    terms["flow"] = terms["flow"] + 0.5 * (L.flow_consistency_loss(m, mf, matches.ok_f, wgt, s.pixel_scale)
                                           + L.flow_consistency_loss(m, mb, matches.ok_b, wgt, s.pixel_scale))
    if getattr(weights, f"residual_{layer}") > 0:
        terms[f"residual_{layer}"] = L.residual_loss(m, model.affine_mapping(layer, b.xf, b.yf, b.td), s.pixel_scale)
    if s.step < weights.steps("warmup", s.total):
        terms[f"warmup_{layer}"] = L.mapping_warmup_loss(m, model.initial_mapping(layer, b.xf, b.yf, b.td))


def add_opacity_terms(terms: dict, model: LayeredAtlas, out: dict, b: PixelBatch, matches: FlowMatches,
                      alpha: torch.Tensor, masks: Optional[torch.Tensor], bootstrap: bool,
                      device: torch.device) -> None:
    """Add the foreground opacity terms to ``terms`` (NLA Sec. 3): alpha flow consistency, sparsity of the
    foreground colour where alpha is 0, and alpha bootstrapping from the masks while ``bootstrap``.

    Args:
        terms: the step's terms ("alpha_flow", "sparsity" and maybe "bootstrap" are set).
        model: an atlas with a foreground layer.
        out: the model's outputs ([3N]).
        b: the pixel batch.
        matches: the batch's flow correspondences.
        alpha: [N] foreground opacity at the pixels, in (0, 1).
        masks: None, or [T,H,W] in 0..1 on the CPU.
        bootstrap: whether the bootstrapping term is still on.
        device: the model's device.
    """
    af, ab = model.alpha(matches.xm, matches.ym, matches.tm).split(b.n)
    terms["alpha_flow"] = 0.5 * (L.alpha_flow_loss(alpha, af, matches.ok_f) + L.alpha_flow_loss(alpha, ab, matches.ok_b))
    terms["sparsity"] = L.sparsity_loss(out["rgb_fg"][:b.n], alpha)
    if masks is not None and bootstrap:
        terms["bootstrap"] = L.alpha_bootstrap_loss(alpha, masks[b.t, b.y, b.x].float().to(device, non_blocking=True))


def term_weights(w: L.NLALossWeights) -> dict:
    """The weight of each term in the total.

    Args:
        w: the fit's loss weights.

    Returns:
        {term name: weight}; the global rigidity's is 1 (its per-layer weights are applied in the term).
    """
    return {"rgb": w.rgb, "gradient": w.gradient, "rigidity": w.rigidity, "global_rigidity": 1.0, "flow": w.flow,
            "alpha_flow": w.alpha_flow, "sparsity": w.sparsity, "bootstrap": w.bootstrap,
            "warmup_fg": w.warmup, "warmup_bg": w.warmup, "residual_fg": w.residual_fg, "residual_bg": w.residual_bg}


def training_step(model: LayeredAtlas, frames16: torch.Tensor, masks: Optional[torch.Tensor], flow: VideoFlow,
                  step: int, total: int, cfg: NLAFitConfig, gen: torch.Generator, device: torch.device,
                  defer_logs: bool = False) -> tuple:
    """One loss evaluation on a random pixel batch (sample, reconstruct, NLA terms, weighted total).

    The pixel batch is drawn and gathered on the CPU; its copies to a GPU are queued without waiting for the
    device, so a step has no host-device wait.

    Args:
        model: the atlas being fitted.
        frames16: [T,3,H,W] fp16 in 0..1 on the CPU.
        masks: None, or [T,H,W] in 0..1 on the CPU.
        flow: the video's flow.
        step: the 0-based step (schedules of the global rigidity, bootstrap and warm-up terms).
        total: the fit's iterations.
        cfg: the fit's settings (batch size, loss weights).
        gen: the fit's CPU generator.
        device: the model's device.
        defer_logs: keep the terms as detached device tensors for :func:`step_logs` after the backward pass.

    Returns:
        (total loss, terms): a scalar with a graph, and a dict of float terms (or of detached tensors).
    """
    T, _, H, W = frames16.shape
    w = cfg.weights
    b = sample_pixels(frames16, cfg.batch_pixels, gen, device)
    scale = StepScale(step, total, (max(H, W) / 2.0) / model.cfg.uv_scale,
                      float(max(2, round(w.global_rigidity_px * max(H, W) / 768))))
    # the pixel, its right neighbour and its lower neighbour in one pass
    out = model(torch.cat([b.xf, b.xf + 1, b.xf]), torch.cat([b.yf, b.yf, b.yf + 1]), torch.cat([b.td, b.td, b.td]))
    terms = reconstruction_terms(out, frames16, b, device)
    alpha = out["alpha"][:b.n]
    matches = flow_matches(flow, b, device)
    for name in ("rigidity", "flow", "global_rigidity"):
        terms[name] = torch.zeros((), device=device)
    for layer in model.layers():
        add_layer_terms(terms, model, layer, out, b, matches, alpha, w, scale)
    if "fg" in model.layers():
        add_opacity_terms(terms, model, out, b, matches, alpha, masks, step < w.steps("bootstrap", total), device)
    total_loss = L.weighted_total(terms, term_weights(w))
    pending = {k: v.detach() for k, v in terms.items()}
    return total_loss, (pending if defer_logs else step_logs(pending))


def step_logs(terms: dict) -> dict:
    """A step's detached loss terms as floats (one device-to-host transfer) plus the batch PSNR.

    Args:
        terms: {name: detached scalar tensor}.

    Returns:
        {name: float} and "psnr_batch" (dB, from the colour term).
    """
    logs = losses_to_floats(terms)
    logs["psnr_batch"] = L.psnr(logs["rgb"] / 3.0)
    return logs
