"""Makes docs/images/atlas_edit_preview.jpg: python docs/make_atlas_preview.py (about a minute on a CPU).

Edited-atlas preview with opacity, as the atlas_chaining workflow shows it (RGBA from Join Image with
Alpha), drawn over a checkerboard so the transparency is visible in a JPEG."""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from synthetic_video import make_synthetic_video  # noqa: E402
from t2l_core.nla.render import AtlasEdit, render_edits  # noqa: E402
from t2l_core.nla.fit import NLAFitConfig, fit_nla  # noqa: E402

torch.manual_seed(0)
vid = make_synthetic_video(frames=8, height=144, width=176)
nla = fit_nla(vid.frames, None, NLAFitConfig(iterations=400, seed=0, batch_pixels=4096, flow="lk"), device="cpu")
bg = nla.atlas_images()["bg"]  # [3,Ha,Wa]
_, Ha, Wa = bg.shape
# the overlay of the workflow: a logo-like RGBA badge pasted at x=24, y=16
over = Image.new("RGBA", (72, 40), (0, 0, 0, 0)); d = ImageDraw.Draw(over)
d.rounded_rectangle((0, 0, 71, 39), 10, fill=(230, 40, 40, 255)); d.text((14, 13), "T2L", fill=(255, 255, 255, 255))
ov = torch.from_numpy(np.array(over)).float() / 255
rgb = bg.clone(); alpha = torch.zeros(Ha, Wa)
y, x = 16, 24
a = ov[..., 3]
rgb[:, y:y+40, x:x+72] = ov[..., :3].permute(2, 0, 1) * a + rgb[:, y:y+40, x:x+72] * (1 - a)
alpha[y:y+40, x:x+72] = a
rgba = torch.cat([rgb, alpha[None]]).permute(1, 2, 0).numpy()  # what PreviewImage gets from Join Image with Alpha
def checker(h, w, s=8):
    yy, xx = np.mgrid[0:h, 0:w]
    c = np.where(((yy // s) + (xx // s)) % 2 == 0, 0.85, 0.6)
    return np.repeat(c[..., None], 3, 2)
over_ck = rgba[..., :3] * rgba[..., 3:] + checker(Ha, Wa) * (1 - rgba[..., 3:])
frames = render_edits(nla.model, nla.original_frames(), None, AtlasEdit(rgb=rgb, alpha=alpha, bbox=nla.bboxes["bg"]))
f0 = frames[3].permute(1, 2, 0).numpy()
def up(img, h):  # enlarged for a readable picture
    im = Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
    return im.resize((round(im.width * h / im.height), h), Image.LANCZOS)
H = 240
tiles = [up(bg.permute(1, 2, 0).numpy(), H), up(over_ck, H), up(f0, H)]
W = sum(t.width for t in tiles) + 16 * (len(tiles) - 1)
canvas = Image.new("RGB", (W, H), (255, 255, 255)); x0 = 0
for t in tiles:
    canvas.paste(t, (x0, 0)); x0 += t.width + 16
canvas.save(str(REPO / "docs" / "images" / "atlas_edit_preview.jpg"), quality=85)
print(canvas.size, Ha, Wa, nla.psnr)
