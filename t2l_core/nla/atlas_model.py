"""Layered neural atlas model (NLA, Kasten et al. 2021) with fast multi-resolution grid encodings.

Coordinates
-----------
A pixel (x, y) of frame t (integers, 0-based) is normalised by L = max(H, W) around the frame centre:
``xn = (x - (W-1)/2) / (L/2)``, ``yn = (y - (H-1)/2) / (L/2)`` (so the long side spans [-1, 1] in both
portrait and landscape video) and ``tn = 2 t / (T-1) - 1``. The same point of the picture has the same
(xn, yn) at any resolution of the same aspect (pixel centres scaled about the frame centre), so an atlas fitted
at a working size renders at full size by changing only H, W (``grid_height/grid_width`` keep the grids'
layout; :mod:`t2l_core.nla.working_size`).

Each layer's mapping gives M(x, y, t) in [-1, 1]^2 ("mapping space"); atlas coordinates are
``uv_fg = 0.5 M_f + 0.5`` in the [0, 1]^2 quadrant and ``uv_bg = 0.5 M_b - 0.5`` in [-1, 0]^2, like NLA.
One colour function covers the whole atlas square [-1, 1]^2 (both quadrants). uv is ordered (u, v) =
(horizontal, vertical), which is also the order ``F.grid_sample`` expects.

Representation (instead of NLA's plain MLPs, for speed on CPU):
- mapping: a per-frame affine transform of (xn, yn) (camera / object motion) plus a residual from a
  multi-resolution dense 3D grid over (x, y, t) (non-rigid motion), clamped to [-1, 1];
- opacity: a logit from a multi-resolution 3D grid, ``alpha = 0.998 sigmoid(logit) + 0.001``;
- colour: a multi-resolution 2D pyramid of RGB grids over [-1, 1]^2 (a Laplacian-pyramid texture), summed.
Every grid is sampled with ``F.grid_sample`` (bilinear/trilinear, ``align_corners=True``), so cost per point
is independent of the video length and nothing per-pixel is stored for the whole video.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
import torch.nn as nn

from .grids import ColourPyramid, Grid3D

LAYERS = ("fg", "bg")


@dataclass
class AtlasConfig:
    """Everything needed to rebuild a :class:`LayeredAtlas` (stored with a saved atlas)."""

    height: int
    width: int
    frames: int
    has_foreground: bool = True
    uv_scale: float = 0.8                # mapping space units per normalised frame unit (NLA: 0.8)
    colour_min_res: int = 16             # coarsest colour grid (over [-1,1]^2)
    colour_max_res: int = 0              # 0 = automatic (about one texel per frame pixel)
    alpha_spatial_res: tuple = ()        # () = automatic
    mapping_spatial_res: tuple = (8, 16, 32)
    fg_init: list = field(default_factory=list)  # per-frame [a11,a12,a21,a22,bx,by] for fg mapping init
    bg_init: list = field(default_factory=list)  # same for bg
    # the frame size the grids were laid out for (a fit at a working size rendered at full size,
    # t2l_core.nla.working_size); 0 = height/width
    grid_height: int = 0
    grid_width: int = 0

    @property
    def long_side(self) -> int:
        """L = max(H, W), the side that spans [-1, 1] in normalised coordinates."""
        return max(self.height, self.width)

    def grid_size(self) -> tuple:
        """(H, W) the mapping and opacity grids were laid out for: ``grid_height/grid_width``, else the frame size."""
        return (self.grid_height or self.height, self.grid_width or self.width)

    def resolved_colour_max_res(self) -> int:
        """The finest colour grid's resolution: ``colour_max_res``, or about one texel per frame pixel."""
        if self.colour_max_res > 0:
            return int(self.colour_max_res)
        # the frame's long side spans uv_scale uv-units; the atlas square is 2 uv-units wide
        need = 2.0 * self.long_side / self.uv_scale
        return max(self.colour_min_res, int(math.ceil(need / 8.0)) * 8)

    def resolved_alpha_res(self) -> tuple:
        """The opacity grids' resolutions along the long side: ``alpha_spatial_res``, or 16, 32, ... up to L/2."""
        if self.alpha_spatial_res:
            return tuple(int(r) for r in self.alpha_spatial_res)
        top = max(16, self.long_side // 2)
        levels = []
        r = 16
        while r < top:
            levels.append(r)
            r *= 2
        levels.append(top)
        return tuple(levels)

    def to_dict(self) -> dict:
        """Every field as plain JSON values (stored with a saved atlas)."""
        d = asdict(self)
        d["alpha_spatial_res"] = list(self.alpha_spatial_res)
        d["mapping_spatial_res"] = list(self.mapping_spatial_res)
        for name in ("grid_height", "grid_width"):  # left out when unset: files of native fits stay as they were
            if not d[name]:
                del d[name]
        return d

    @staticmethod
    def from_dict(d: dict) -> "AtlasConfig":
        """The config that :meth:`to_dict` wrote.

        Args:
            d: a dict from :meth:`to_dict` (a saved atlas's ``atlas_config``).

        Returns:
            The :class:`AtlasConfig`.
        """
        d = dict(d)
        d["alpha_spatial_res"] = tuple(d.get("alpha_spatial_res", ()))
        d["mapping_spatial_res"] = tuple(d.get("mapping_spatial_res", (8, 16, 32)))
        return AtlasConfig(**d)


def normalise_xyt(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, cfg: AtlasConfig) -> torch.Tensor:
    """Normalise pixel coordinates (see the module docstring).

    Args:
        x, y: [N] pixel coordinates (float).
        t: [N] frame indices (integer-valued).
        cfg: the atlas's frame size and count.

    Returns:
        [N,3] (xn, yn, tn); the frame's long side and the frame range span [-1, 1].
    """
    half = cfg.long_side / 2.0
    xn = (x - (cfg.width - 1) / 2.0) / half
    yn = (y - (cfg.height - 1) / 2.0) / half
    tn = 2.0 * t / max(cfg.frames - 1, 1) - 1.0
    return torch.stack([xn, yn, tn], dim=-1)


class LayerMapping(nn.Module):
    """M(x,y,t) = clamp(s * (A_t [xn,yn] + b_t) + residual(x,y,t), -1, 1) for integer frame index t."""

    def __init__(self, cfg: AtlasConfig, init: list):
        super().__init__()
        T = cfg.frames
        if init:
            p = torch.tensor(init, dtype=torch.float32).view(T, 6)
        else:
            p = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).repeat(T, 1)
        self.register_buffer("init_params", p.clone())
        self.affine = nn.Parameter(p.clone())
        self.scale = cfg.uv_scale
        self.residual = Grid3D(2, cfg.mapping_spatial_res, T, *cfg.grid_size())

    def base(self, p: torch.Tensor, t_idx: torch.Tensor, params: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The affine part of the mapping, s * (A_t [xn,yn] + b_t).

        Args:
            p: [N,3] normalised points (xn, yn, tn).
            t_idx: [N] frame indices (long).
            params: None, or [T,6] parameters replacing the learnt ones.

        Returns:
            [N,2] in mapping units.
        """
        # index_select: its backward adds each point's gradient to its frame's row in point order, where the
        # backward of indexing (an accumulating index_put) adds them in an order that changes from run to run
        a = (self.affine if params is None else params).index_select(0, t_idx)
        x, y = p[:, 0], p[:, 1]
        u = a[:, 0] * x + a[:, 1] * y + a[:, 4]
        v = a[:, 2] * x + a[:, 3] * y + a[:, 5]
        return self.scale * torch.stack([u, v], dim=-1)

    def initial(self, p: torch.Tensor, t_idx: torch.Tensor) -> torch.Tensor:
        """The mapping the model was initialised to (the warm-up loss's target).

        Args:
            p: [N,3] normalised points (xn, yn, tn).
            t_idx: [N] frame indices (long).

        Returns:
            [N,2] in mapping units.
        """
        return self.base(p, t_idx, self.init_params)

    def forward(self, p: torch.Tensor, t_idx: torch.Tensor) -> torch.Tensor:
        """The mapping M: affine motion plus the residual grids, clamped.

        Args:
            p: [N,3] normalised points (xn, yn, tn).
            t_idx: [N] frame indices (long).

        Returns:
            [N,2] in [-1,1].
        """
        m = self.base(p, t_idx) + self.residual(p)
        return m.clamp(-1.0, 1.0)


class LayeredAtlas(nn.Module):
    """Foreground/background mappings, one shared colour atlas and a foreground opacity.

    All methods take pixel coordinates ``x, y`` (float, [N]) and frame indices ``t`` (long, [N]).
    Without a foreground (``cfg.has_foreground=False``) alpha is 0 and only the background layer exists.
    """

    def __init__(self, cfg: AtlasConfig):
        super().__init__()
        self.cfg = cfg
        self.map_bg = LayerMapping(cfg, cfg.bg_init)
        self.colour = ColourPyramid(cfg.colour_min_res, cfg.resolved_colour_max_res())
        if cfg.has_foreground:
            self.map_fg = LayerMapping(cfg, cfg.fg_init)
            self.alpha_grid = Grid3D(1, cfg.resolved_alpha_res(), cfg.frames, *cfg.grid_size())
        else:
            self.map_fg = None
            self.alpha_grid = None

    # --- building blocks -----------------------------------------------------------------------
    def coords(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Normalised coordinates of pixels (:func:`normalise_xyt`).

        Args:
            x, y: [N] pixel coordinates.
            t: [N] frame indices.

        Returns:
            [N,3] (xn, yn, tn) float.
        """
        return normalise_xyt(x.float(), y.float(), t.float(), self.cfg)

    def mapping(self, layer: str, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A layer's mapping M(x, y, t) (NLA Sec. 3: the mapping networks M_f and M_b).

        Args:
            layer: "fg" or "bg".
            x, y: [N] pixel coordinates (float; any value, also outside the frame).
            t: [N] frame indices (long, 0..T-1).

        Returns:
            [N,2] mapping-space coordinates in [-1,1].
        """
        net = self._net(layer)
        return net(self.coords(x, y, t), t.long())

    def initial_mapping(self, layer: str, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A layer's initial mapping (the warm-up loss's target).

        Args: as :meth:`mapping`.

        Returns:
            [N,2] in mapping units.
        """
        return self._net(layer).initial(self.coords(x, y, t), t.long())

    def affine_mapping(self, layer: str, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A layer's per-frame affine motion alone, without the residual grids (the motion prior's target).

        Args: as :meth:`mapping`.

        Returns:
            [N,2] in mapping units (unclamped).
        """
        return self._net(layer).base(self.coords(x, y, t), t.long())

    def _net(self, layer: str) -> LayerMapping:
        if layer == "bg":
            return self.map_bg
        if layer == "fg":
            if self.map_fg is None:
                raise ValueError("this atlas was fitted without masks and has no foreground layer")
            return self.map_fg
        raise ValueError(f"layer must be 'fg' or 'bg', got {layer!r}")

    @staticmethod
    def to_uv(layer: str, m: torch.Tensor) -> torch.Tensor:
        """Mapping space -> atlas uv.

        Args:
            layer: "fg" or "bg".
            m: [N,2] in [-1,1].

        Returns:
            [N,2] uv: fg in [0,1]^2, bg in [-1,0]^2.
        """
        return 0.5 * m + (0.5 if layer == "fg" else -0.5)

    def uv(self, layer: str, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The atlas uv of pixels in a layer.

        Args: as :meth:`mapping`.

        Returns:
            [N,2]: fg in [0,1]^2, bg in [-1,0]^2.
        """
        return self.to_uv(layer, self.mapping(layer, x, y, t))

    def alpha(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The foreground opacity of pixels.

        Args:
            x, y: [N] pixel coordinates (float; any value, also outside the frame).
            t: [N] frame indices (long, 0..T-1).

        Returns:
            [N] in (0.001, 0.999); zeros without a foreground.
        """
        if self.alpha_grid is None:
            return torch.zeros(x.shape[0], device=x.device)
        logit = self.alpha_grid(self.coords(x, y, t))[:, 0]
        return 0.998 * torch.sigmoid(logit) + 0.001

    def colour_at(self, uv: torch.Tensor) -> torch.Tensor:
        """The atlas colour at uv points (NLA's atlas network A).

        Args:
            uv: [N,2] in [-1,1].

        Returns:
            [N,3], about 0..1 (unclamped).
        """
        return self.colour(uv)

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> dict:
        """Reconstruct pixels: alpha * fg colour + (1 - alpha) * bg colour (NLA Sec. 3).

        Args:
            x, y: [N] pixel coordinates (float; any value, also outside the frame).
            t: [N] frame indices (long, 0..T-1).

        Returns:
            {"rgb": [N,3], "alpha": [N], "m_bg"/"m_fg": [N,2] mappings, "rgb_bg"/"rgb_fg": [N,3] layer colours}
            (the fg entries only with a foreground; colours unclamped, about 0..1).
        """
        out: dict = {}
        m_bg = self.mapping("bg", x, y, t)
        rgb_bg = self.colour(self.to_uv("bg", m_bg))
        out.update(m_bg=m_bg, rgb_bg=rgb_bg)
        if self.map_fg is None:
            out["alpha"] = torch.zeros(x.shape[0], device=x.device)
            out["rgb"] = rgb_bg
            return out
        m_fg = self.mapping("fg", x, y, t)
        rgb_fg = self.colour(self.to_uv("fg", m_fg))
        a = self.alpha(x, y, t)
        out.update(m_fg=m_fg, rgb_fg=rgb_fg, alpha=a, rgb=a[:, None] * rgb_fg + (1 - a[:, None]) * rgb_bg)
        return out

    def layers(self) -> tuple:
        """The layers, ("fg", "bg") or ("bg",) without a foreground."""
        return ("fg", "bg") if self.map_fg is not None else ("bg",)


def frame_pixel_grid(height: int, width: int, device=None, crop: Optional[tuple] = None) -> tuple:
    """The pixel coordinates of a frame (or a crop), row-major.

    Args:
        height, width: the frame size H, W.
        device: where the tensors are made.
        crop: None, or (top, left, h, w) in pixels.

    Returns:
        (xs, ys), each [h*w] float32.
    """
    top, left, h, w = crop if crop is not None else (0, 0, height, width)
    ys = torch.arange(top, top + h, device=device, dtype=torch.float32)
    xs = torch.arange(left, left + w, device=device, dtype=torch.float32)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return xx.reshape(-1), yy.reshape(-1)
