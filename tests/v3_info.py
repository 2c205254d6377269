"""What ``/object_info`` holds for our nodes: the entry ComfyUI 0.3.64 makes of a classic class (server.py's
``node_info``, copied), and the entry of the V3 node made from it (nodes/v3_schema.py), which adds only the fields
ComfyUI gives every V3 node."""

from __future__ import annotations

import json

#: the fields ComfyUI 0.3.64 adds to the /object_info entry of every V3 node (a classic one has them only when set)
V3_FIELDS = {"deprecated": False, "experimental": False, "api_node": False}
#: the hidden inputs ComfyUI 0.3.64 gives every V3 output node (passed on ``cls.hidden``, never to ``execute``)
V3_OUTPUT_NODE_HIDDEN = {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}


def classic_info(node_id: str, cls: type, display_names: dict) -> dict:
    """server.py's ``node_info`` (ComfyUI 0.3.64) of a classic class, as JSON (without python_module)."""
    info = {"input": cls.INPUT_TYPES(), "input_order": {k: list(v) for k, v in cls.INPUT_TYPES().items()},
            "output": cls.RETURN_TYPES,
            "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
            "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), "name": node_id,
            "display_name": display_names.get(node_id, node_id),
            "description": getattr(cls, "DESCRIPTION", ""), "category": getattr(cls, "CATEGORY", "sd"),
            "output_node": getattr(cls, "OUTPUT_NODE", False) is True}
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
    return json.loads(json.dumps(info))


def v3_expected(classic: dict) -> dict:
    """The /object_info entry of the V3 node made from a classic class whose entry is ``classic``."""
    expected = {**classic, **V3_FIELDS}
    if classic["output_node"]:
        expected["input"] = {**classic["input"], "hidden": V3_OUTPUT_NODE_HIDDEN}
        expected["input_order"] = {**classic["input_order"], "hidden": list(V3_OUTPUT_NODE_HIDDEN)}
    return expected
