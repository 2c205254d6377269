"""A painted keyframe pushed into the atlases (Frame Edit To Atlas) propagates along the known motion."""

from __future__ import annotations

import os
import sys

import pytest
import torch


from synthetic_video import make_synthetic_video



@pytest.fixture(scope="module")
def fitted(pack, tmp_path_factory):
    vn = sys.modules[pack.__name__ + ".nodes.video_nodes"]
    video = make_synthetic_video(frames=6, height=40, width=56, bg_velocity=(2.0, 0.0))
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("nla"))
    try:
        with torch.inference_mode():
            res = vn.NLAFit().fit(video.frames.permute(0, 2, 3, 1).clone(), iterations=150, atlas_resolution=0,
                                  seed=0, masks=video.masks.clone(), batch_pixels=2048, flow="lk")
    finally:
        os.chdir(cwd)
    return vn, video, res["result"][0]


def test_painted_keyframe_follows_the_background_motion(fitted):
    vn, video, nla = fitted
    T, _, H, W = video.frames.shape
    frame0 = video.frames[0].clone()
    opacity = torch.zeros(H, W)
    y0, x0, s = 30, 14, 6  # a red square on the background, clear of the moving cat in the first and last frame
    assert video.masks[0, y0:y0 + s, x0:x0 + s].max() < 0.05
    assert video.masks[-1, y0:y0 + s, x0 - 10:x0 - 10 + s].max() < 0.05
    frame0[:, y0:y0 + s, x0:x0 + s] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    opacity[y0:y0 + s, x0:x0 + s] = 1.0

    with torch.inference_mode():
        fg, fg_a, bg, bg_a = vn.FrameEditToAtlas().push(nla, frame0.permute(1, 2, 0)[None], opacity[None], 0)
        out, _ = vn.AtlasRender().render(nla, fg_atlas=fg, fg_opacity=fg_a, bg_atlas=bg, bg_opacity=bg_a)
    assert bg_a.max() > 0.9 and bg.shape[-1] == 3
    red = (out[..., 0] - 0.5 * (out[..., 1] + out[..., 2])).clamp(min=0)  # [T,H,W] redness

    def centroid(m):
        ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                                indexing="ij")
        w = (m > 0.5).float()
        return float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())

    cx0, cy0 = centroid(red[0])
    assert abs(cx0 - (x0 + (s - 1) / 2)) < 0.75 and abs(cy0 - (y0 + (s - 1) / 2)) < 0.75
    # the camera pans right by 2 px per frame: scene content moves left by 2 px per frame
    dx, dy = video.bg_frame_displacement(0, T - 1)
    cxl, cyl = centroid(red[-1])
    assert abs(cxl - (cx0 + dx)) < 1.0 and abs(cyl - (cy0 + dy)) < 1.0
    # away from the square (2 px margin) nothing changes
    far = torch.ones(H, W, dtype=torch.bool)
    far[y0 - 2:y0 + s + 2, x0 - 2:x0 + s + 2] = False
    assert (out[0][far] - video.frames[0].permute(1, 2, 0)[far]).abs().max() < 0.05


def test_frame_edit_errors_say_what_to_change(fitted):
    vn, video, nla = fitted
    T, _, H, W = video.frames.shape
    img = video.frames[:1].permute(0, 2, 3, 1)
    with pytest.raises(ValueError, match=f"0..{T - 1}"):
        vn.FrameEditToAtlas().push(nla, img, torch.ones(1, H, W), T)
    with pytest.raises(ValueError, match=f"{W}x{H}"):
        vn.FrameEditToAtlas().push(nla, img[:, :20], torch.ones(1, 20, W), 0)


def test_transparent_atlas_edit_is_a_no_op(fitted):
    vn, video, nla = fitted
    with torch.inference_mode():
        plain, _ = vn.AtlasRender().render(nla)
        same, _ = vn.AtlasRender().render(nla, fg_atlas=torch.zeros(1, 64, 64, 3), fg_opacity=torch.zeros(1, 64, 64))
    assert torch.equal(plain, same)


def test_cli_render_frame_edit_matches_the_node(fitted, tmp_path):
    from t2l_core.cli.main import main
    from t2l_core.nla.atlas_files import save_nla
    from t2l_core.io.video_files import read_frames, write_rgba

    vn, video, nla = fitted
    _, _, H, W = video.frames.shape
    frame = video.frames[2].clone()
    opacity = torch.zeros(H, W)
    frame[1, 2:8, 2:8] = 1.0  # a green square painted on frame 2
    opacity[2:8, 2:8] = 1.0
    atlas = save_nla(nla, str(tmp_path / "atlas.safetensors"))
    png = write_rgba(str(tmp_path / "edit.png"), frame, opacity)
    assert main(["render", atlas, "--frame-edit", png, "--frame-index", "2", "--out", str(tmp_path / "out")]) == 0
    cli_frames = read_frames(str(tmp_path / "out"))
    with torch.inference_mode():
        outs = vn.FrameEditToAtlas().push(nla, frame.permute(1, 2, 0)[None], opacity[None], 2)
        node, _ = vn.AtlasRender().render(nla, *outs)
    assert cli_frames.shape == (video.frames.shape[0], 3, H, W)
    # the PNG round trip quantises the painted frame to 8 bits
    assert (cli_frames - node.permute(0, 3, 1, 2)).abs().max() < 3 / 255
