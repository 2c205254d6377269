"""Atlas consistency against ground-truth correspondences: where an atlas edit lands, and how much the atlas
position of one canonical texture point wanders between frames.

What is measured (per layer, see :func:`layer_consistency`)
----------------------------------------------------------
Points (``points="all"``, the default): canonical texture points ``c_i`` on a regular grid of the layer's
canonical texture (``stride`` texture px, about ``stride`` frame px) that the layer shows purely
(:meth:`GroundTruthVideo.visible`) in at least one frame: every visible point of every frame at that density,
including points near the frame border, points that enter or leave the frame and points hidden behind the
other layer in some frames. Each point's reference frame ``t_ref`` is the frame nearest to the middle frame
(or the given ``t_ref``) where it is visible, and ``q_i`` its position there. With ``points="reference"``
the points are the grid pixels (``stride`` frame px) of one reference frame where the layer is purely
visible, so points never visible in that frame are not measured.

Edit-landing error. A dot painted on the atlas at ``U_i = uv(q_i, t_ref)`` (the fitted mapping at the
reference pixel) is drawn in frame t wherever the fitted mapping sends a pixel to ``U_i``: at the solution
``q`` of ``uv(q, t) = U_i``. The truth puts it at ``p_i(t)``, the exact frame position of ``c_i`` in frame t.
The error is ``|q - p_i(t)|`` in frame pixels, over every (point, frame) pair with ``t != t_ref`` where the
truth shows ``c_i`` in that layer. ``q`` is found by Newton's method started at ``p_i(t)`` with a
central-difference Jacobian (0.25 px), so it is the landing place nearest to the truth (a torn or folded
atlas may draw the dot a second time elsewhere: that copy is not counted). A pair whose Newton residual stays
above 0.01 px (the fitted mapping never reaches ``U_i`` near there, e.g. clamped at the atlas border) counts
as an infinite error (the dot is missing). Pairs whose truth position ``p_i(t)`` lies within ``border_px`` of
the frame border form the border band, reported separately (and counted in the totals too).

Spread of atlas coordinates. For each point, ``uv(p_i(t), t)`` over all frames where it is seen;
the spread of a pair is its distance to the point's mean atlas position, in atlas pixels (``atlas_px_per_uv``
texels per uv unit) and in frame pixels (mapped back through the inverse of the local Jacobian
``d uv / d q`` at ``(p_i(t), t)``).

Reported: median, 95th percentile and maximum of both, the number of points, pairs and missing pairs, and the
landing error's median and 95th percentile over the border band and over the pairs inside it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch

UVFn = Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]  # (layer, q [N,2] px, t [N] long) -> uv [N,2]


@dataclass
class LayerConsistency:
    layer: str
    points: int
    pairs: int
    missing: int
    landing_median_px: float
    landing_p95_px: float
    landing_max_px: float
    spread_median_atlas_px: float
    spread_p95_atlas_px: float
    spread_median_frame_px: float
    spread_p95_frame_px: float
    border_px: float = 24.0
    border_pairs: int = 0
    border_landing_median_px: float = float("nan")
    border_landing_p95_px: float = float("nan")
    inner_landing_median_px: float = float("nan")
    inner_landing_p95_px: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def model_uv_fn(model) -> UVFn:
    """The uv function of a fitted :class:`t2l_core.nla.atlas_model.LayeredAtlas` (float32 evaluation, float64 out)."""

    @torch.no_grad()
    def fn(layer: str, q: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dev = next(model.parameters()).device
        out = []
        for s in range(0, q.shape[0], 65536):
            qq = q[s:s + 65536].float().to(dev)
            out.append(model.uv(layer, qq[:, 0], qq[:, 1], t[s:s + 65536].to(dev)).double().cpu())
        return torch.cat(out) if out else torch.empty(0, 2, dtype=torch.float64)

    return fn


def reference_points(video, layer: str, t_ref: int, stride: int) -> tuple:
    """(q [N,2] frame px at ``t_ref``, c [N,2] canonical) of grid pixels where ``layer`` is purely visible."""
    H, W = video.size
    ys, xs = torch.meshgrid(torch.arange(0, H, stride, dtype=torch.float64),
                            torch.arange(0, W, stride, dtype=torch.float64), indexing="ij")
    q = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)
    t = torch.full((q.shape[0],), t_ref, dtype=torch.long)
    ok = video.visible(layer, q, t)
    q = q[ok]
    return q, video.canonical(layer, q, t[ok])


def canonical_grid_points(video, layer: str, stride: int, frames: list) -> tuple:
    """Canonical points of ``layer`` on a ``stride``-texture-px grid over its canonical texture that are purely
    visible in at least one of ``frames``.

    Returns (c [N,2] canonical, pos [F,N,2] frame px in each of ``frames``, vis [F,N] bool)."""
    tex = video.bg_texture if layer == "bg" else video.fg_texture
    if tex is None:
        raise ValueError(f"the video has no layer {layer!r}")
    h, w = tex.shape[1:]
    ys, xs = torch.meshgrid(torch.arange(0, h, stride, dtype=torch.float64),
                            torch.arange(0, w, stride, dtype=torch.float64), indexing="ij")
    c = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)
    if layer == "fg":  # only points on the object (the texture's opacity is 0 outside the ellipse)
        from ground_truth_video import sample_texture
        c = c[sample_texture(tex[3:], c)[0] > 0.5]
    pos, vis = [], []
    for t in frames:
        tt = torch.full((c.shape[0],), t, dtype=torch.long)
        p = video.frame_position(layer, c, tt)
        pos.append(p)
        vis.append(video.visible(layer, p, tt))
    pos, vis = torch.stack(pos), torch.stack(vis)
    seen = vis.any(0)
    return c[seen], pos[:, seen], vis[:, seen]


def border_distance(q: torch.Tensor, size: tuple) -> torch.Tensor:
    """Distance [N] in px of frame points q [N,2] (x, y) to the nearest border of an (H, W) frame."""
    H, W = size
    return torch.minimum(torch.minimum(q[:, 0], W - 1 - q[:, 0]), torch.minimum(q[:, 1], H - 1 - q[:, 1]))


def uv_jacobian(uv_fn: UVFn, layer: str, q: torch.Tensor, t: torch.Tensor, eps: float = 0.25) -> torch.Tensor:
    """Central-difference d uv / d q [N,2,2] (columns d/dx, d/dy)."""
    ex = torch.tensor([eps, 0.0], dtype=q.dtype)
    ey = torch.tensor([0.0, eps], dtype=q.dtype)
    both = uv_fn(layer, torch.cat([q + ex, q - ex, q + ey, q - ey]), t.repeat(4)).to(torch.float64)
    px, mx, py, my = both.split(q.shape[0])
    return torch.stack([(px - mx) / (2 * eps), (py - my) / (2 * eps)], -1)


def solve_landing(uv_fn: UVFn, layer: str, target_uv: torch.Tensor, t: torch.Tensor, start: torch.Tensor,
                  iters: int = 20, max_step_px: float = 4.0) -> tuple:
    """Frame points q [N,2] with uv(q, t) = target_uv, by damped Newton from ``start``.
    Returns (q, residual [N] in frame px = |J^-1 (uv(q) - target)|)."""
    q = start.clone().to(torch.float64)
    res = torch.full((q.shape[0],), math.inf, dtype=torch.float64)
    for _ in range(iters):
        r = uv_fn(layer, q, t).to(torch.float64) - target_uv
        J = uv_jacobian(uv_fn, layer, q, t)
        step = _solve_or_inf(J, r)
        res = step.norm(dim=-1)
        step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
        n = step.norm(dim=-1, keepdim=True)
        q = q - step * (max_step_px / n.clamp_min(max_step_px))
        if float(res.max()) < 1e-4:
            break
    r = uv_fn(layer, q, t).to(torch.float64) - target_uv
    return q, _solve_or_inf(uv_jacobian(uv_fn, layer, q, t), r).norm(dim=-1)


def _solve_or_inf(J: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """J^-1 r [N,2] for J [N,2,2]; inf where J is singular (the mapping is flat there)."""
    out = torch.full_like(r, math.inf)
    good = torch.linalg.det(J).abs() > 1e-12
    if good.any():
        out[good] = torch.linalg.solve(J[good], r[good][:, :, None])[:, :, 0]
    return out


def _quantile(v: torch.Tensor, p: float) -> float:
    if v.numel() == 0:
        return float("nan")
    finite = torch.isfinite(v)
    if not bool(finite.all()):
        # missing pairs count as infinitely far: sort with inf last
        s = torch.sort(torch.where(finite, v, torch.full_like(v, math.inf))).values
        k = min(int(math.ceil(p * v.numel())) - 1, v.numel() - 1)
        return float(s[max(k, 0)]) if p < 1 else float(s[-1])
    return float(torch.quantile(v.to(torch.float64), p))


def layer_consistency(video, uv_fn: UVFn, layer: str, t_ref: int | None = None, stride: int = 8,
                      atlas_px_per_uv: float = 1.0, frames: list | None = None,
                      keep_pairs: bool = False, points: str = "all",
                      border_px: float = 24.0) -> LayerConsistency | tuple:
    """Edit-landing error and atlas-coordinate spread of ``layer`` (see the module docstring).

    ``t_ref``: reference frame (default: the middle frame; with ``points="all"`` each point's reference is
    the frame nearest to it where the point is visible); ``stride``: grid spacing in px; ``frames``: frames to
    measure (default all); ``points``: "all" (every point visible in some frame) or "reference" (grid pixels
    of frame ``t_ref``); ``border_px``: width of the border band. With ``keep_pairs`` also returns a dict of
    per-pair tensors (point index, frame, reference frame, landing error, truth position, landing position)."""
    T = video.num_frames
    t_ref = T // 2 if t_ref is None else int(t_ref)
    frames = list(range(T)) if frames is None else list(frames)
    if points == "all":
        c, pos, vis = canonical_grid_points(video, layer, stride, frames)
        n = c.shape[0]
        if n == 0:
            raise ValueError(f"no point of layer {layer!r} is visible in any frame")
        # each point's reference: the frame nearest to t_ref where it is visible (the earlier one on a tie)
        dist = torch.tensor([abs(t - t_ref) + 0.1 * (t > t_ref) for t in frames], dtype=torch.float64)
        k = torch.where(vis, dist[:, None], torch.full_like(vis, math.inf, dtype=torch.float64)).argmin(0)
        ref_t = torch.tensor(frames, dtype=torch.long)[k]
        q_ref = pos[k, torch.arange(n)]
    elif points == "reference":
        q_ref, c = reference_points(video, layer, t_ref, stride)
        n = q_ref.shape[0]
        if n == 0:
            raise ValueError(f"no reference point of layer {layer!r} is visible in frame {t_ref}")
        ref_t = torch.full((n,), t_ref, dtype=torch.long)
        pos = vis = None
    else:
        raise ValueError(f"points must be 'all' or 'reference', got {points!r}")
    u_ref = uv_fn(layer, q_ref, ref_t).to(torch.float64)
    idx_l, t_l, err_l, truth_l, land_l, sp_atlas_l, sp_frame_l = [], [], [], [], [], [], []
    uv_seen: list = []
    for f, t in enumerate(frames):
        tt = torch.full((n,), t, dtype=torch.long)
        if pos is None:
            p = video.frame_position(layer, c, tt)
            v = video.visible(layer, p, tt)
        else:
            p, v = pos[f], vis[f]
        if not bool(v.any()):
            continue
        i = torch.nonzero(v)[:, 0]
        pv, tv = p[i], tt[i]
        uv_here = uv_fn(layer, pv, tv).to(torch.float64)
        uv_seen.append((i, t, uv_here, uv_jacobian(uv_fn, layer, pv, tv)))
        i = i[ref_t[i] != t]
        if i.numel() == 0:
            continue
        pv, tv = p[i], tt[i]
        q, res = solve_landing(uv_fn, layer, u_ref[i], tv, pv)
        err = (q - pv).norm(dim=-1)
        err = torch.where(res <= 0.01, err, torch.full_like(err, math.inf))
        idx_l.append(i)
        t_l.append(tv)
        err_l.append(err)
        truth_l.append(pv)
        land_l.append(q)
    # spread: distance of each seen atlas position to the point's mean atlas position
    sums = torch.zeros(n, 2, dtype=torch.float64)
    counts = torch.zeros(n, dtype=torch.float64)
    for i, _, uv_here, _ in uv_seen:
        sums.index_add_(0, i, uv_here)
        counts.index_add_(0, i, torch.ones(i.shape[0], dtype=torch.float64))
    mean = sums / counts.clamp_min(1)[:, None]
    for i, _, uv_here, J in uv_seen:
        multi = counts[i] > 1
        d = uv_here - mean[i]
        sp_atlas_l.append((d.norm(dim=-1) * atlas_px_per_uv)[multi])
        sp_frame_l.append(_solve_or_inf(J, d).norm(dim=-1)[multi])
    empty = torch.empty(0, dtype=torch.float64)
    err = torch.cat(err_l) if err_l else empty
    truth = torch.cat(truth_l) if truth_l else torch.empty(0, 2, dtype=torch.float64)
    band = border_distance(truth, video.size) < border_px
    sa = torch.cat(sp_atlas_l) if sp_atlas_l else empty
    sf = torch.cat(sp_frame_l) if sp_frame_l else empty
    out = LayerConsistency(
        layer=layer, points=n, pairs=int(err.numel()), missing=int((~torch.isfinite(err)).sum()),
        landing_median_px=_quantile(err, 0.5), landing_p95_px=_quantile(err, 0.95),
        landing_max_px=float(err.max()) if err.numel() else float("nan"),
        spread_median_atlas_px=_quantile(sa, 0.5), spread_p95_atlas_px=_quantile(sa, 0.95),
        spread_median_frame_px=_quantile(sf, 0.5), spread_p95_frame_px=_quantile(sf, 0.95),
        border_px=float(border_px), border_pairs=int(band.sum()),
        border_landing_median_px=_quantile(err[band], 0.5), border_landing_p95_px=_quantile(err[band], 0.95),
        inner_landing_median_px=_quantile(err[~band], 0.5), inner_landing_p95_px=_quantile(err[~band], 0.95))
    if not keep_pairs:
        return out
    point = torch.cat(idx_l) if idx_l else torch.empty(0, dtype=torch.long)
    pairs = dict(point=point, frame=torch.cat(t_l) if t_l else torch.empty(0, dtype=torch.long),
                 ref_frame=ref_t[point], error=err, truth=truth,
                 landing=torch.cat(land_l) if land_l else torch.empty(0, 2, dtype=torch.float64))
    return out, pairs


def atlas_consistency(video, model, t_ref: int | None = None, stride: int = 8, frames: list | None = None,
                      points: str = "all", border_px: float = 24.0) -> dict:
    """{layer: LayerConsistency} of a fitted :class:`t2l_core.nla.atlas_model.LayeredAtlas` on a ground-truth video
    (layers the model and the video both have). Atlas pixels are native texels (``long_side / uv_scale`` per
    uv unit, about one texel per frame pixel for an unscaled mapping)."""
    fn = model_uv_fn(model)
    px_per_uv = model.cfg.long_side / model.cfg.uv_scale
    return {layer: layer_consistency(video, fn, layer, t_ref, stride, px_per_uv, frames, points=points,
                                     border_px=border_px)
            for layer in model.layers() if layer in video.layers}
