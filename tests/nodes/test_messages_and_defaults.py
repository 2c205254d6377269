"""Messages written for the place they appear (one per problem; ComfyUI folders and refresh inside nodes, flags
on the CLI; every file error names the file), the video workflows' frame rate, the seed-control default and
the template folder ComfyUI serves."""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess

import pytest
import torch
from safetensors.torch import save_file

from conftest import REPO
from workflow_format import iter_workflows, load_json, node_defs, to_api


@pytest.fixture()
def models_dir(tmp_path, monkeypatch, tiny_clip):
    from t2l_core.clip.loading import save_clip

    folder = tmp_path / "text2live"
    save_clip(tiny_clip, folder / "tiny.safetensors", note="tiny")
    (folder / "empty.safetensors").write_bytes(b"")
    (folder / "cut.safetensors").write_bytes((folder / "tiny.safetensors").read_bytes()[:100])
    monkeypatch.setenv("T2L_MODELS_DIR", str(folder))
    return folder


# ------------------------------------------------------------------------------------------- Load CLIP
def test_validate_inputs_gives_one_message_per_problem(pack):
    """ComfyUI lists a message VALIDATE_INPUTS returns once per input it passed, so with several inputs passed
    the message is raised instead (listed once for the node); with one it is returned."""
    from t2l_pack.nodes.declarations import QueueCheckFailed

    LoadCLIP = pack.NODE_CLASS_MAPPINGS["T2L_LoadCLIP"]
    assert isinstance(LoadCLIP.VALIDATE_INPUTS(model="missing.safetensors"), str)
    with pytest.raises(QueueCheckFailed, match="missing.safetensors") as exc:
        LoadCLIP.VALIDATE_INPUTS(model="missing.safetensors", device="cpu", precision="fp32")
    assert str(exc.value).count("missing.safetensors") == 1


def test_load_clip_messages_speak_comfyui(pack, models_dir, monkeypatch):
    LoadCLIP = pack.NODE_CLASS_MAPPINGS["T2L_LoadCLIP"]
    for name, problem in (("missing.safetensors", "not found"), ("empty.safetensors", "empty (0 bytes)"),
                          ("cut.safetensors", "truncated")):
        msg = LoadCLIP.VALIDATE_INPUTS(name)
        assert isinstance(msg, str) and name in msg and problem in msg, msg
        assert "press R" in msg and "--clip" not in msg, msg
    assert "models/text2live" in LoadCLIP.VALIDATE_INPUTS("missing.safetensors")
    monkeypatch.setattr(pack.nodes.clip_nodes, "weights_obtainable", lambda a, t: False)
    msg = LoadCLIP.VALIDATE_INPUTS("ViT-B-32:openai")
    assert str(models_dir) in msg and "ViT-B-32.pt" in msg and "press R" in msg and "--clip" not in msg
    # the precision/device combination is refused when the node runs, once, naming the widgets
    with pytest.raises(ValueError, match="'precision'"):
        LoadCLIP().load("tiny.safetensors", "cpu", "fp16")


def test_damaged_weights_at_load_time_name_the_file(pack, models_dir):
    LoadCLIP = pack.NODE_CLASS_MAPPINGS["T2L_LoadCLIP"]
    with pytest.raises(ValueError) as exc:
        LoadCLIP().load("cut.safetensors", "cpu", "fp32")
    assert str(models_dir / "cut.safetensors") in str(exc.value) and "press R" in str(exc.value)


def test_cli_messages_name_the_file_and_the_flag(models_dir, tmp_path, capsys):
    from t2l_core.cli.main import main

    for name in ("empty.safetensors", "cut.safetensors", "missing.safetensors"):
        code = main(["relevancy", str(REPO / "assets" / "chelsea.jpg"), "--text", "cat", "--clip",
                     str(models_dir / name), "--device", "cpu", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2, err
        assert name in err and "--clip" in err, err
        assert "press R" not in err and "ComfyUI" not in err, err


def test_atlas_and_layer_file_errors_name_the_file(tmp_path):
    from t2l_core.edit.layer import EditLayer
    from t2l_core.nla.atlas_files import read_nla_header

    empty = tmp_path / "a.safetensors"
    empty.write_bytes(b"")
    other = tmp_path / "b.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    for f in (lambda p: read_nla_header(str(p)), EditLayer.load):
        for p in (empty, other, tmp_path / "none.safetensors"):
            with pytest.raises((ValueError, FileNotFoundError), match=str(p)):
                f(p)


# ------------------------------------------------------------------------------------------- workflows
@pytest.fixture(scope="module")
def defs(pack):
    return node_defs(pack.NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("name", ["video_edit", "atlas_chaining"])
def test_video_workflows_save_the_video_with_the_sources_frame_rate_and_sound(defs, name):
    """Load Video -> Fit Layered Atlas (video, for frame rate and sound) -> ... -> Atlas Render's VIDEO ->
    Save Video (mp4); the frames fitted are the same video's, resized."""
    api = to_api(load_json(REPO / "example_workflows" / f"{name}.json"), defs)
    (save,) = [v for v in api.values() if v["class_type"] == "SaveVideo"]
    render_id, slot = save["inputs"]["video"]
    assert api[render_id]["class_type"] == "T2L_AtlasRender" and slot == 1  # its 'video' output
    fit = api[api[render_id]["inputs"]["nla"][0]]
    assert fit["class_type"] == "T2L_NLAFit"
    loader = api[fit["inputs"]["video"][0]]
    assert loader["class_type"] == "LoadVideo" and loader["inputs"]["file"] == "input_video.mp4"  # not the masks'
    scale = api[fit["inputs"]["frames"][0]]
    assert scale["class_type"] == "ImageScale"
    comps = api[scale["inputs"]["image"][0]]
    assert comps["class_type"] == "GetVideoComponents" and api[comps["inputs"]["video"][0]] is loader
    assert not any(v["class_type"] == "SaveAnimatedWEBP" for v in api.values())


def _upstream(api: dict, nid: str) -> set:
    seen, todo = set(), [nid]
    while todo:
        n = todo.pop()
        for v in api[n]["inputs"].values():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] not in seen:
                seen.add(v[0])
                todo.append(v[0])
    return seen


def test_every_output_of_the_video_edit_waits_for_clip(defs):
    """ComfyUI runs the outputs whose inputs validate: if one output did not need Load CLIP, a missing CLIP
    would still start the atlas fit. Here every output depends on Load CLIP, so the prompt is refused."""
    api = to_api(load_json(REPO / "example_workflows" / "video_edit.json"), defs)
    clip = next(k for k, v in api.items() if v["class_type"] == "T2L_LoadCLIP")
    outputs = [k for k, v in api.items() if defs[v["class_type"]].output_node]
    assert len(outputs) >= 3
    for k in outputs:
        assert clip in _upstream(api, k), api[k]["class_type"]
    note = next(n for n in load_json(REPO / "example_workflows" / "video_edit.json")["nodes"] if n["type"] == "Note")
    assert "refuses the whole prompt" in note["widgets_values"][0]


def test_atlas_previews_show_colour_with_opacity(defs):
    for name in ("video_edit", "atlas_chaining"):
        api = to_api(load_json(REPO / "example_workflows" / f"{name}.json"), defs)
        previews = [v for v in api.values() if v["class_type"] == "PreviewImage"]
        assert previews and all(api[p["inputs"]["images"][0]]["class_type"] == "JoinImageWithAlpha"
                                for p in previews), name


def test_image_workflow_names_the_bundled_photo_and_saves_its_layer(defs):
    ui = load_json(REPO / "example_workflows" / "image_edit.json")
    api = to_api(ui, defs)
    load = next(v for v in api.values() if v["class_type"] == "LoadImage")
    assert (REPO / "assets" / load["inputs"]["image"]).is_file()
    note = next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]
    assert "assets/" + load["inputs"]["image"] in note
    save = next(v for v in api.values() if v["class_type"] == "T2L_SaveEditLayer")
    assert api[save["inputs"]["edit_layer"][0]]["class_type"] == "T2L_TrainEditLayer"


def test_templates_live_in_example_workflows_only():
    """ComfyUI lists the JSON files of every folder of these names as templates (0.3.64) and prefers
    example_workflows; workflows/ only points there, without a JSON, so nothing is listed twice."""
    names = ["example_workflows", "example", "examples", "workflow", "workflows"]
    assert [n for n in names if list((REPO / n).glob("*.json"))] == ["example_workflows"]
    assert [p.name for p in (REPO / "workflows").iterdir()] == ["README.md"]
    assert "example_workflows/" in (REPO / "workflows" / "README.md").read_text()
    for p in iter_workflows(REPO / "example_workflows"):
        assert p.with_suffix(".jpg").is_file(), p


# ------------------------------------------------------------------------------------------ seed control
def test_training_seeds_keep_their_control_widget(defs):
    """The positional widgets_values of saved workflows keep their control slot after 'seed'."""
    for node_id in ("T2L_TrainEditLayer", "T2L_NLAFit"):
        kinds = [(k, i.name) for k, i in defs[node_id].widget_slots()]
        assert ("control", "seed") in kinds, node_id


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js to run the frontend extension")
def test_new_text2live_nodes_start_with_a_fixed_seed(pack, tmp_path):
    assert pack.WEB_DIRECTORY == "./web"
    src = (REPO / "web" / "fixed_seeds.js").read_text()
    stub = src.replace('import { app } from "../../scripts/app.js";',
                       "const app = { registerExtension(e) { globalThis.ext = e; } };")
    assert stub != src
    script = tmp_path / "run.mjs"
    script.write_text(stub + """
const mk = (cls) => ({ comfyClass: cls, widgets: [{ name: "seed", value: 5 },
                                                 { name: "control_after_generate", value: "randomize" }] });
const ours = mk("T2L_TrainEditLayer"), fit = mk("T2L_NLAFit"), core = mk("KSampler");
for (const n of [ours, fit, core]) globalThis.ext.nodeCreated(n);
console.log(JSON.stringify([ours, fit, core].map((n) => n.widgets.map((w) => w.value))));
""")
    r = subprocess.run(["node", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [[5, "fixed"], [5, "fixed"], [5, "randomize"]]


def test_damaged_flow_cache_is_computed_again(tmp_path):
    from t2l_core.nla.optical_flow import VideoFlow, load_flow, save_flow

    flow = VideoFlow(torch.randn(1, 2, 4, 5).half(), torch.randn(1, 2, 4, 5).half(), torch.rand(1, 4, 5) > 0.5,
                     torch.rand(1, 4, 5) > 0.5, estimator="lk")
    path = tmp_path / "flow.safetensors"
    save_flow(flow, str(path), key="k")
    back = load_flow(str(path), key="k")
    assert torch.equal(back.fwd, flow.fwd) and torch.equal(back.bwd_ok, flow.bwd_ok)
    assert not (tmp_path / "flow.safetensors.part").exists()
    path.write_bytes(path.read_bytes()[:50])
    assert load_flow(str(path), key="k") is None
