"""The workflows the previous node version shipped (tests/workflows_previous, saved before the nodes moved to
ComfyUI's V3 schema and before the templates moved to example_workflows/) still read against today's nodes;
the end-to-end tests run them in a real ComfyUI."""

from __future__ import annotations

from pathlib import Path

import pytest

from workflow_format import check_api, load_json, node_defs, offered_models, to_api

PREVIOUS = Path(__file__).resolve().parents[1] / "workflows_previous"
EVERY_WIDGET = PREVIOUS / "image_edit_every_widget_changed.json"


@pytest.fixture(scope="module")
def defs(pack):
    return node_defs(pack.NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("name", ["image_edit", "video_edit", "atlas_chaining", EVERY_WIDGET.stem])
def test_a_previous_workflow_converts_with_todays_node_ids_inputs_and_widgets(defs, name):
    ui = load_json(PREVIOUS / f"{name}.json")
    prompt = to_api(ui, defs, saved_before=True)
    offered = [m["name"] for m in offered_models(ui)]
    # the CLIP file of the every-widget workflow is the test's tiny CLIP, in models/text2live only on the server
    problems = [p for p in check_api(prompt, defs, offered) if "tiny-clip.safetensors" not in p]
    assert not problems


def test_every_widget_of_the_changed_workflow_differs_from_its_default(defs):
    ui = load_json(EVERY_WIDGET)
    seen = 0
    for node in ui["nodes"]:
        if node["type"] not in defs:
            continue
        slots = defs[node["type"]].widget_slots()[:len(node.get("widgets_values", []))]
        for (kind, inp), value in zip(slots, node["widgets_values"]):
            if kind == "value" and inp.options is None and inp.type == "COMBO":
                continue  # a file name (Load Image's photo)
            default = inp.opts.get("default") if kind == "value" else "fixed"
            assert value != default, f"{node['type']}.{inp.name} ({kind}) is at its default {default!r}"
            seen += 1
    assert seen >= 30
