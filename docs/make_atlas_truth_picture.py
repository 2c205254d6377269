"""Makes docs/images/atlas_truth_edit.jpg: python docs/make_atlas_truth_picture.py (about 10 CPU minutes).

The foreground atlas fitted on the non-rigid ground-truth video (tests/ground_truth_video.py: the cat's face
bends and turns over a panned, rolling photograph), with an edit painted on it: coloured dots at the atlas
positions of a grid of points of the middle frame. Then three frames with the edit rendered through the
fitted atlas (Atlas Render's path, :func:`t2l_core.nla.render.render_frame`); a small white cross marks
where the ground truth puts each dot's texture point, so a dot centred on its cross landed right.
"""

import argparse
import colorsys
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from atlas_consistency import atlas_consistency, reference_points  # noqa: E402
from ground_truth_video import make_ground_truth_video  # noqa: E402
from t2l_core.nla.render import AtlasEdit, discretise_atlas, render_frame  # noqa: E402
from t2l_core.nla.fit import NLAFitConfig, fit_nla  # noqa: E402


def dots_edit(bbox, atlas_px: torch.Tensor, radius: float) -> AtlasEdit:
    """Anti-aliased dots of ``radius`` atlas px at atlas pixel positions [N,2], hue by position."""
    Ha, Wa = bbox.height, bbox.width
    yy, xx = torch.meshgrid(torch.arange(Ha) + 0.5, torch.arange(Wa) + 0.5, indexing="ij")
    rgb = torch.zeros(3, Ha, Wa)
    alpha = torch.zeros(Ha, Wa)
    lo, hi = atlas_px.min(0).values, atlas_px.max(0).values
    for p in atlas_px:
        a = (radius + 0.5 - torch.sqrt((xx - p[0]) ** 2 + (yy - p[1]) ** 2)).clamp(0, 1)
        f = (p - lo) / (hi - lo).clamp_min(1e-6)
        col = torch.tensor(colorsys.hsv_to_rgb(float(0.8 * f[0]), 1.0, 1.0 - 0.3 * float(f[1])))
        rgb = torch.where(a[None] > alpha[None], col[:, None, None].expand(3, Ha, Wa), rgb)
        alpha = torch.maximum(alpha, a)
    return AtlasEdit(rgb=rgb, alpha=alpha, bbox=bbox)


def to_image(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", default="384x216", help="WxH")
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--stride", type=int, default=12, help="dot grid spacing in frame px")
    ap.add_argument("--out", default=str(REPO / "docs" / "images" / "atlas_truth_edit.jpg"))
    a = ap.parse_args()
    W, H = (int(s) for s in a.size.split("x"))
    T = a.frames
    video = make_ground_truth_video("nonrigid", frames=T, height=H, width=W)
    nla = fit_nla(video.frames, video.masks, NLAFitConfig(iterations=a.iters, batch_pixels=8192, seed=0, flow="lk"),
                  device="cpu")
    res = atlas_consistency(video, nla.model, stride=6, points="reference")  # the middle frame's points, as drawn
    model, bbox = nla.model, nla.bboxes["fg"]
    t_ref = T // 2
    q, c = reference_points(video, "fg", t_ref, a.stride)
    tt = torch.full((q.shape[0],), t_ref, dtype=torch.long)
    uv = model.uv("fg", q[:, 0].float(), q[:, 1].float(), tt)
    edit = dots_edit(bbox, bbox.to_pixels(uv), radius=2.5)

    # atlas panel: the fitted foreground atlas with the dots, cropped to the object
    atlas = discretise_atlas(model, bbox)
    painted = edit.alpha[None] * edit.rgb + (1 - edit.alpha[None]) * atlas
    crop = int(round(2.3 * video.radius))
    tiles = []
    px = bbox.to_pixels(model.uv("fg", torch.tensor([float(video.motion.centre[t_ref, 0])]),
                                 torch.tensor([float(video.motion.centre[t_ref, 1])]), torch.tensor([t_ref])))[0]
    x0 = int(round(float(px[0]))) - crop // 2
    y0 = int(round(float(px[1]))) - crop // 2
    tiles.append(to_image(painted).crop((x0, y0, x0 + crop, y0 + crop)))
    # frames: the edit rendered through the fitted atlas, crosses at the true positions
    for t in (0, T // 3, T - 1):
        out = render_frame(model, t, nla.original_frames()[t], fg_edit=edit)
        im = to_image(out)
        d = ImageDraw.Draw(im)
        ti = torch.full((c.shape[0],), t, dtype=torch.long)
        p = video.frame_position("fg", c, ti)
        for x, y in p[video.visible("fg", p, ti)].tolist():
            d.line((x - 1.5, y, x + 1.5, y), fill=(255, 255, 255))
            d.line((x, y - 1.5, x, y + 1.5), fill=(255, 255, 255))
        cx, cy = (float(v) for v in video.motion.centre[t])
        bx = int(round(min(max(cx - crop / 2, 0), W - crop)))
        by = int(round(min(max(cy - crop / 2, 0), H - crop)))
        tiles.append(im.crop((bx, by, bx + crop, by + crop)))
    side = 220
    tiles = [t.resize((side, side), Image.LANCZOS) for t in tiles]
    gap = 8
    canvas = Image.new("RGB", (len(tiles) * side + (len(tiles) - 1) * gap, side), (255, 255, 255))
    for i, t in enumerate(tiles):
        canvas.paste(t, (i * (side + gap), 0))
    canvas.save(a.out, quality=88)
    fg = res["fg"]
    print(f"{a.out}: {canvas.size}, PSNR {nla.psnr:.2f} dB, fg landing median {fg.landing_median_px:.2f} px, "
          f"p95 {fg.landing_p95_px:.2f} px over {fg.pairs} pairs")


if __name__ == "__main__":
    main()
