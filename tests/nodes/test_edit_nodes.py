"""Train/Apply Edit Layer and Composite nodes as plain classes (the pack loaded as ComfyUI loads it)."""

import sys

import pytest
import torch


NODE_KW = dict(prompt="golden astronaut", screen_prompt="", source_prompt="astronaut", iterations=3, size=129,
               seed=1, views=2)


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside ComfyUI checkpoints go to ./t2l_outputs/text2live
    return tmp_path


def _node(pack, node_id):
    return pack.NODE_CLASS_MAPPINGS[node_id]()


def test_nodes_registered(pack):
    ids = set(pack.NODE_CLASS_MAPPINGS)
    assert {"T2L_TrainEditLayer", "T2L_ApplyEditLayer", "T2L_Composite"} <= ids


def test_train_node_outputs_in_inference_mode(pack, tiny_clip, astronaut, in_tmp):
    image = astronaut.permute(0, 2, 3, 1).contiguous()  # ComfyUI IMAGE [1,96,128,3]
    with torch.inference_mode():  # ComfyUI runs nodes in inference mode
        image = image.clone()
        comp, edit, opacity, green, layer = _node(pack, "T2L_TrainEditLayer").train(tiny_clip, image, **NODE_KW)
    assert comp.shape == edit.shape == green.shape == (1, 96, 128, 3)
    assert opacity.shape == (1, 96, 128)
    for t in (comp, edit, opacity, green):
        assert t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    assert torch.allclose(comp, opacity[..., None] * edit + (1 - opacity[..., None]) * image, atol=1e-5)
    assert layer.info["steps"] == 3
    # a finished run leaves no checkpoint behind (ComfyUI's cache keeps the result)
    assert not list((in_tmp / "t2l_outputs" / "text2live" / "checkpoints").glob("*"))

    # apply the layer to another image (a batch of 2, each at its own resolution)
    other = torch.rand(2, 140, 150, 3)
    with torch.inference_mode():
        c2, e2, o2, g2 = _node(pack, "T2L_ApplyEditLayer").apply(layer, other)
    assert c2.shape == (2, 140, 150, 3) and o2.shape == (2, 140, 150)
    assert torch.allclose(c2, o2[..., None] * e2 + (1 - o2[..., None]) * other, atol=1e-5)


def test_train_node_cancel_then_resume(pack, tiny_clip, astronaut, in_tmp, monkeypatch):
    from t2l_core.progress import PHASE_STRUCTURE, Cancelled

    bridge = pack.nodes.comfy_bridge
    image = astronaut.permute(0, 2, 3, 1).contiguous()
    ckpt_dir = in_tmp / "t2l_outputs" / "text2live" / "checkpoints"

    def cancel():
        raise Cancelled("interrupted")

    # cancelled during the start-up (the first cancel point): nothing trained, nothing to keep
    monkeypatch.setattr(bridge, "check_interrupt", cancel)
    with pytest.raises(Cancelled):
        _node(pack, "T2L_TrainEditLayer").train(tiny_clip, image, **NODE_KW)
    assert not list(ckpt_dir.glob("edit_*.safetensors"))
    # cancelled once training runs: a checkpoint is left
    make_hooks, state = bridge.make_hooks, {"training": False}

    def hooks_seeing_the_start_up(**kw):
        hooks = make_hooks(**kw)
        hooks.on_phase = lambda name, done, total: state.update(training=name == PHASE_STRUCTURE and done == total)
        return hooks

    monkeypatch.setattr(bridge, "make_hooks", hooks_seeing_the_start_up)
    monkeypatch.setattr(bridge, "check_interrupt", lambda: cancel() if state["training"] else None)
    with pytest.raises(Cancelled):
        _node(pack, "T2L_TrainEditLayer").train(tiny_clip, image, **NODE_KW)
    ckpts = list(ckpt_dir.glob("edit_*.safetensors"))
    assert len(ckpts) == 1
    monkeypatch.setattr(bridge, "check_interrupt", lambda: None)
    out = _node(pack, "T2L_TrainEditLayer").train(tiny_clip, image, **NODE_KW)
    assert out[4].info["steps"] == 3


def test_train_node_clear_errors(pack, tiny_clip, astronaut, in_tmp):
    node = _node(pack, "T2L_TrainEditLayer")
    image = astronaut.permute(0, 2, 3, 1).contiguous()
    with pytest.raises(ValueError, match="prompt is empty"):
        node.train(tiny_clip, image, **{**NODE_KW, "prompt": ""})
    with pytest.raises(ValueError, match="batch of 2"):
        node.train(tiny_clip, image.expand(2, -1, -1, -1), **NODE_KW)
    with pytest.raises(ValueError, match="mask"):
        node.train(tiny_clip, image, bootstrap_mask=torch.ones(1, 10, 10), **NODE_KW)
    with pytest.raises(ValueError, match="at least 32 px"):
        node.train(tiny_clip, torch.rand(1, 16, 16, 3), **NODE_KW)


def test_train_node_protects_a_region_and_reports_it(pack, tiny_clip, astronaut, in_tmp):
    image = astronaut.permute(0, 2, 3, 1).contiguous()
    protect = torch.zeros(1, 96, 128)
    protect[:, :, :48] = 1.0
    with torch.inference_mode():
        out = _node(pack, "T2L_TrainEditLayer").train(tiny_clip, image.clone(), protect_mask=protect, **NODE_KW)
    comp, edit, opacity, green, layer = out["result"]
    assert torch.equal(opacity[:, :, :48], torch.zeros(1, 96, 48))
    assert torch.equal(comp[:, :, :48], image[:, :, :48])  # the input bit for bit where the mask is 1
    assert any("inside the protected region" in line for line in out["ui"]["text"])
    node = _node(pack, "T2L_TrainEditLayer")
    with pytest.raises(ValueError, match="protect_mask has 2 masks"):
        node.train(tiny_clip, image, protect_mask=protect.expand(2, -1, -1), **NODE_KW)
    with pytest.raises(ValueError, match="protect mask has shape"):
        node.train(tiny_clip, image, protect_mask=torch.ones(1, 10, 10), **NODE_KW)


def test_composite_node(pack):
    node = _node(pack, "T2L_Composite")
    color = torch.full((1, 4, 5, 3), 0.8)
    opacity = torch.linspace(0, 1, 20).view(1, 4, 5)
    bg = torch.rand(3, 4, 5, 3)
    (out,) = node.composite(color, opacity, background=bg)
    assert out.shape == (3, 4, 5, 3)  # batch of 1 broadcast against 3
    assert torch.allclose(out, opacity[..., None] * color + (1 - opacity[..., None]) * bg, atol=1e-6)
    (green,) = node.composite(color, opacity)
    expect = opacity[..., None] * 0.8 + (1 - opacity[..., None]) * torch.tensor([0.0, 177 / 255, 64 / 255])
    assert torch.allclose(green, expect, atol=1e-6)
    (white,) = node.composite(color, torch.zeros(1, 4, 5), fill_color="255,255,255")
    assert torch.allclose(white, torch.ones_like(white))
    with pytest.raises(ValueError, match="sizes differ"):
        node.composite(color, torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="RRGGBB"):
        node.composite(color, opacity, fill_color="greenish")


def test_video_iterations_default_is_the_papers_3000_unless_changed(pack, monkeypatch):
    """With nla and video_defaults, the widget's untouched default (1000, the image setting) means 3000; the
    node says so in its text."""
    edit_nodes = sys.modules[pack.__name__ + ".nodes.edit_nodes"]
    node_cls = pack.NODE_CLASS_MAPPINGS["T2L_TrainEditLayer"]
    seen, real = [], edit_nodes.video_config_from_image_settings

    class Stop(Exception):
        pass

    def capture(settings, layer, video_defaults):
        seen.append(real(settings, layer, video_defaults))
        raise Stop  # the settings are all this test needs

    monkeypatch.setattr(edit_nodes, "video_config_from_image_settings", capture)
    node = node_cls()
    assert node_cls.INPUT_TYPES()["required"]["iterations"][1]["default"] == 1000
    for iterations, video_defaults in ((1000, True), (1200, True), (1000, False)):
        with pytest.raises(Stop):
            node.train(None, None, "x", iterations=iterations, nla=object(), video_defaults=video_defaults)
    assert [c.iters for c, _ in seen] == [3000, 1200, 1000]
    assert "3000 steps" in seen[0][1][0] and seen[1][1] == [] and seen[2][1] == []
