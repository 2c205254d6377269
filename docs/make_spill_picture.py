"""Makes docs/images/spill_control.jpg: python docs/make_spill_picture.py (about a minute on a CPU).

Two identical eggs, both in the edit region (a bootstrap mask over both, as the relevancy of "eggs" would be);
the edit is trained twice with the tiny random CLIP of the tests (so the edit's look means nothing; where its
opacity goes does): without protection, and with a protect mask on the right egg. The picture shows the input
with the protect mask outlined, the composite and opacity without protection, and with it."""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "edit")]

from _edit_helpers import tiny_config  # noqa: E402
from test_protection import _eggs  # noqa: E402
from t2l_core.api import train_edit_layer  # noqa: E402
from t2l_core.clip.loading import build_tiny_clip  # noqa: E402

clip = build_tiny_clip(patch_size=16, seed=0, device="cpu")
image, left, right = _eggs()
config = tiny_config(iters=60, prompt="chocolate eggs", source_prompt="eggs", bootstrap_schedule="none")
both = (left | right).float()[None]
free = train_edit_layer(clip, image, config, bootstrap_mask=both)
kept = train_edit_layer(clip, image, config, bootstrap_mask=both, protect_mask=right.float()[None])
print("\n".join(kept.notes))


def rgb(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).numpy() if t.shape[1] == 3 else np.repeat(t[0, 0].numpy()[..., None], 3, 2)


edge = right ^ torch.nn.functional.max_pool2d(right.float()[None, None], 3, 1, 1)[0, 0].bool()
marked = rgb(image).copy()
marked[edge.numpy()] = (1.0, 0.2, 0.2)
gap = np.ones((image.shape[-2], 6, 3))
row = np.concatenate([marked, gap, rgb(free.output.composite), gap, rgb(free.output.alpha), gap,
                      rgb(kept.output.composite), gap, rgb(kept.output.alpha)], 1)
out = REPO / "docs" / "images" / "spill_control.jpg"
h, w = row.shape[:2]
Image.fromarray((row.clip(0, 1) * 255).round().astype(np.uint8)).resize((w * 2, h * 2), Image.LANCZOS).save(
    out, quality=90)
print("wrote", out)
