"""Every shipped workflow (example_workflows/*.json, UI format 0.4) is valid against OUR node definitions and the
core nodes it uses, without ComfyUI: node types, positional widgets_values (seed controls included), ranges,
link types. The API-format twins in tests/workflows_api/ are what the converter makes of them."""

from __future__ import annotations

import copy

import pytest

from conftest import REPO
from workflow_format import (CONTROL_VALUES, check_api, check_workflow, iter_workflows, load_json, node_defs,
                             offered_models, to_api, widget_inputs)

WORKFLOWS = list(iter_workflows(REPO / "example_workflows"))
NAMES = [p.stem for p in WORKFLOWS]
EXPECTED = {"image_edit", "video_edit", "atlas_chaining"}


@pytest.fixture(scope="module")
def defs(pack):
    return node_defs(pack.NODE_CLASS_MAPPINGS)


def test_the_example_workflows_are_shipped_with_thumbnails():
    assert EXPECTED <= set(NAMES)
    for p in WORKFLOWS:
        assert p.with_suffix(".jpg").is_file(), f"{p.name} has no thumbnail {p.with_suffix('.jpg').name}"
        assert (REPO / "tests" / "workflows_api" / p.name).is_file(), f"{p.name} has no API twin"


@pytest.mark.parametrize("path", WORKFLOWS, ids=NAMES)
def test_shipped_workflow_is_valid(path, defs):
    ui = load_json(path)
    assert check_workflow(ui, defs) == []
    types = {n["type"] for n in ui["nodes"]}
    assert any(t.startswith("T2L_") for t in types)
    assert "Note" in types, "each example says in a Note which files and weights to provide"


@pytest.mark.parametrize("path", WORKFLOWS, ids=NAMES)
def test_api_twin_matches_the_converter_and_is_valid(path, defs):
    ui = load_json(path)
    api = to_api(ui, defs)
    twin = load_json(REPO / "tests" / "workflows_api" / path.name)
    assert api == twin, "regenerate the twin: python tests/workflow_builder.py"
    assert check_api(api, defs, [m["name"] for m in offered_models(ui)]) == []
    assert all(n["class_type"] not in ("Note", "MarkdownNote") for n in api.values())


def test_seeds_are_fixed_and_followed_by_their_control_value(defs):
    seen = 0
    for path in WORKFLOWS:
        for n in load_json(path)["nodes"]:
            d = defs.get(n["type"])
            if d is None:
                continue
            for i, (kind, inp) in enumerate(d.widget_slots()):
                if kind == "control":
                    assert n["widgets_values"][i] == "fixed"
                    assert isinstance(n["widgets_values"][i - 1], int)
                    seen += 1
    assert seen >= 3


def test_converter_maps_widgets_by_name_and_links_by_id(defs):
    ui = load_json(REPO / "example_workflows" / "image_edit.json")
    api = to_api(ui, defs)
    train = next(v for v in api.values() if v["class_type"] == "T2L_TrainEditLayer")
    assert train["inputs"]["seed"] == 42 and train["inputs"]["iterations"] == 1000
    assert "control_after_generate" not in train["inputs"] and "fixed" not in train["inputs"].values()
    load = next(k for k, v in api.items() if v["class_type"] == "LoadImage")
    assert api[load]["inputs"] == {"image": "chelsea.jpg"}  # upload widget value dropped
    assert train["inputs"]["image"] == [load, 0]


def test_muted_nodes_are_left_out(defs):
    ui = load_json(REPO / "example_workflows" / "atlas_chaining.json")
    api = to_api(ui, defs)
    muted = {str(n["id"]) for n in ui["nodes"] if n["mode"] == 2}
    assert muted and not muted & set(api)
    assert "KSampler" not in {v["class_type"] for v in api.values()}


# ------------------------------------------------------------- the check FAILS when something is out of place
def _node(ui, node_type):
    return next(n for n in ui["nodes"] if n["type"] == node_type)


def test_check_fails_when_widget_values_are_shifted(defs):
    ui = copy.deepcopy(load_json(REPO / "example_workflows" / "image_edit.json"))
    vals = _node(ui, "T2L_TrainEditLayer")["widgets_values"]
    i = vals.index("fixed")
    vals[i - 1], vals[i] = vals[i], vals[i - 1]  # seed and its control swapped
    errors = check_workflow(ui, defs)
    assert any("seed" in e and "integer" in e for e in errors), errors
    assert any("control" in e for e in errors), errors


def test_check_fails_when_a_widget_value_is_missing_or_inserted(defs):
    for change in ("drop", "insert"):
        ui = copy.deepcopy(load_json(REPO / "example_workflows" / "image_edit.json"))
        vals = _node(ui, "T2L_TrainEditLayer")["widgets_values"]
        if change == "drop":
            vals.pop(3)   # iterations gone: everything after it shifts left
        else:
            vals.insert(1, "extra")
        errors = check_workflow(ui, defs)
        assert any("widgets_values for" in e for e in errors), errors
        assert any("T2L_TrainEditLayer" in e and "widget '" in e for e in errors), errors
        with pytest.raises(ValueError):
            to_api(ui, defs)


def test_check_fails_on_out_of_range_bad_combo_and_random_seed(defs):
    ui = copy.deepcopy(load_json(REPO / "example_workflows" / "image_edit.json"))
    train = _node(ui, "T2L_TrainEditLayer")
    i = train["widgets_values"].index("fixed")
    train["widgets_values"][i - 2] = 5          # size (just before the seed) below its minimum, 129
    train["widgets_values"][i] = "randomize"    # shipped seeds must be fixed
    assert "randomize" in CONTROL_VALUES
    _node(ui, "T2L_LoadCLIP")["widgets_values"][2] = "fp8"  # precision not in the list
    errors = check_workflow(ui, defs)
    assert any("'size'" in e and "outside" in e for e in errors), errors
    assert any("must be 'fixed'" in e for e in errors), errors
    assert any("'precision'" in e and "not in" in e for e in errors), errors


def test_check_fails_on_wrong_link_type_and_unknown_node(defs):
    ui = copy.deepcopy(load_json(REPO / "example_workflows" / "image_edit.json"))
    train_id = _node(ui, "T2L_TrainEditLayer")["id"]
    link = next(l for l in ui["links"] if l[3] == train_id and l[5] == "MASK")
    link[2] = 1  # from the relevancy's heat map (IMAGE) output instead of its MASK
    ui["nodes"].append({"id": 99, "type": "SomeOtherPack_Node", "inputs": [], "outputs": [], "widgets_values": [],
                        "mode": 0})
    ui["last_node_id"] = 99
    errors = check_workflow(ui, defs)
    assert any(f"link {link[0]}" in e and "IMAGE" in e for e in errors), errors
    assert any("unknown node type" in e for e in errors), errors


def test_check_fails_on_unconnected_required_input(defs):
    ui = copy.deepcopy(load_json(REPO / "example_workflows" / "image_edit.json"))
    train = _node(ui, "T2L_TrainEditLayer")
    clip_in = next(s for s in train["inputs"] if s["name"] == "clip")
    lid = clip_in["link"]
    clip_in["link"] = None
    ui["links"] = [l for l in ui["links"] if l[0] != lid]
    for n in ui["nodes"]:
        for o in n["outputs"]:
            if o.get("links") and lid in o["links"]:
                o["links"].remove(lid)
    assert any("'clip' is not connected" in e for e in check_workflow(ui, defs))


def test_widget_names_follow_our_input_order(defs, pack):
    """The positional contract: our INPUT_TYPES order (required, then optional) decides widgets_values."""
    cls = pack.NODE_CLASS_MAPPINGS["T2L_TrainEditLayer"]
    spec = cls.INPUT_TYPES()
    names = [k for s in ("required", "optional") for k, v in spec.get(s, {}).items()
             if v[0] in ("INT", "FLOAT", "STRING", "BOOLEAN") or isinstance(v[0], list)]
    ui = load_json(REPO / "example_workflows" / "image_edit.json")
    assert list(widget_inputs(_node(ui, "T2L_TrainEditLayer"), defs["T2L_TrainEditLayer"])) == names


def test_frontend_resaved_form_is_accepted(defs):
    """ComfyUI's frontend re-saves every widget as an input entry with 'widget' (and LoadImage's upload button);
    such a file still passes and converts the same."""
    ui = copy.deepcopy(load_json(REPO / "example_workflows" / "image_edit.json"))
    before = to_api(ui, defs)
    for n in ui["nodes"]:
        d = defs.get(n["type"])
        if d is None:
            continue
        n["inputs"] += [{"name": w.name, "type": w.type, "widget": {"name": w.name}, "link": None} for w in d.widgets]
        if any(w.has_upload for w in d.widgets):
            n["inputs"].append({"name": "upload", "type": "IMAGEUPLOAD", "widget": {"name": "upload"}, "link": None})
    assert check_workflow(ui, defs) == []
    assert to_api(ui, defs) == before


# -------------------------------------------------------------------- model metadata (missing-model dialog)
def test_every_load_clip_offers_the_download_of_the_file_it_names(defs):
    """ComfyUI's frontend (1.27) offers a node's properties.models entry whose name is one of the node's widget
    values, when the file is not in the named model folder; it downloads only from Hugging Face or Civitai, and
    only .safetensors/.sft files. Each Load CLIP of the templates names the real OpenAI ViT-B/32 CLIP under the
    file name Load CLIP looks for for ViT-B-32:openai, in its own model folder."""
    from t2l_core.clip.search import expected_files, file_name_architecture

    seen = 0
    for path in WORKFLOWS:
        for n in load_json(path)["nodes"]:
            if n["type"] != "T2L_LoadCLIP":
                assert "models" not in n.get("properties", {}), (path.name, n["type"])
                continue
            seen += 1
            (model,) = n["properties"]["models"]
            assert set(model) == {"name", "url", "directory"}, model
            widgets = widget_inputs(n, defs["T2L_LoadCLIP"])
            assert model["name"] == widgets["model"], path.name  # the frontend matches the widget value
            assert model["directory"] == "text2live"  # the folder Load CLIP lists (models/text2live)
            assert model["name"] == expected_files("ViT-B-32", "openai")[0]  # found for ViT-B-32:openai too
            assert file_name_architecture(model["name"]) == "ViT-B-32-quickgelu"  # the bare file loads as is
            assert model["url"] == ("https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/"
                                    "open_clip_model.safetensors")
            assert model["url"].startswith(("https://huggingface.co/", "https://civitai.com/"))
            assert model["name"].endswith((".safetensors", ".sft"))
    assert seen == 2  # image_edit and video_edit


def test_the_model_url_is_where_open_clip_gets_the_papers_clip():
    """The URL is open_clip's own Hugging Face source of ViT-B-32:openai (its hf_hub repo and safetensors name)."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME

    from t2l_core.clip.search import _pretrained_cfg
    from workflow_builder import CLIP_MODEL

    hub = _pretrained_cfg("ViT-B-32", "openai")["hf_hub"].strip("/")
    assert CLIP_MODEL["url"] == f"https://huggingface.co/{hub}/resolve/main/{HF_SAFE_WEIGHTS_NAME}"


def test_a_workflow_saved_before_outputs_were_appended_still_checks(defs):
    """Outputs are only appended (Atlas Render's video): a workflow listing fewer outputs is still valid."""
    ui = copy.deepcopy(load_json(REPO / "example_workflows" / "atlas_chaining.json"))
    render = _node(ui, "T2L_AtlasRender")
    assert [o["name"] for o in render["outputs"]] == ["frames", "video"]
    video_links = render["outputs"][1]["links"] or []
    render["outputs"] = render["outputs"][:1]
    ui["links"] = [l for l in ui["links"] if l[0] not in video_links]
    ui["nodes"].remove(_node(ui, "SaveVideo"))
    assert check_workflow(ui, defs) == []
