"""Video nodes (NLAFit, AtlasRender, Save/Load) as plain classes, the `nla`/`render` CLI and video IO."""

from __future__ import annotations

import os
import sys

import pytest
import torch


from synthetic_video import make_synthetic_video



@pytest.fixture(scope="module")
def small_video():
    return make_synthetic_video(frames=4, height=32, width=40)


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside ComfyUI, outputs go to ./t2l_outputs/text2live
    return tmp_path


def test_video_nodes_are_registered(pack):
    ids = set(pack.NODE_CLASS_MAPPINGS)
    assert {"T2L_NLAFit", "T2L_AtlasRender", "T2L_SaveNLA", "T2L_LoadNLA"} <= ids
    for i in ("T2L_NLAFit", "T2L_AtlasRender", "T2L_SaveNLA", "T2L_LoadNLA"):
        assert pack.NODE_CLASS_MAPPINGS[i].CATEGORY == "Text2LIVE/video"


def test_fit_render_save_load_nodes(pack, small_video, in_tmp):
    vn = sys.modules[pack.__name__ + ".nodes.video_nodes"]
    frames = small_video.frames.permute(0, 2, 3, 1).contiguous()  # IMAGE [T,H,W,3]
    with torch.inference_mode():  # like ComfyUI
        frames_inf = frames.clone()
        masks_inf = small_video.masks.clone()
        res = vn.NLAFit().fit(frames_inf, iterations=60, atlas_resolution=0, seed=1, masks=masks_inf,
                              batch_pixels=1024, flow="lk")
    nla, rec, fg, bg, alpha, info = res["result"]
    assert rec.shape == frames.shape and alpha.shape == (4, 32, 40)
    assert fg.shape[0] == 1 and fg.shape[-1] == 3 and bg.shape[-1] == 3
    assert "PSNR" in info and nla.psnr > 15

    render = vn.AtlasRender()
    with torch.inference_mode():
        same, _ = render.render(nla)
    assert torch.equal(same, (nla.frames_u8.float() / 255).permute(0, 2, 3, 1))
    # an opaque white bg edit whitens the background but leaves the foreground object
    white = torch.ones_like(bg)
    out, _ = render.render(nla, bg_atlas=white, bg_opacity=torch.ones(bg.shape[:3]))
    a = alpha > 0.9
    assert float(out[alpha < 0.02].mean()) > 0.97
    assert float((out[a] - same[a]).abs().mean()) < 0.05
    with pytest.raises(ValueError, match="same size"):
        render.render(nla, bg_atlas=white, bg_opacity=torch.ones(1, 5, 5))
    with pytest.raises(ValueError, match="fitted on 4 frames"):
        render.render(nla, frames=frames[:3])

    (path,) = vn.SaveNLA().save(nla, "clip")["result"]
    assert path.endswith("clip_00001.safetensors") and os.path.isfile(path)
    assert vn.LoadNLA.VALIDATE_INPUTS(os.path.basename(path)) is True
    assert "not found" in vn.LoadNLA.VALIDATE_INPUTS("nope.safetensors")
    (back,) = vn.LoadNLA().load(os.path.basename(path))
    again, _ = render.render(back, bg_atlas=white, bg_opacity=torch.ones(bg.shape[:3]))
    assert torch.equal(again, out)


def test_fit_node_without_masks_gives_background_only(pack, small_video, in_tmp):
    vn = sys.modules[pack.__name__ + ".nodes.video_nodes"]
    frames = small_video.frames.permute(0, 2, 3, 1).contiguous()
    nla, rec, fg, bg, alpha, info = vn.NLAFit().fit(frames, iterations=20, atlas_resolution=48, seed=0,
                                                    batch_pixels=512, flow="lk")["result"]
    assert float(alpha.abs().max()) == 0 and fg.shape == (1, 64, 64, 3)
    assert max(bg.shape[1:3]) == 48
    with pytest.raises(ValueError, match="no fg layer"):
        vn.AtlasRender().render(nla, fg_atlas=torch.zeros(1, 8, 8, 3))


def test_cli_nla_and_render(small_video, tmp_path):
    from t2l_core.cli.main import main
    from t2l_core.io.video_files import read_frames, write_frames, write_rgba
    from t2l_core.nla.atlas_files import read_nla_header

    frames_dir = tmp_path / "frames"
    masks_dir = tmp_path / "masks"
    write_frames(small_video.frames, str(frames_dir))
    write_frames(small_video.masks[:, None].expand(-1, 3, -1, -1), str(masks_dir))
    out = tmp_path / "atlas.safetensors"
    assert main(["nla", str(frames_dir), "--masks", str(masks_dir), "--iters", "30", "--out", str(out),
                 "--batch", "1024", "--flow", "lk"]) == 0
    head = read_nla_header(str(out))
    assert (head["frames"], head["height"], head["width"]) == ("4", "32", "40")
    assert not (tmp_path / "atlas.checkpoint.safetensors").exists()  # a finished fit leaves no checkpoint
    assert not (tmp_path / "atlas.flow.safetensors").exists()  # nor a flow cache
    kept = tmp_path / "kept.safetensors"
    assert main(["nla", str(frames_dir), "--iters", "10", "--out", str(kept), "--batch", "512", "--flow", "lk",
                 "--keep-checkpoint"]) == 0
    assert (tmp_path / "kept.checkpoint.safetensors").is_file() and (tmp_path / "kept.flow.safetensors").is_file()
    import json

    box = json.loads(head["bboxes"])["bg"]
    edit = tmp_path / "bg_edit.png"
    write_rgba(str(edit), torch.zeros(3, box["height"], box["width"]), torch.zeros(box["height"], box["width"]))
    assert main(["render", str(out), "--bg-edit", str(edit), "--out", str(tmp_path / "out")]) == 0
    rendered = read_frames(str(tmp_path / "out"))
    assert torch.equal((rendered * 255).round(), (read_frames(str(frames_dir)) * 255).round())
    # a wrong original-frames folder is refused
    write_frames(small_video.frames[:3], str(tmp_path / "short"))
    assert main(["render", str(out), "--frames", str(tmp_path / "short"), "--out", str(tmp_path / "o2")]) == 2


def test_video_file_round_trip_with_pyav(small_video, tmp_path):
    import av
    import numpy as np

    from t2l_core.io.video_files import read_frames

    path = str(tmp_path / "v.mp4")
    with av.open(path, "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 40, 32, "yuv420p"
        s.options = {"qscale": "1"}
        for t in range(4):
            arr = (small_video.frames[t].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    back = read_frames(path)
    assert back.shape == (4, 3, 32, 40)
    assert float((back - small_video.frames).abs().mean()) < 0.06


def test_export_for_compositing_node_writes_a_new_folder_each_time(pack, small_video, in_tmp):
    from PIL import Image

    vn = sys.modules[pack.__name__ + ".nodes.video_nodes"]
    frames = small_video.frames.permute(0, 2, 3, 1).contiguous()
    nla, _, _, bg, _, _ = vn.NLAFit().fit(frames, iterations=10, atlas_resolution=0, seed=1,
                                          masks=small_video.masks.clone(), batch_pixels=512, flow="lk")["result"]
    node = vn.ExportForCompositing()
    with torch.inference_mode():  # like ComfyUI
        first = node.save(nla, "shot", bg_atlas=torch.ones_like(bg), bg_opacity=torch.full(bg.shape[:3], 0.5))
        second = node.save(nla, "shot")
    folder = first["result"][0]
    assert folder.endswith("shot_00001") and second["result"][0].endswith("shot_00002")
    edit = Image.open(os.path.join(folder, "edit", "edit_00003.png"))
    assert edit.mode == "RGBA" and edit.size == (40, 32)
    assert sorted(os.listdir(folder)) == ["atlas_bg.png", "atlas_fg.png", "edit", "edit_atlas_bg.png", "stmap_bg",
                                          "stmap_fg"]
    assert not os.path.exists(os.path.join(second["result"][0], "edit"))  # no edit connected: maps and atlases


def test_fit_run_files_name_the_checkpoint_by_the_fit_and_the_flow_by_the_frames(small_video, tmp_path):
    from t2l_core.api import fit_key, fit_run_files, frames_fingerprint, nla_fit_config

    cfg = nla_fit_config(iterations=20, flow="lk")
    ckpt, flow = fit_run_files(tmp_path, small_video.frames, small_video.masks, cfg)
    assert ckpt == tmp_path / f"checkpoint_{fit_key(small_video.frames, small_video.masks, cfg)}.safetensors"
    assert flow == tmp_path / f"flow_{frames_fingerprint(small_video.frames)}_lk.safetensors"
    other_ckpt, same_flow = fit_run_files(tmp_path, small_video.frames, None, nla_fit_config(iterations=30, flow="lk"))
    assert other_ckpt != ckpt and same_flow == flow  # other settings: another fit, the same flow
