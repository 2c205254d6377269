"""Every shipped workflow (workflows/*.json, UI format 0.4) is valid against OUR node definitions and the
core nodes it uses, without ComfyUI: node types, positional widgets_values (seed controls included), ranges,
link types. The API-format twins in tests/workflows_api/ are what the converter makes of them."""

from __future__ import annotations

import copy

import pytest

from conftest import REPO
from workflow_format import (CONTROL_VALUES, check_api, check_workflow, iter_workflows, load_json, node_defs,
                             to_api, widget_inputs)

WORKFLOWS = list(iter_workflows(REPO / "workflows"))
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
    assert check_api(api, defs) == []
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
    ui = load_json(REPO / "workflows" / "image_edit.json")
    api = to_api(ui, defs)
    train = next(v for v in api.values() if v["class_type"] == "T2L_TrainEditLayer")
    assert train["inputs"]["seed"] == 42 and train["inputs"]["iterations"] == 1000
    assert "control_after_generate" not in train["inputs"] and "fixed" not in train["inputs"].values()
    load = next(k for k, v in api.items() if v["class_type"] == "LoadImage")
    assert api[load]["inputs"] == {"image": "chelsea.jpg"}  # upload widget value dropped
    assert train["inputs"]["image"] == [load, 0]


def test_muted_nodes_are_left_out(defs):
    ui = load_json(REPO / "workflows" / "atlas_chaining.json")
    api = to_api(ui, defs)
    muted = {str(n["id"]) for n in ui["nodes"] if n["mode"] == 2}
    assert muted and not muted & set(api)
    assert "KSampler" not in {v["class_type"] for v in api.values()}


# ------------------------------------------------------------- the check FAILS when something is out of place
def _node(ui, node_type):
    return next(n for n in ui["nodes"] if n["type"] == node_type)


def test_check_fails_when_widget_values_are_shifted(defs):
    ui = copy.deepcopy(load_json(REPO / "workflows" / "image_edit.json"))
    vals = _node(ui, "T2L_TrainEditLayer")["widgets_values"]
    i = vals.index("fixed")
    vals[i - 1], vals[i] = vals[i], vals[i - 1]  # seed and its control swapped
    errors = check_workflow(ui, defs)
    assert any("seed" in e and "integer" in e for e in errors), errors
    assert any("control" in e for e in errors), errors


def test_check_fails_when_a_widget_value_is_missing_or_inserted(defs):
    for change in ("drop", "insert"):
        ui = copy.deepcopy(load_json(REPO / "workflows" / "image_edit.json"))
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
    ui = copy.deepcopy(load_json(REPO / "workflows" / "image_edit.json"))
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
    ui = copy.deepcopy(load_json(REPO / "workflows" / "image_edit.json"))
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
    ui = copy.deepcopy(load_json(REPO / "workflows" / "image_edit.json"))
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
    ui = load_json(REPO / "workflows" / "image_edit.json")
    assert list(widget_inputs(_node(ui, "T2L_TrainEditLayer"), defs["T2L_TrainEditLayer"])) == names


def test_frontend_resaved_form_is_accepted(defs):
    """ComfyUI's frontend re-saves every widget as an input entry with 'widget' (and LoadImage's upload button);
    such a file still passes and converts the same."""
    ui = copy.deepcopy(load_json(REPO / "workflows" / "image_edit.json"))
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
