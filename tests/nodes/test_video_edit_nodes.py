"""TrainEditLayer with a T2L_NLA (video edit through the atlas) and AtlasRender applying the trained layer,
as plain classes (ComfyUI runs them in inference mode); the `video` CLI."""

from __future__ import annotations

import sys

import pytest
import torch


from synthetic_video import make_synthetic_video

from t2l_core.nla.fit import NLAFitConfig, fit_nla



@pytest.fixture(scope="module")
def big_nla():
    """6 frames of 144x132: the default (7-scale) generator needs 129 px on each side."""
    v = make_synthetic_video(frames=6, height=132, width=144, bg_velocity=(2.0, 1.0), fg_velocity=(-2.0, 1.0))
    return fit_nla(v.frames, v.masks, NLAFitConfig(iterations=20, batch_pixels=2048, seed=0, flow="lk"), device="cpu")


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_new_inputs_are_appended_at_the_end(pack):
    train = pack.NODE_CLASS_MAPPINGS["T2L_TrainEditLayer"].INPUT_TYPES()
    released = ["roi_text", "bootstrap_mask", "lambda_composition", "lambda_screen", "lambda_structure", "sparsity_l1",
                "sparsity_l0", "lambda_bootstrap", "views", "resume", "preview_every", "nla", "atlas_layer",
                "video_defaults"]
    assert list(train["optional"])[:len(released)] == released  # later inputs only ever come after these
    render = pack.NODE_CLASS_MAPPINGS["T2L_AtlasRender"].INPUT_TYPES()
    released = ["fg_atlas", "fg_opacity", "bg_atlas", "bg_opacity", "frames", "fg_edit_layer", "bg_edit_layer"]
    assert list(render["optional"])[:len(released)] == released
    for spec in (train, render):
        for section in spec.values():
            assert all("tooltip" in entry[1] for entry in section.values())


def test_train_on_atlas_then_render_the_layer(pack, tiny_clip, big_nla, in_tmp):
    en = sys.modules[pack.__name__ + ".nodes.edit_nodes"]
    vn = sys.modules[pack.__name__ + ".nodes.video_nodes"]
    frames = big_nla.original_frames().permute(0, 2, 3, 1).contiguous()
    with torch.inference_mode():  # like ComfyUI
        video, edit, opacity, screen, layer = en.TrainEditLayer().train(
            tiny_clip, frames.clone(), "golden astronaut", iterations=2, seed=0, nla=big_nla,
            atlas_layer="background", video_defaults=True)
    T, H, W = big_nla.num_frames, *big_nla.size
    assert video.shape == (T, H, W, 3)
    assert edit.shape[0] == 1 and edit.shape[-1] == 3 and opacity.shape == edit.shape[:3] and screen.shape == edit.shape
    assert min(edit.shape[1:3]) >= 129
    assert layer.info["atlas"]["layer"] == "bg" and layer.info["config"]["n_views"] == 6
    assert not list((in_tmp / "t2l_outputs" / "text2live" / "checkpoints").glob("*"))  # a finished run leaves none
    with torch.inference_mode():
        rendered, _ = vn.AtlasRender().render(big_nla, bg_edit_layer=layer)
    assert torch.allclose(rendered, video, atol=1e-4)
    # the edited atlas outputs chain into the painted-atlas inputs and give the same video
    with torch.inference_mode():
        chained, _ = vn.AtlasRender().render(big_nla, bg_atlas=edit, bg_opacity=opacity)
    assert torch.allclose(chained, video, atol=1e-4)
    with pytest.raises(ValueError, match="background"):
        vn.AtlasRender().render(big_nla, fg_edit_layer=layer)
    with pytest.raises(ValueError, match="either"):
        vn.AtlasRender().render(big_nla, bg_atlas=edit, bg_edit_layer=layer)
    with pytest.raises(ValueError, match="bootstrap_mask"):
        en.TrainEditLayer().train(tiny_clip, frames, "x", iterations=1, nla=big_nla, bootstrap_mask=torch.ones(1, H, W))


def test_video_cli_trains_both_layers_and_combines_them(tiny_clip_file, big_nla, tmp_path, capsys):
    from t2l_core.cli.main import main
    from t2l_core.edit.layer import EditLayer
    from t2l_core.nla.atlas_files import save_nla
    from t2l_core.io.video_files import read_frames, write_frames

    atlas = save_nla(big_nla, str(tmp_path / "atlas.safetensors"))
    write_frames(big_nla.original_frames(), str(tmp_path / "frames"))
    common = ["--frames", str(tmp_path / "frames"), "--clip", str(tiny_clip_file), "--device", "cpu", "--iters", "1",
              "--quiet"]
    assert main(["video", atlas, "--prompt", "snowy ground", "--layer", "bg", "--out", str(tmp_path / "bg")] + common) == 0
    bg_layer = tmp_path / "bg" / "edit_layer_bg.safetensors"
    assert EditLayer.load(bg_layer).info["atlas"]["layer"] == "bg"
    assert (tmp_path / "bg" / "bg_atlas_edit.png").is_file()
    assert main(["video", atlas, "--prompt", "golden cat", "--layer", "fg", "--other-layer", str(bg_layer),
                 "--out", str(tmp_path / "both")] + common) == 0
    both = read_frames(str(tmp_path / "both" / "frames"))
    bg_only = read_frames(str(tmp_path / "bg" / "frames"))
    assert both.shape == (big_nla.num_frames, 3, *big_nla.size)
    assert not torch.allclose(both, bg_only)
    out = capsys.readouterr().out
    assert "edited frames" in out
    # a wrong layer name is refused by the parser; the same-layer combination with a clear message
    assert main(["video", atlas, "--prompt", "x", "--layer", "bg", "--other-layer", str(bg_layer),
                 "--out", str(tmp_path / "bad")] + common) == 2
    assert "same (bg) atlas" in capsys.readouterr().err
