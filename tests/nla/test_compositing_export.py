"""Files for compositing programs: the edit sequence (8-bit straight-alpha RGBA) laid *over* the frames gives
the rendered video, and the STMaps (16-bit) warp the atlas images into the frames as the renderer does; every
file reads back (PIL, PyAV) equal to what was computed within 1/255."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from synthetic_video import make_synthetic_video

from t2l_core.io.image_files import load_png16
from t2l_core.nla.compositing_export import export_for_compositing, frame_edit_rgba, frame_stmap
from t2l_core.nla.fit import NLAFitConfig, fit_nla
from t2l_core.nla.frame_maps import frame_alpha, frame_uv
from t2l_core.nla.render import AtlasEdit, render_frame, sample_atlas

TOL = 1 / 255


@pytest.fixture(scope="module")
def fitted():
    v = make_synthetic_video(frames=4, height=36, width=48)
    return fit_nla(v.frames, v.masks, NLAFitConfig(iterations=30, batch_pixels=2048, flow="lk"), device="cpu")


def painted_edit(nla, layer: str, seed: int) -> AtlasEdit:
    bbox = nla.bboxes[layer]
    g = torch.Generator().manual_seed(seed)
    alpha = torch.zeros(bbox.height, bbox.width)
    alpha[bbox.height // 4: bbox.height // 2, bbox.width // 3: 2 * bbox.width // 3] = 0.8
    return AtlasEdit(rgb=torch.rand(3, bbox.height, bbox.width, generator=g), alpha=alpha, bbox=bbox)


def maps(nla, t: int) -> tuple:
    """Frame t's uv maps {layer: [H,W,2]} and foreground opacity [H,W]."""
    return {layer: frame_uv(nla.model, t, layer) for layer in nla.model.layers()}, frame_alpha(nla.model, t)


def read_rgba8(path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGBA"), dtype=np.float32) / 255).permute(2, 0, 1)


def test_the_edit_sequence_over_the_frames_is_the_rendered_video(fitted, tmp_path):
    fg, bg = painted_edit(fitted, "fg", 0), painted_edit(fitted, "bg", 1)
    files = export_for_compositing(fitted, str(tmp_path), fg, bg)
    assert len(files["edit"]) == fitted.num_frames
    frames = fitted.original_frames()
    for t, path in enumerate(files["edit"]):
        rgba = read_rgba8(path)
        assert (rgba - frame_edit_rgba(*maps(fitted, t), fg, bg)).abs().max() <= TOL
        over = rgba[3:] * rgba[:3] + (1 - rgba[3:]) * frames[t]
        assert (over - render_frame(fitted.model, t, frames[t], fg, bg)).abs().max() <= 2 * TOL
    assert float(read_rgba8(files["edit"][0])[3].max()) > 0.3  # the edit is in the files, not only transparency


def test_stmaps_read_back_and_warp_the_atlas_as_the_renderer_does(fitted, tmp_path):
    bg = painted_edit(fitted, "bg", 2)
    files = export_for_compositing(fitted, str(tmp_path), bg_edit=bg)
    assert len(files["stmap_fg"]) == len(files["stmap_bg"]) == fitted.num_frames
    with Image.open(files["stmap_bg"][0]) as im:
        assert im.size == (48, 36)
    for t in range(fitted.num_frames):
        for layer in ("fg", "bg"):
            back = load_png16(files[f"stmap_{layer}"][t])
            uv, alpha = maps(fitted, t)
            want = frame_stmap(uv[layer], alpha, layer, fitted.bboxes[layer])
            assert (back - want).abs().max() <= TOL
        # a compositor's STMap lookup: pixel (s * W - 0.5, (1 - t) * H - 0.5) of the atlas image, bilinear
        st = load_png16(files["stmap_bg"][t])
        grid = torch.stack([st[0] * 2 - 1, (1 - st[1]) * 2 - 1], dim=-1)[None]
        atlas_edit = read_rgba8(tmp_path / "edit_atlas_bg.png")
        looked_up = F.grid_sample(atlas_edit[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        rendered = sample_atlas(bg.rgba(), bg.bbox, frame_uv(fitted.model, t, "bg")).clamp(0, 1)
        assert (looked_up - rendered).abs().max() <= 4 * TOL  # 8-bit atlas, 16-bit positions


def test_the_atlas_images_are_written_and_an_fg_edit_needs_an_fg_layer(fitted, tmp_path):
    files = export_for_compositing(fitted, str(tmp_path))
    assert files["edit"] == [] and sorted(p.split("/")[-1] for p in files["atlas"]) == ["atlas_bg.png", "atlas_fg.png"]
    images = fitted.atlas_images()
    assert (read_rgba8(tmp_path / "atlas_bg.png")[:3] - images["bg"]).abs().max() <= TOL
    v = make_synthetic_video(frames=3, height=36, width=48)
    bg_only = fit_nla(v.frames, None, NLAFitConfig(iterations=2, batch_pixels=512, flow="lk"), device="cpu")
    with pytest.raises(ValueError, match="no foreground layer"):
        export_for_compositing(bg_only, str(tmp_path / "x"), fg_edit=painted_edit(fitted, "fg", 0))


def test_the_export_command_writes_the_same_files(fitted, tmp_path):
    from t2l_core.cli.main import main
    from t2l_core.io.video_files import write_rgba
    from t2l_core.nla.atlas_files import load_nla, save_nla

    atlas = str(tmp_path / "atlas.safetensors")
    save_nla(fitted, atlas)
    bg = painted_edit(fitted, "bg", 3)
    write_rgba(str(tmp_path / "bg_edit.png"), bg.rgb, bg.alpha)
    assert main(["export", atlas, "--bg-edit", str(tmp_path / "bg_edit.png"), "--out", str(tmp_path / "out")]) == 0
    loaded = load_nla(atlas)
    rgba = read_rgba8(tmp_path / "out" / "edit" / "edit_00002.png")
    edit = AtlasEdit(rgb=read_rgba8(tmp_path / "bg_edit.png")[:3], alpha=read_rgba8(tmp_path / "bg_edit.png")[3],
                     bbox=loaded.bboxes["bg"])
    assert (rgba - frame_edit_rgba(*maps(loaded, 2), None, edit)).abs().max() <= TOL
    assert (tmp_path / "out" / "stmap_fg" / "stmap_fg_00003.png").is_file()
    assert main(["export", atlas, "--fg-edit", "missing.png", "--out", str(tmp_path / "o2")]) != 0
