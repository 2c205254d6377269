"""Makes docs/images/compositing_export.jpg: python docs/make_compositing_export_picture.py (under a minute on a CPU).

A badge pasted on the background atlas of a synthetic video, exported for compositing; the picture shows, for
frame 5, the exported edit (RGBA, drawn over a checkerboard), the exported background STMap (red = s,
green = t) and what a compositing program makes of the files: the edit atlas warped by the STMap, laid over
the original frame."""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from synthetic_video import make_synthetic_video  # noqa: E402
from t2l_core.io.image_files import load_png16  # noqa: E402
from t2l_core.nla.compositing_export import export_for_compositing  # noqa: E402
from t2l_core.nla.fit import NLAFitConfig, fit_nla  # noqa: E402
from t2l_core.nla.render import AtlasEdit  # noqa: E402

FRAME = 5
torch.manual_seed(0)
vid = make_synthetic_video(frames=8, height=144, width=176)
nla = fit_nla(vid.frames, vid.masks, NLAFitConfig(iterations=300, seed=0, batch_pixels=4096, flow="lk"), device="cpu")
bbox = nla.bboxes["bg"]
badge = Image.new("RGBA", (72, 40), (0, 0, 0, 0))
ImageDraw.Draw(badge).rounded_rectangle((0, 0, 71, 39), 10, fill=(230, 40, 40, 255))
ImageDraw.Draw(badge).text((14, 13), "T2L", fill=(255, 255, 255, 255))
rgba = torch.zeros(4, bbox.height, bbox.width)
rgba[:, 20:60, 30:102] = torch.from_numpy(np.array(badge)).float().permute(2, 0, 1) / 255
edit = AtlasEdit(rgb=rgba[:3], alpha=rgba[3], bbox=bbox)

with tempfile.TemporaryDirectory() as folder:
    export_for_compositing(nla, folder, bg_edit=edit)
    exported = np.asarray(Image.open(f"{folder}/edit/edit_{FRAME:05d}.png"), dtype=np.float32) / 255
    stmap = load_png16(f"{folder}/stmap_bg/stmap_bg_{FRAME:05d}.png")
    atlas = torch.from_numpy(np.asarray(Image.open(f"{folder}/edit_atlas_bg.png"), dtype=np.float32) / 255)

H, W = exported.shape[:2]
yy, xx = np.mgrid[0:H, 0:W]
checker = np.repeat(np.where(((yy // 8) + (xx // 8)) % 2 == 0, 0.85, 0.6)[..., None], 3, 2)
panel_edit = exported[..., :3] * exported[..., 3:] + checker * (1 - exported[..., 3:])
panel_map = np.stack([stmap[0].numpy(), stmap[1].numpy(), np.zeros((H, W))], -1)
grid = torch.stack([stmap[0] * 2 - 1, (1 - stmap[1]) * 2 - 1], -1)[None]  # the STMap lookup of a compositor
warped = F.grid_sample(atlas.permute(2, 0, 1)[None], grid, align_corners=False)[0].permute(1, 2, 0).numpy()
a = warped[..., 3:] * stmap[3].numpy()[..., None]
frame = nla.original_frames()[FRAME].permute(1, 2, 0).numpy()
panel_comp = warped[..., :3] * a + frame * (1 - a)
row = np.concatenate([panel_edit, np.ones((H, 6, 3)), panel_map, np.ones((H, 6, 3)), panel_comp], 1)
out = REPO / "docs" / "images" / "compositing_export.jpg"
Image.fromarray((row.clip(0, 1) * 255).round().astype(np.uint8)).resize((row.shape[1] * 2, H * 2), Image.LANCZOS).save(
    out, quality=90)
print("wrote", out)
