"""Checks made when a prompt is queued (each node's VALIDATE_INPUTS), called directly the way ComfyUI 0.3.64
calls them: only the inputs the method names, constants as values, None for an input wired to another node,
and nothing for an input the prompt does not hold. The same rules run when the node runs."""

from __future__ import annotations

import inspect

import pytest
import torch


@pytest.fixture()
def nodes(pack):
    return pack.NODE_CLASS_MAPPINGS


def _msg(cls, **received):
    from t2l_pack.nodes.declarations import queue_message

    return queue_message(cls, **received)


def test_every_validate_inputs_names_exactly_the_inputs_its_rules_read(nodes):
    """The signature is what ComfyUI reads (inspect.getfullargspec) to decide which inputs to pass and which
    of its own min/max/combo checks to skip; it is made from the node's RULES, so the two cannot drift."""
    from t2l_pack.nodes.declarations import checked_inputs

    validated = set()
    for node_id, cls in nodes.items():
        if not getattr(cls, "RULES", ()):
            continue
        spec = inspect.getfullargspec(cls.VALIDATE_INPUTS)
        assert spec.args == ["cls"] + checked_inputs(cls), node_id
        assert spec.varkw is None, node_id  # **kwargs would switch off ComfyUI's checks of every input
        declared = {**cls.INPUT_TYPES().get("required", {}), **cls.INPUT_TYPES().get("optional", {})}
        assert set(checked_inputs(cls)) <= set(declared), node_id
        validated.add(node_id)
    assert {"T2L_Composite", "T2L_TrainEditLayer", "T2L_LoadCLIP", "T2L_RelevancyMap", "T2L_NLAFit",
            "T2L_AtlasRender", "T2L_LoadNLA", "T2L_SaveEditLayer", "T2L_LoadEditLayer"} <= validated


def test_composite_fill_color_is_checked_at_queue_time(nodes):
    Composite = nodes["T2L_Composite"]
    assert Composite.VALIDATE_INPUTS(fill_color="#00B140") is True
    assert Composite.VALIDATE_INPUTS(fill_color="0, 177, 64") is True
    msg = Composite.VALIDATE_INPUTS(fill_color="blue")  # one input passed: the message is returned
    assert msg.startswith("fill_color: ") and "'blue'" in msg and "#RRGGBB" in msg and "R,G,B" in msg
    assert "0..255" in Composite.VALIDATE_INPUTS(fill_color="300,0,0")
    # wired to another node: its value is not known yet
    assert Composite.VALIDATE_INPUTS(fill_color=None) is True
    # with a background image connected the colour is not used
    assert Composite.VALIDATE_INPUTS(fill_color="blue", background=None) is True
    # a workflow without the widget gets its default
    assert Composite.VALIDATE_INPUTS() is True
    # the same rule when the node runs
    with pytest.raises(ValueError, match="fill_color: .*'blue'"):
        Composite().composite(torch.rand(1, 4, 5, 3), torch.rand(1, 4, 5), fill_color="blue")


def test_train_edit_layer_checks_prompt_and_connections(nodes):
    Train = nodes["T2L_TrainEditLayer"]
    assert Train.VALIDATE_INPUTS(prompt="oreo cake") is True
    assert "prompt is empty" in Train.VALIDATE_INPUTS(prompt="  | \n")
    assert Train.VALIDATE_INPUTS(prompt=None) is True  # from a text node: checked when it runs
    # an atlas and a bootstrap mask both connected: refused before the atlas fit upstream runs
    msg = _msg(Train, prompt="oreo cake", nla=None, bootstrap_mask=None)
    assert "bootstrap_mask" in msg and "roi_text" in msg
    assert _msg(Train, prompt="oreo cake", nla=None) is True
    # two problems: one message holding both
    msg = _msg(Train, prompt="", nla=None, bootstrap_mask=None)
    assert "prompt is empty" in msg and "bootstrap_mask" in msg and len(msg.splitlines()) == 2
    # spill control is for single images: a protect mask or an exclusion text with an atlas is refused
    assert "protect_mask" in _msg(Train, prompt="oreo cake", nla=None, protect_mask=None)
    assert "exclude_text" in _msg(Train, prompt="oreo cake", nla=None, exclude_text="the dog")
    assert _msg(Train, prompt="oreo cake", nla=None, exclude_text="  ") is True
    assert _msg(Train, prompt="oreo cake", exclude_text="the dog", protect_mask=None) is True


def test_load_clip_checks_device_precision_and_architecture(nodes, tiny_clip_file, monkeypatch):
    monkeypatch.setenv("T2L_MODELS_DIR", str(tiny_clip_file.parent))
    LoadCLIP = nodes["T2L_LoadCLIP"]
    ok = dict(model=tiny_clip_file.name, device="cpu", precision="fp32", architecture="")
    assert LoadCLIP.VALIDATE_INPUTS(**ok) is True
    msg = _msg(LoadCLIP, **{**ok, "precision": "fp16"})
    assert "'precision'" in msg and "fp32 or bf16" in msg
    if not torch.cuda.is_available():
        assert "'device'" in _msg(LoadCLIP, **{**ok, "device": "cuda"})
    msg = _msg(LoadCLIP, **{**ok, "architecture": "ViT-Q-99"})
    assert msg.startswith("architecture: ") and "ViT-Q-99" in msg
    assert LoadCLIP.VALIDATE_INPUTS(**{**ok, "architecture": "ViT-B-32"}) is True
    # ComfyUI skips its combo check for the inputs VALIDATE_INPUTS takes: the rules make it
    assert "'tpu' is not one of 'auto', 'cpu', 'cuda'" in _msg(LoadCLIP, **{**ok, "device": "tpu"})


def test_relevancy_text_and_nla_flow(nodes, monkeypatch):
    assert "text is empty" in nodes["T2L_RelevancyMap"].VALIDATE_INPUTS(text=" ")
    assert nodes["T2L_RelevancyMap"].VALIDATE_INPUTS(text="horse") is True
    NLAFit = nodes["T2L_NLAFit"]
    monkeypatch.setattr(torch.hub, "get_dir", lambda: "/nonexistent-t2l-hub")
    msg = _msg(NLAFit, flow="raft", frames=None)  # None: wired to another node
    assert msg.startswith("flow: ") and "RAFT weights" in msg and "flow='lk'" in msg
    assert _msg(NLAFit, flow="auto", frames=None) is True and _msg(NLAFit, flow="lk", video=None) is True
    # the video comes as frames (IMAGE) or as a VIDEO: one of them must be connected
    msg = NLAFit.VALIDATE_INPUTS(flow="auto")
    assert "connect the video" in msg and "frames" in msg and "video" in msg


def test_atlas_render_connections(nodes):
    Render = nodes["T2L_AtlasRender"]
    assert "fg_opacity was given without fg_atlas" in Render.VALIDATE_INPUTS(fg_opacity=None)
    msg = _msg(Render, bg_atlas=None, bg_edit_layer=None)
    assert "either bg_atlas or bg_edit_layer" in msg
    assert _msg(Render, fg_atlas=None, fg_opacity=None, bg_edit_layer=None) is True
    assert Render.VALIDATE_INPUTS() is True


def test_file_nodes(nodes, pack, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # output folders of plain-Python runs: ./t2l_outputs
    LoadNLA = nodes["T2L_LoadNLA"]
    assert "Save Atlas" in _msg(LoadNLA, file="(none saved yet)", path="")
    msg = _msg(LoadNLA, file="(none saved yet)", path=str(tmp_path / "gone.safetensors"))
    assert msg.startswith("path: ") and "gone.safetensors" in msg
    SaveLayer = nodes["T2L_SaveEditLayer"]
    assert SaveLayer.VALIDATE_INPUTS(filename_prefix="cat/leopard") is True
    assert "not inside" in SaveLayer.VALIDATE_INPUTS(filename_prefix="../../escape")
    LoadLayer = nodes["T2L_LoadEditLayer"]
    assert "Save Edit Layer" in LoadLayer.VALIDATE_INPUTS(file="(no layer saved yet)")


def test_messages_of_the_declared_limits(nodes):
    """For the inputs VALIDATE_INPUTS takes ComfyUI skips its own range and list checks; ours name the widget
    and the accepted values, from the same declaration the widget is drawn from."""
    from t2l_pack.nodes.declarations import limit_problem

    it = nodes["T2L_TrainEditLayer"].INPUT_TYPES()
    assert limit_problem(it, "size", 0).startswith("0 is out of range; use ")
    assert limit_problem(it, "precision", "fp8") == "'fp8' is not one of 'auto', 'fp32', 'bf16 CLIP'; pick one from the list"
    assert limit_problem(it, "size", 512) is None
