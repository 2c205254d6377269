"""The V3 nodes (ComfyUI's ``comfy_api.latest``) declare exactly what the classic classes declare.

Runs with ComfyUI's Python in its checkout (opt-in, like the end-to-end tests):

    T2L_COMFYUI_DIR=/path/to/ComfyUI [T2L_COMFYUI_PYTHON=/path/to/venv/bin/python] \\
        python -m pytest tests/nodes/test_v3_schema.py -q

The pack is imported the way ComfyUI's loader imports it; each V3 node's ``/object_info`` entry
(``GET_NODE_INFO_V1``) is compared with the entry ComfyUI 0.3.64 makes of the classic class (server.py's
``node_info``, copied below), which differs only by the fields every V3 node reports (deprecated, experimental,
api_node: False); ``validate_inputs`` has the classic VALIDATE_INPUTS's parameters and answers, and
``fingerprint_inputs`` is the classic IS_CHANGED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from v3_info import v3_expected

COMFY_DIR = os.environ.get("T2L_COMFYUI_DIR")
if not COMFY_DIR:
    pytest.skip("set T2L_COMFYUI_DIR to a ComfyUI checkout to compare the V3 schemas", allow_module_level=True)
COMFY_PYTHON = os.environ.get("T2L_COMFYUI_PYTHON", sys.executable)

SCRIPT = r'''
import asyncio, importlib.util, inspect, json, sys
repo = sys.argv[1]
sys.path.insert(0, ".")
from comfy_api.internal import first_real_override
from comfy_api.latest import ComfyExtension, io

sys.path.insert(0, repo + "/tests")
from v3_info import classic_info

spec = importlib.util.spec_from_file_location("custom_nodes.comfyui-text2live", repo + "/__init__.py",
                                              submodule_search_locations=[repo])
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)


extension = asyncio.run(pack.comfy_entrypoint())
v3 = asyncio.run(extension.get_node_list())
out = {"classic_exported": hasattr(pack, "NODE_CLASS_MAPPINGS"), "extension": isinstance(extension, ComfyExtension),
       "v3": {}, "classic": {}, "checks": {}}
for node in v3:
    schema = node.GET_SCHEMA()
    classic = pack.nodes.NODE_CLASS_MAPPINGS[schema.node_id]
    out["v3"][schema.node_id] = json.loads(json.dumps(node.GET_NODE_INFO_V1()))
    out["classic"][schema.node_id] = classic_info(schema.node_id, classic, pack.nodes.NODE_DISPLAY_NAME_MAPPINGS)
    validate = first_real_override(node, "validate_inputs")
    fingerprint = first_real_override(node, "fingerprint_inputs")
    out["checks"][schema.node_id] = {
        "is_v3": issubclass(node, io.ComfyNode),
        "validate": None if validate is None else inspect.getfullargspec(validate).args,
        "classic_validate": (inspect.getfullargspec(classic.VALIDATE_INPUTS).args
                             if hasattr(classic, "VALIDATE_INPUTS") else None),
        "fingerprint": fingerprint is not None, "classic_is_changed": hasattr(classic, "IS_CHANGED"),
    }
# the same answers at queue time: a bad colour of the Composite, as VALIDATE_INPUTS gives it
composite = next(n for n in v3 if n.GET_SCHEMA().node_id == "T2L_Composite")
classic = pack.nodes.NODE_CLASS_MAPPINGS["T2L_Composite"]
out["answers"] = [str(composite.validate_inputs(fill_color="blue")), str(classic.VALIDATE_INPUTS(fill_color="blue")),
                  composite.validate_inputs(fill_color="#00B140"), classic.VALIDATE_INPUTS(fill_color="#00B140")]
print("RESULT " + json.dumps(out, default=str))
'''


@pytest.fixture(scope="module")
def declared(tmp_path_factory):
    script = tmp_path_factory.mktemp("v3") / "declared.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([COMFY_PYTHON, str(script), str(REPO)], cwd=COMFY_DIR, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_comfyui_gets_the_v3_extension_and_not_the_classic_mappings(declared, pack):
    """ComfyUI's loader reads NODE_CLASS_MAPPINGS first and then ignores comfy_entrypoint: with comfy_api.latest
    present the pack exports only the extension, which lists every node."""
    assert declared["extension"] and not declared["classic_exported"]
    assert sorted(declared["v3"]) == sorted(pack.NODE_CLASS_MAPPINGS)
    assert all(c["is_v3"] for c in declared["checks"].values())


def test_every_v3_schema_declares_what_the_classic_class_declares(declared):
    """Same node id, display name, category, description, inputs (names, order, required/optional, types,
    defaults, limits, steps, tooltips, combos, multiline, control_after_generate), outputs and output node."""
    for node_id, classic in declared["classic"].items():
        v3 = dict(declared["v3"][node_id])
        v3.pop("python_module")
        assert v3 == v3_expected(classic), node_id


def test_queue_checks_and_change_signatures_are_the_classic_ones(declared):
    for node_id, c in declared["checks"].items():
        assert c["validate"] == c["classic_validate"], node_id  # the same inputs reach it, the same skip ComfyUI's checks
        assert c["fingerprint"] == c["classic_is_changed"], node_id
    bad_v3, bad_classic, good_v3, good_classic = declared["answers"]
    assert bad_v3 == bad_classic and "fill_color" in bad_v3
    assert good_v3 is True and good_classic is True


FALLBACK_SCRIPT = r'''
import importlib.util, sys
repo = sys.argv[1]
sys.path.insert(0, ".")
from comfy_api.latest import io
del io.Video  # a ComfyUI whose node API lacks a type the nodes use
spec = importlib.util.spec_from_file_location("custom_nodes.comfyui-text2live", repo + "/__init__.py",
                                              submodule_search_locations=[repo])
pack = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = pack
spec.loader.exec_module(pack)
print("RESULT", hasattr(pack, "comfy_entrypoint"), sorted(pack.NODE_CLASS_MAPPINGS) == sorted(pack.nodes.NODE_CLASS_MAPPINGS))
'''


def test_a_comfyui_whose_node_api_lacks_a_part_gets_the_classic_nodes(tmp_path):
    script = tmp_path / "fallback.py"
    script.write_text(FALLBACK_SCRIPT)
    proc = subprocess.run([COMFY_PYTHON, str(script), str(REPO)], cwd=COMFY_DIR, capture_output=True, text=True,
                          timeout=300)
    assert "RESULT False True" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "the V3 node schema failed, classic nodes load" in proc.stderr
