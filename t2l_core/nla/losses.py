"""The loss terms of a layered-atlas fit (NLA, Kasten et al. 2021, Sec. 3), one function per term, plus
their named weights and schedules (the authors' released configuration) and the PSNR.

Conventions: mapping-space coordinates M are in [-1,1]; one frame pixel corresponds to
``uv_scale / (L/2)`` mapping units, so ``pixel_scale = (L/2) / uv_scale`` converts mapping differences to
pixels (coordinates are normalised by L = max(H, W), never by the width alone).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch

from ..reductions import stable_mean, stable_sum


@dataclass
class NLALossWeights:
    """Loss weights and schedules (NLA config.json values, except the motion prior ``residual_*`` of our grid
    mappings; step limits scale with the run length).

    ``*_until`` values are fractions of the total iterations when < 1, else absolute step counts.
    """

    rgb: float = 5000.0
    gradient: float = 1000.0
    rigidity: float = 1.0
    global_rigidity_fg: float = 5.0
    global_rigidity_bg: float = 50.0
    global_rigidity_until: float = 0.3
    global_rigidity_px: int = 100
    flow: float = 5.0
    alpha_flow: float = 49.0
    sparsity: float = 1000.0
    bootstrap: float = 2000.0
    bootstrap_until: float = 0.5
    warmup: float = 1000.0
    warmup_until: float = 0.05
    # prior towards the per-frame affine motion (:func:`residual_loss`). Where the background has no texture
    # (a clear sky, a white wall), neither the colour nor the optical flow fixes its mapping, which then
    # drifts with the flow's small per-frame biases; the prior keeps it on the affine motion that the textured
    # parts fix. The foreground's bending needs its residuals, so it has none by default.
    residual_bg: float = 2.0
    residual_fg: float = 0.0

    def steps(self, name: str, total: int) -> int:
        """The step at which a scheduled term stops.

        Args:
            name: "global_rigidity", "bootstrap" or "warmup".
            total: the fit's iterations.

        Returns:
            The term is on for steps 0 .. result-1.
        """
        v = getattr(self, f"{name}_until")
        return int(round(v * total)) if v < 1 else int(v)

    def to_dict(self) -> dict:
        """Every weight and schedule as plain JSON values."""
        return asdict(self)


def rgb_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The colour reconstruction term: mean over the batch of ||c_hat - c||^2.

    Args:
        pred, target: [N,3] colours in 0..1.

    Returns:
        A scalar >= 0.
    """
    return stable_mean(((pred - target) ** 2).sum(-1))


def gradient_loss(pred_dx: torch.Tensor, pred_dy: torch.Tensor, gt_dx: torch.Tensor, gt_dy: torch.Tensor) -> torch.Tensor:
    """The gradient term: mean of ||dx_gt - dx_hat||^2 + ||dy_gt - dy_hat||^2.

    Args:
        pred_dx, pred_dy: [N,3] forward differences of the reconstruction along x and y.
        gt_dx, gt_dy: [N,3] the same differences of the frames.

    Returns:
        A scalar >= 0.
    """
    return stable_mean(((gt_dx - pred_dx) ** 2).sum(-1) + ((gt_dy - pred_dy) ** 2).sum(-1))


def rigidity_from_jacobian(J: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """The rigidity of a mapping at each point: ||J^T J||_F + ||(J^T J + eps I)^-1||_F.

    Args:
        J: [N,2,2] Jacobians in pixel units (columns d/dx, d/dy).
        eps: added to the diagonal of J^T J before the analytic 2x2 inverse.

    Returns:
        [N], minimal (2 sqrt(2), up to eps) where J is a rotation.
    """
    JtJ = J.transpose(1, 2) @ J
    a = JtJ[:, 0, 0] + eps
    b = JtJ[:, 0, 1]
    c = JtJ[:, 1, 0]
    d = JtJ[:, 1, 1] + eps
    det = a * d - b * c
    # analytic 2x2 inverse: [[d, -b], [-c, a]] / det
    inv_norm = torch.sqrt(a ** 2 + b ** 2 + c ** 2 + d ** 2) / det.abs().clamp_min(1e-12)
    fro = torch.sqrt((JtJ ** 2).sum(dim=(1, 2)) + 1e-12)
    return fro + inv_norm


def mapping_jacobian(m: torch.Tensor, m_dx: torch.Tensor, m_dy: torch.Tensor, step_px: float, pixel_scale: float) -> torch.Tensor:
    """A mapping's Jacobian from backward finite differences.

    Args:
        m, m_dx, m_dy: [N,2] M(p), M(p - d e_x), M(p - d e_y) in mapping units.
        step_px: the difference d in pixels.
        pixel_scale: mapping units -> pixels, (L/2) / uv_scale.

    Returns:
        [N,2,2] in pixel units, columns d/dx and d/dy.
    """
    jx = (m - m_dx) * (pixel_scale / step_px)
    jy = (m - m_dy) * (pixel_scale / step_px)
    return torch.stack([jx, jy], dim=-1)  # columns: d/dx, d/dy


def rigidity_loss(m: torch.Tensor, m_dx: torch.Tensor, m_dy: torch.Tensor, step_px: float, pixel_scale: float) -> torch.Tensor:
    """The mean rigidity of a mapping (local for ``step_px`` 1, global for e.g. 100).

    Args: as :func:`mapping_jacobian`.

    Returns:
        A scalar, see :func:`rigidity_from_jacobian`.
    """
    return stable_mean(rigidity_from_jacobian(mapping_jacobian(m, m_dx, m_dy, step_px, pixel_scale)))


def flow_consistency_loss(m: torch.Tensor, m_matched: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor,
                          pixel_scale: float) -> torch.Tensor:
    """One direction of the optical-flow term: weight * ||M(x+u, y+v, t+-1) - M(x, y, t)|| in pixels,
    averaged over the flow-consistent points.

    Args:
        m: [N,2] M(x, y, t).
        m_matched: [N,2] the mapping at the flow-matched points.
        valid: [N] bool, the flow-consistent points.
        weight: [N] alpha (foreground layer) or 1 - alpha (background layer).
        pixel_scale: mapping units -> pixels.

    Returns:
        A scalar >= 0 (0 when no point is valid).
    """
    err = torch.sqrt(((m_matched - m) ** 2).sum(-1) + 1e-12) * pixel_scale
    v = valid.float()
    return stable_sum(v * weight * err) / stable_sum(v).clamp_min(1.0)


def alpha_flow_loss(alpha: torch.Tensor, alpha_matched: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The alpha flow term: |alpha - alpha at the flow-matched point|, averaged over flow-consistent points.

    Args:
        alpha, alpha_matched: [N] in (0, 1).
        valid: [N] bool.

    Returns:
        A scalar in [0, 1].
    """
    v = valid.float()
    return stable_sum(v * (alpha - alpha_matched).abs()) / stable_sum(v).clamp_min(1.0)


def sparsity_loss(rgb_fg: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The sparsity term: mean ||fg_rgb (1 - alpha)||^2 (the foreground colour is black where it is unused).

    Args:
        rgb_fg: [N,3] foreground atlas colour in 0..1.
        alpha: [N] in (0, 1).

    Returns:
        A scalar >= 0.
    """
    return stable_mean(((rgb_fg * (1 - alpha[:, None])) ** 2).sum(-1))


def alpha_bootstrap_loss(alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The alpha bootstrapping term: binary cross-entropy -m log(alpha) - (1-m) log(1-alpha), averaged.

    Args:
        alpha: [N] in (0, 1) (clamped to [1e-6, 1 - 1e-6]).
        mask: [N] in [0, 1].

    Returns:
        A scalar >= 0.
    """
    a = alpha.clamp(1e-6, 1 - 1e-6)
    return stable_mean(-(mask * torch.log(a) + (1 - mask) * torch.log(1 - a)))


def mapping_warmup_loss(m: torch.Tensor, m_init: torch.Tensor) -> torch.Tensor:
    """The warm-up term: keep M close to its initial mapping (NLA's pre-training regresses M to 0.8 (x, y)).

    Args:
        m, m_init: [N,2] in mapping units.

    Returns:
        A scalar >= 0, the mean squared distance.
    """
    return stable_mean(((m - m_init) ** 2).sum(-1))


def residual_loss(m: torch.Tensor, m_affine: torch.Tensor, pixel_scale: float) -> torch.Tensor:
    """The motion prior: the mean Charbonnier length sqrt(r^2 + 1) - 1 of the mapping's residual beyond its
    per-frame affine motion, r = ||M(x, y, t) - A_t(x, y)|| in frame pixels.

    About r^2 / 2 for a drift under a pixel, about r - 1 for the large residuals that moving objects of a
    background-only atlas need, so it holds drift back without flattening real motion.

    Args:
        m: [N,2] the mapping M(x, y, t) in mapping units.
        m_affine: [N,2] the same points' per-frame affine mapping.
        pixel_scale: mapping units -> pixels.

    Returns:
        A scalar >= 0.
    """
    r2 = (((m - m_affine) * pixel_scale) ** 2).sum(-1)
    return stable_mean(torch.sqrt(r2 + 1.0) - 1.0)


def psnr(mse: float | torch.Tensor, peak: float = 1.0) -> float:
    """PSNR from a mean squared error.

    Args:
        mse: the mean squared error of values in 0..peak.
        peak: the largest value.

    Returns:
        dB (inf for mse 0).
    """
    mse = float(mse)
    if mse <= 0:
        return float("inf")
    import math

    return 10.0 * math.log10(peak * peak / mse)


def weighted_total(terms: dict, weights: dict) -> torch.Tensor:
    """The total loss: sum of weight * term, in the order of ``terms``.

    Args:
        terms: {name: scalar tensor}.
        weights: {name: weight}; a term absent from it counts with weight 1.

    Returns:
        A scalar tensor.
    """
    total: Optional[torch.Tensor] = None
    for k, v in terms.items():
        w = weights.get(k, 1.0)
        total = w * v if total is None else total + w * v
    assert total is not None
    return total
