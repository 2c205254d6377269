"""Discretised atlases (Text2LIVE Sec. 3.2 and Appendix A.4, "Atlas Pre-processing", after NLA, Kasten et al.
2021): the uv rectangle an atlas image covers, chosen from the pixels a layer shows, the atlas colour evaluated
on its texels, and edits in atlas space.

Atlas images and their bounding boxes
-------------------------------------
A discretised atlas is an image [C,Ha,Wa] covering the uv rectangle ``AtlasBBox(u0, v0, u1, v1)`` of one
layer (uv as in :mod:`t2l_core.nla.atlas_model`: fg in [0,1]^2, bg in [-1,0]^2; u horizontal, v vertical). Texels
are square; texel (i, j) (row, column) has its centre at ``uv = (u0 + (j+0.5) du, v0 + (i+0.5) dv)``, which
is exactly what ``F.grid_sample(..., align_corners=False)`` assumes with ``grid = 2 (uv - uv0)/(uv1 - uv0) - 1``.
So an edited atlas image of ANY size covering the same bbox maps back without a half-texel shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .atlas_model import LayeredAtlas
from .frame_maps import CHUNK, model_device, frame_alpha, frame_uv


@dataclass
class AtlasBBox:
    """The uv rectangle covered by a discretised atlas image of ``width`` x ``height`` square texels."""

    layer: str
    u0: float
    v0: float
    u1: float
    v1: float
    width: int
    height: int

    def to_grid(self, uv: torch.Tensor) -> torch.Tensor:
        """uv -> ``grid_sample`` coordinates over the bbox (``align_corners=False``).

        Args:
            uv: [...,2].

        Returns:
            [...,2], [-1,1] over the bbox.
        """
        lo = torch.tensor([self.u0, self.v0], device=uv.device, dtype=uv.dtype)
        hi = torch.tensor([self.u1, self.v1], device=uv.device, dtype=uv.dtype)
        return 2.0 * (uv - lo) / (hi - lo) - 1.0

    def to_pixels(self, uv: torch.Tensor) -> torch.Tensor:
        """uv -> continuous atlas pixel coordinates.

        Args:
            uv: [...,2].

        Returns:
            [...,2] (x, y); texel (i, j) spans [j, j+1) x [i, i+1).
        """
        lo = torch.tensor([self.u0, self.v0], device=uv.device, dtype=uv.dtype)
        size = torch.tensor([(self.u1 - self.u0) / self.width, (self.v1 - self.v0) / self.height],
                            device=uv.device, dtype=uv.dtype)
        return (uv - lo) / size

    def texel_centres(self) -> torch.Tensor:
        """uv of every texel centre, [height, width, 2]."""
        du = (self.u1 - self.u0) / self.width
        dv = (self.v1 - self.v0) / self.height
        u = self.u0 + (torch.arange(self.width, dtype=torch.float32) + 0.5) * du
        v = self.v0 + (torch.arange(self.height, dtype=torch.float32) + 0.5) * dv
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        return torch.stack([uu, vv], dim=-1)

    def to_dict(self) -> dict:
        """Every field as plain JSON values (stored with a saved atlas)."""
        return dict(layer=self.layer, u0=self.u0, v0=self.v0, u1=self.u1, v1=self.v1, width=self.width, height=self.height)

    @staticmethod
    def from_dict(d: dict) -> "AtlasBBox":
        """The bbox that :meth:`to_dict` wrote.

        Args:
            d: a dict from :meth:`to_dict`.

        Returns:
            The :class:`AtlasBBox`.
        """
        return AtlasBBox(**d)


@dataclass
class AtlasEdit:
    """An RGBA edit in atlas space: rgb [3,Ha,Wa] and opacity [Ha,Wa] (1 = edit visible), covering ``bbox``
    (any Ha, Wa: only the bbox matters). A text-driven edit layer trained on an atlas produces one
    of these from its generator output; image editors produce one from IMAGE + MASK."""

    rgb: torch.Tensor
    alpha: torch.Tensor
    bbox: AtlasBBox

    def rgba(self) -> torch.Tensor:
        """[4,Ha,Wa] float: rgb then opacity."""
        return torch.cat([self.rgb.float(), self.alpha.float()[None]], dim=0)


@torch.no_grad()
def layer_uv_extent(model: LayeredAtlas, layer: str, alpha_threshold: float = 0.05) -> tuple:
    """The uv bounding box of the pixels a layer shows, over all frames (streamed).

    Args:
        model: the atlas.
        layer: "fg" or "bg".
        alpha_threshold: foreground pixels count from this opacity on (all pixels if none does);
            background pixels always count.

    Returns:
        (u0, v0, u1, v1).
    """
    lo = torch.tensor([math.inf, math.inf])
    hi = -lo
    lo_all, hi_all = lo.clone(), hi.clone()
    for t in range(model.cfg.frames):
        uv = frame_uv(model, t, layer).reshape(-1, 2)
        lo_all = torch.minimum(lo_all, uv.min(0).values)
        hi_all = torch.maximum(hi_all, uv.max(0).values)
        if layer == "fg":
            sel = frame_alpha(model, t).reshape(-1) >= alpha_threshold
            if sel.any():
                lo = torch.minimum(lo, uv[sel].min(0).values)
                hi = torch.maximum(hi, uv[sel].max(0).values)
        else:
            lo, hi = lo_all, hi_all
    if not torch.isfinite(lo).all():
        lo, hi = lo_all, hi_all
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def make_bbox(model: LayeredAtlas, layer: str, resolution: int = 0, margin_texels: int = 2,
              alpha_threshold: float = 0.05) -> AtlasBBox:
    """The bbox of a layer's discretised atlas (square texels).

    Args:
        model: the atlas.
        layer: "fg" or "bg".
        resolution: the long side in texels (0 = native, about one texel per frame pixel).
        margin_texels: texels added on every side.
        alpha_threshold: see :func:`layer_uv_extent`.

    Returns:
        The :class:`AtlasBBox`.
    """
    return bbox_from_extent(model, layer, layer_uv_extent(model, layer, alpha_threshold), resolution, margin_texels)


def bbox_from_extent(model: LayeredAtlas, layer: str, extent_uv: tuple, resolution: int = 0,
                     margin_texels: int = 2) -> AtlasBBox:
    """:func:`make_bbox` from an already known uv extent.

    Args:
        model: the atlas.
        layer: "fg" or "bg".
        extent_uv: (u0, v0, u1, v1).
        resolution, margin_texels: see :func:`make_bbox`.

    Returns:
        The :class:`AtlasBBox`.
    """
    u0, v0, u1, v1 = extent_uv
    native = model.cfg.long_side / model.cfg.uv_scale  # texels per uv unit for 1 texel ~ 1 frame pixel
    extent = max(u1 - u0, v1 - v0, 1e-6)
    long_side = int(resolution) if resolution and resolution > 0 else max(8, int(math.ceil(extent * native)))
    tau = extent / max(long_side - 2 * margin_texels, 1)
    u0 -= margin_texels * tau
    v0 -= margin_texels * tau
    wa = max(1, int(math.ceil((u1 - u0) / tau + margin_texels)))
    ha = max(1, int(math.ceil((v1 - v0) / tau + margin_texels)))
    return AtlasBBox(layer, u0, v0, u0 + wa * tau, v0 + ha * tau, wa, ha)


@torch.no_grad()
def discretise_atlas(model: LayeredAtlas, bbox: AtlasBBox, on_chunk=None) -> torch.Tensor:
    """Evaluate the atlas colour at every texel centre of ``bbox`` (Text2LIVE Appendix A.4: the atlas network
    queried at uniformly sampled uv locations).

    Args:
        model: the atlas.
        bbox: the texels.
        on_chunk: ``(i, n)`` after each of the n chunks of ``CHUNK`` texels (progress and cancellation).

    Returns:
        [3, height, width] in 0..1, on the CPU.
    """
    uv = bbox.texel_centres().reshape(-1, 2).to(model_device(model))
    out = torch.empty(uv.shape[0], 3, device=uv.device)
    n = -(-uv.shape[0] // CHUNK)
    for i, s in enumerate(range(0, uv.shape[0], CHUNK)):
        out[s:s + CHUNK] = model.colour_at(uv[s:s + CHUNK])
        if on_chunk is not None:
            on_chunk(i + 1, n)
    return out.t().reshape(3, bbox.height, bbox.width).clamp(0, 1).cpu()
