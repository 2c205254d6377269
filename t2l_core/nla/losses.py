"""NLA training losses (method notes 5.4), one function per term, plus their named weights and schedules.

Conventions: mapping-space coordinates M are in [-1,1]; one frame pixel corresponds to
``uv_scale / (L/2)`` mapping units, so ``pixel_scale = (L/2) / uv_scale`` converts mapping differences to
pixels (coordinates are normalised by L = max(H, W), never by the width alone).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch


@dataclass
class NLALossWeights:
    """Loss weights and schedules (NLA config.json values; step limits scale with the run length).

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

    def steps(self, name: str, total: int) -> int:
        v = getattr(self, f"{name}_until")
        return int(round(v * total)) if v < 1 else int(v)

    def to_dict(self) -> dict:
        return asdict(self)


def rgb_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared colour error ||c_hat - c||^2. pred/target [N,3]."""
    return ((pred - target) ** 2).sum(-1).mean()


def gradient_loss(pred_dx: torch.Tensor, pred_dy: torch.Tensor, gt_dx: torch.Tensor, gt_dy: torch.Tensor) -> torch.Tensor:
    """Mean of ||dx_gt - dx_hat||^2 + ||dy_gt - dy_hat||^2 for forward differences [N,3]."""
    return (((gt_dx - pred_dx) ** 2).sum(-1) + ((gt_dy - pred_dy) ** 2).sum(-1)).mean()


def rigidity_from_jacobian(J: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Per-point ||J^T J||_F + ||(J^T J + eps I)^-1||_F for J [N,2,2] (pixel units). Minimum 2 sqrt(2)
    (up to eps) for rotations."""
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
    """Finite-difference Jacobian [N,2,2] in pixel units from M(p), M(p - d e_x), M(p - d e_y)."""
    jx = (m - m_dx) * (pixel_scale / step_px)
    jy = (m - m_dy) * (pixel_scale / step_px)
    return torch.stack([jx, jy], dim=-1)  # columns: d/dx, d/dy


def rigidity_loss(m: torch.Tensor, m_dx: torch.Tensor, m_dy: torch.Tensor, step_px: float, pixel_scale: float) -> torch.Tensor:
    """Mean rigidity (local for step_px=1, global for e.g. 100) of a mapping; see :func:`rigidity_from_jacobian`."""
    return rigidity_from_jacobian(mapping_jacobian(m, m_dx, m_dy, step_px, pixel_scale)).mean()


def flow_consistency_loss(m: torch.Tensor, m_matched: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor,
                          pixel_scale: float) -> torch.Tensor:
    """One direction of the optical-flow term: mean over flow-consistent points of
    weight * ||M(x+u, y+v, t+-1) - M(x, y, t)|| in pixels. ``weight`` is alpha (fg) or 1-alpha (bg)."""
    err = torch.sqrt(((m_matched - m) ** 2).sum(-1) + 1e-12) * pixel_scale
    v = valid.float()
    return (v * weight * err).sum() / v.sum().clamp_min(1.0)


def alpha_flow_loss(alpha: torch.Tensor, alpha_matched: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L1 between alpha and alpha at the flow-matched point, over flow-consistent points."""
    v = valid.float()
    return (v * (alpha - alpha_matched).abs()).sum() / v.sum().clamp_min(1.0)


def sparsity_loss(rgb_fg: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Mean ||fg_rgb (1 - alpha)||^2: the foreground atlas colour should be black where it is not used."""
    return ((rgb_fg * (1 - alpha[:, None])) ** 2).sum(-1).mean()


def alpha_bootstrap_loss(alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy -m log(alpha) - (1-m) log(1-alpha), averaged. alpha in (0,1), mask in [0,1]."""
    a = alpha.clamp(1e-6, 1 - 1e-6)
    return (-(mask * torch.log(a) + (1 - mask) * torch.log(1 - a))).mean()


def mapping_warmup_loss(m: torch.Tensor, m_init: torch.Tensor) -> torch.Tensor:
    """Initial warm-up: keep M close to its initialisation (NLA regresses M to 0.8 (x, y))."""
    return ((m - m_init) ** 2).sum(-1).mean()


def psnr(mse: float | torch.Tensor, peak: float = 1.0) -> float:
    """PSNR in dB from a mean squared error (values 0..peak)."""
    mse = float(mse)
    if mse <= 0:
        return float("inf")
    import math

    return 10.0 * math.log10(peak * peak / mse)


def weighted_total(terms: dict, weights: dict) -> torch.Tensor:
    """Sum of weight * term for the terms present (terms absent from ``weights`` count with weight 1)."""
    total: Optional[torch.Tensor] = None
    for k, v in terms.items():
        w = weights.get(k, 1.0)
        total = w * v if total is None else total + w * v
    assert total is not None
    return total
