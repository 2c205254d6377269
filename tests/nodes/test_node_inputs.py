"""Every node that takes an IMAGE or MASK refuses NaN/Inf values with a message naming the input, before any
work; Relevancy Map refuses images too small for it; a layer generated below the input's resolution for lack
of memory is reported in the node's UI text; finished fits leave no files behind."""

from __future__ import annotations

import sys

import pytest
import torch


from _edit_helpers import SMALL_GENERATOR
from synthetic_video import make_synthetic_video

from t2l_core.nla.fit import NLAFitConfig, fit_nla

T, H, W = 4, 32, 40


@pytest.fixture(scope="module")
def video():
    return make_synthetic_video(frames=T, height=H, width=W)


@pytest.fixture(scope="module")
def nla(video):
    return fit_nla(video.frames, video.masks, NLAFitConfig(iterations=10, batch_pixels=512, flow="lk"))


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside ComfyUI, outputs go to ./t2l_outputs/text2live
    return tmp_path


def _layer(pack):
    """An edit layer with random weights (the pack's own EditLayer class, as nodes check it)."""
    el = sys.modules[pack.__name__ + ".t2l_core.edit.layer"]
    gen = sys.modules[pack.__name__ + ".t2l_core.edit.generator"]
    return el.EditLayer(gen.build_generator(SMALL_GENERATOR, seed=0).state_dict(), SMALL_GENERATOR)


def _image(b=1, h=H, w=W):
    return torch.rand(b, h, w, 3, generator=torch.Generator().manual_seed(0))


def _mask(b=1, h=H, w=W):
    return torch.rand(b, h, w, generator=torch.Generator().manual_seed(1))


def _poison(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[t.numel() // 2] = value
    return t


TRAIN = dict(prompt="golden astronaut", screen_prompt="", source_prompt="", iterations=2, size=129, seed=0, views=2)

# (node id, method, input name, builder(bad value, context) -> kwargs)
CASES = [
    ("T2L_TrainEditLayer", "train", "image", lambda v, c: dict(clip=c["clip"], image=_poison(_image(1, 96, 128), v), **TRAIN)),
    ("T2L_TrainEditLayer", "train", "bootstrap_mask",
     lambda v, c: dict(clip=c["clip"], image=_image(1, 96, 128), bootstrap_mask=_poison(_mask(1, 96, 128), v), **TRAIN)),
    ("T2L_TrainEditLayer", "train", "protect_mask",
     lambda v, c: dict(clip=c["clip"], image=_image(1, 96, 128), protect_mask=_poison(_mask(1, 96, 128), v), **TRAIN)),
    ("T2L_TrainEditLayer", "train", "image",  # the video edit: frames of the atlas's video
     lambda v, c: dict(clip=c["clip"], image=_poison(_image(T), v), nla=c["nla"], atlas_layer="background", **TRAIN)),
    ("T2L_ApplyEditLayer", "apply", "image", lambda v, c: dict(edit_layer=c["layer"], image=_poison(_image(2), v))),
    ("T2L_Composite", "composite", "color", lambda v, c: dict(color=_poison(_image(), v), opacity=_mask())),
    ("T2L_Composite", "composite", "opacity", lambda v, c: dict(color=_image(), opacity=_poison(_mask(), v))),
    ("T2L_Composite", "composite", "background",
     lambda v, c: dict(color=_image(), opacity=_mask(), background=_poison(_image(), v))),
    ("T2L_RelevancyMap", "run", "image", lambda v, c: dict(clip=c["clip"], image=_poison(_image(2, 64, 64), v), text="x")),
    ("T2L_NLAFit", "fit", "frames",
     lambda v, c: dict(frames=_poison(_image(T), v), iterations=10, atlas_resolution=0, seed=0, flow="lk")),
    ("T2L_NLAFit", "fit", "masks", lambda v, c: dict(frames=_image(T), iterations=10, atlas_resolution=0, seed=0,
                                                     masks=_poison(_mask(T), v), flow="lk")),
    ("T2L_AtlasRender", "render", "fg_atlas", lambda v, c: dict(nla=c["nla"], fg_atlas=_poison(_image(), v))),
    ("T2L_AtlasRender", "render", "fg_opacity",
     lambda v, c: dict(nla=c["nla"], fg_atlas=_image(), fg_opacity=_poison(_mask(), v))),
    ("T2L_AtlasRender", "render", "bg_atlas", lambda v, c: dict(nla=c["nla"], bg_atlas=_poison(_image(), v))),
    ("T2L_AtlasRender", "render", "bg_opacity",
     lambda v, c: dict(nla=c["nla"], bg_atlas=_image(), bg_opacity=_poison(_mask(), v))),
    ("T2L_AtlasRender", "render", "frames",
     lambda v, c: dict(nla=c["nla"], bg_edit_layer=c["layer"], frames=_poison(_image(T), v))),
    ("T2L_ExportForCompositing", "save", "fg_atlas", lambda v, c: dict(nla=c["nla"], fg_atlas=_poison(_image(), v))),
    ("T2L_ExportForCompositing", "save", "fg_opacity",
     lambda v, c: dict(nla=c["nla"], fg_atlas=_image(), fg_opacity=_poison(_mask(), v))),
    ("T2L_ExportForCompositing", "save", "bg_atlas", lambda v, c: dict(nla=c["nla"], bg_atlas=_poison(_image(), v))),
    ("T2L_ExportForCompositing", "save", "bg_opacity",
     lambda v, c: dict(nla=c["nla"], bg_atlas=_image(), bg_opacity=_poison(_mask(), v))),
    ("T2L_FrameEditToAtlas", "push", "edited_frame",
     lambda v, c: dict(nla=c["nla"], edited_frame=_poison(_image(), v), opacity=_mask())),
    ("T2L_FrameEditToAtlas", "push", "opacity",
     lambda v, c: dict(nla=c["nla"], edited_frame=_image(), opacity=_poison(_mask(), v))),
]


def test_every_image_and_mask_input_is_covered(pack):
    """The table above names every IMAGE and MASK input of every node."""
    covered = {(node, name) for node, _, name, _ in CASES}
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                if entry[0] in ("IMAGE", "MASK"):
                    assert (node_id, name) in covered, f"{node_id}.{name} has no NaN/Inf case"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("node_id,method,name,build", CASES, ids=[f"{c[0][4:]}-{c[2]}" for c in CASES])
def test_non_finite_inputs_are_refused_before_any_work(pack, tiny_clip, nla, in_tmp, node_id, method, name, build,
                                                       value):
    ctx = {"clip": tiny_clip, "nla": nla, "layer": _layer(pack)}
    node = pack.NODE_CLASS_MAPPINGS[node_id]()
    kind = "NaN" if value != value else "infinite"
    with torch.inference_mode():  # like ComfyUI
        with pytest.raises(ValueError, match=f"{kind} values in the {name} input"):
            getattr(node, method)(**build(value, ctx))
    written = [p for p in (in_tmp / "t2l_outputs").rglob("*") if p.is_file()] if (in_tmp / "t2l_outputs").exists() else []
    assert written == []  # no checkpoint, no flow cache: nothing ran


def test_relevancy_map_refuses_images_too_small(pack, tiny_clip):
    from t2l_core.clip.relevancy import relevancy_map

    node = pack.NODE_CLASS_MAPPINGS["T2L_RelevancyMap"]()
    with pytest.raises(ValueError, match="20x200 px.*at least 32 px"):
        node.run(tiny_clip, torch.rand(1, 200, 20, 3), "x")
    with pytest.raises(ValueError, match="at least 32 px"):
        relevancy_map(tiny_clip, torch.rand(1, 3, 31, 64), "x")
    with pytest.raises(ValueError, match="NaN values in the image"):
        relevancy_map(tiny_clip, _poison(torch.rand(1, 3, 64, 64), float("nan")), "x")
    mask, _ = node.run(tiny_clip, torch.rand(1, 32, 40, 3), "x")  # the smallest accepted size works
    assert mask.shape == (1, 32, 40) and bool(torch.isfinite(mask).all())


def test_memory_fallback_is_shown_in_the_node_output(pack, tiny_clip, in_tmp, monkeypatch):
    """A layer generated below the input's resolution says so in the node's UI text, not only in the log."""
    el = sys.modules[pack.__name__ + ".t2l_core.edit.layer"]
    budget = el.estimate_bytes(200, 266)  # a 300x400 image does not fit; about 200x266 does
    monkeypatch.setattr(el, "default_memory_budget", lambda device: budget)
    image = _image(1, 300, 400)
    out = pack.NODE_CLASS_MAPPINGS["T2L_ApplyEditLayer"]().apply(_layer(pack), image, generator_resolution="native")
    assert isinstance(out, dict) and out["result"][0].shape == (1, 300, 400, 3)
    (text,) = out["ui"]["text"]
    assert "does not fit the memory budget" in text and "upscaled to 400x300" in text
    # the generator at the image's own resolution (the working size always fits)
    trained = pack.NODE_CLASS_MAPPINGS["T2L_TrainEditLayer"]().train(tiny_clip, image, **TRAIN,
                                                                      generator_resolution="native")
    assert any("does not fit the memory budget" in t for t in trained["ui"]["text"])
    assert trained["result"][0].shape == (1, 300, 400, 3)
    # within the budget nothing is said and the plain tuple comes back
    monkeypatch.setattr(el, "default_memory_budget", lambda device: 2**34)
    assert isinstance(pack.NODE_CLASS_MAPPINGS["T2L_ApplyEditLayer"]().apply(_layer(pack), image,
                                                                             generator_resolution="native"), tuple)


def test_finished_fit_node_leaves_no_files(pack, video, in_tmp):
    node = pack.NODE_CLASS_MAPPINGS["T2L_NLAFit"]()
    frames = video.frames.permute(0, 2, 3, 1).contiguous()
    node.fit(frames, iterations=10, atlas_resolution=0, seed=0, batch_pixels=512, flow="lk")
    nla_dir = in_tmp / "t2l_outputs" / "text2live" / "nla"
    assert sorted(p.name for p in nla_dir.iterdir()) == []
    node.fit(frames, iterations=10, atlas_resolution=0, seed=0, batch_pixels=512, flow="lk", keep_checkpoint=True)
    names = sorted(p.name for p in nla_dir.iterdir())
    assert len(names) == 2 and names[0].startswith("checkpoint_") and names[1].startswith("flow_")


def test_notes_reach_the_executing_node_in_a_server(pack, monkeypatch):
    """Inside ComfyUI the notes are sent as the text under the executing node (PromptServer.send_progress_text)."""
    import types

    bridge = pack.nodes.comfy_bridge
    sent = []
    server = types.SimpleNamespace(last_node_id="12", send_progress_text=lambda text, node: sent.append((node, text)))
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=server)))
    monkeypatch.setattr(bridge, "HAVE_COMFY", True)
    bridge.tell_user("Apply Edit Layer", ["first", "", "second"])
    assert sent == [("12", "first\nsecond")]
    bridge.tell_user("Apply Edit Layer", [])
    assert len(sent) == 1
    assert bridge.with_notes((1, 2), []) == (1, 2)
    assert bridge.with_notes((1, 2), ["x"]) == {"ui": {"text": ["x"]}, "result": (1, 2)}
