"""The nodes in ComfyUI's current node API (``comfy_api.latest``: ``io.ComfyNode`` / ``define_schema``).

Each classic node class stays the one declaration (its INPUT_TYPES built from the settings' own defaults,
limits and help) and the implementation; :func:`v3_node` makes from it an ``io.ComfyNode`` with the same node
id, the same inputs (names, order, required/optional, widget options) and outputs, whose ``execute`` runs the
classic method, whose ``validate_inputs`` is the classic VALIDATE_INPUTS (the same rules and messages, the
same parameters, so ComfyUI passes and skips the same inputs) and whose ``fingerprint_inputs`` is the classic
IS_CHANGED. Saved workflows (node ids, input names, widget values) therefore load and run unchanged.

Importing this module needs ComfyUI's ``comfy_api.latest`` (ComfyUI >= 0.3.64); the pack's ``__init__`` falls
back to the classic classes where it is missing.
"""

from __future__ import annotations

import inspect
from typing import Any

from comfy_api.latest import ComfyExtension, io

#: our input types that ComfyUI's API names; any other (T2L_CLIP, T2L_NLA, T2L_EDIT_LAYER) is io.Custom
_BUILTIN_TYPES = {"IMAGE": io.Image, "MASK": io.Mask, "VIDEO": io.Video, "AUDIO": io.Audio}
#: classic widget option -> keyword of the V3 input class (options not listed go to ``extra_dict`` as they are)
_WIDGET_KEYWORDS = {
    "INT": {"default": "default", "min": "min", "max": "max", "step": "step",
            "control_after_generate": "control_after_generate", "forceInput": "force_input"},
    "FLOAT": {"default": "default", "min": "min", "max": "max", "step": "step", "round": "round",
              "forceInput": "force_input"},
    "STRING": {"default": "default", "multiline": "multiline", "placeholder": "placeholder",
               "dynamicPrompts": "dynamic_prompts", "forceInput": "force_input"},
    "BOOLEAN": {"default": "default", "label_on": "label_on", "label_off": "label_off",
                "forceInput": "force_input"},
    "COMBO": {"default": "default", "control_after_generate": "control_after_generate"},
}
_WIDGET_CLASSES = {"INT": io.Int, "FLOAT": io.Float, "STRING": io.String, "BOOLEAN": io.Boolean, "COMBO": io.Combo}
_COMMON_KEYWORDS = {"tooltip": "tooltip", "lazy": "lazy", "display_name": "display_name"}


class ListedCombo(io.Combo.Input):
    """A combo declared as the classic API declares it: its type is the list of options. ComfyUI 0.3.64 checks a
    value against the options at queue time only for such a list; an ``io.Combo.Input`` is declared as type
    "COMBO" with ``options``, which its prompt validation does not check (a wrong value, e.g. of a workflow
    edited by hand, would only be refused when the node runs)."""

    def get_io_type(self):
        return list(self.options)

    def as_dict(self):
        declared = super().as_dict()
        for key in ("options", "multiselect"):
            declared.pop(key, None)
        return declared


def _type_class(kind: str):
    """The V3 type of a classic type name."""
    if kind in _WIDGET_CLASSES:
        return _WIDGET_CLASSES[kind]
    return _BUILTIN_TYPES.get(kind) or io.Custom(kind)


def v3_input(name: str, spec: tuple, optional: bool) -> io.Input:
    """The V3 input of one classic INPUT_TYPES entry ``name: spec`` (a combo is a list of options)."""
    kind = spec[0]
    options = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
    keywords = {"optional": optional}
    if isinstance(kind, (list, tuple)):
        keywords["options"] = list(kind)
        kind = "COMBO"
    if kind == "STRING":
        keywords["multiline"] = None  # the V3 default (False) would add an option the classic one lacks
    table = {**_COMMON_KEYWORDS, **_WIDGET_KEYWORDS.get(kind, {})}
    for option in [o for o in options if o in table]:
        keywords[table[option]] = options.pop(option)
    made = (ListedCombo if kind == "COMBO" else _type_class(kind).Input)(name, **keywords)
    made.extra_dict.update(options)  # anything else the classic declaration states, passed on as it is
    return made


def v3_inputs(input_types: dict) -> list[io.Input]:
    """Every input of a classic INPUT_TYPES, required first, in declaration order."""
    return [v3_input(name, spec, optional=group == "optional")
            for group in ("required", "optional") for name, spec in input_types.get(group, {}).items()]


def v3_outputs(node_cls: type) -> list[io.Output]:
    """The outputs of a classic node class: type, name and tooltip of each."""
    names = getattr(node_cls, "RETURN_NAMES", node_cls.RETURN_TYPES)
    tooltips = getattr(node_cls, "OUTPUT_TOOLTIPS", (None,) * len(node_cls.RETURN_TYPES))
    return [_type_class(kind).Output(display_name=name, tooltip=tip)  # ids: ComfyUI numbers them
            for kind, name, tip in zip(node_cls.RETURN_TYPES, names, tooltips)]


def v3_schema(node_cls: type) -> io.Schema:
    """The V3 schema of a classic node class."""
    return io.Schema(
        node_id=node_cls.NODE_ID,
        display_name=node_cls.DISPLAY_NAME,
        category=node_cls.CATEGORY,
        description=getattr(node_cls, "DESCRIPTION", ""),
        inputs=v3_inputs(node_cls.INPUT_TYPES()),
        outputs=v3_outputs(node_cls),
        is_output_node=bool(getattr(node_cls, "OUTPUT_NODE", False)),
    )


def node_output(returned: Any) -> io.NodeOutput:
    """A classic method's return (a tuple, or ``{"ui": ..., "result": ...}``) as a V3 NodeOutput."""
    if isinstance(returned, dict):
        return io.NodeOutput(*returned.get("result", ()), ui=returned.get("ui"))
    return io.NodeOutput(*returned)


def _validation(classic: type):
    """``validate_inputs`` running the classic VALIDATE_INPUTS, with its parameters (ComfyUI passes exactly
    the inputs named there and leaves their limits to it, as for the classic class)."""

    def validate_inputs(cls, **received):
        return classic.VALIDATE_INPUTS(**received)

    params = list(inspect.signature(classic.VALIDATE_INPUTS).parameters.values())
    validate_inputs.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + params)
    validate_inputs.__doc__ = classic.VALIDATE_INPUTS.__doc__
    return classmethod(validate_inputs)


def v3_node(classic: type) -> type:
    """The ``io.ComfyNode`` of a classic node class (which stays the declaration and the implementation)."""

    def define_schema(cls):
        return v3_schema(classic)

    def execute(cls, **inputs):
        return node_output(getattr(classic(), classic.FUNCTION)(**inputs))

    members = {"__doc__": classic.__doc__, "__module__": classic.__module__, "CLASSIC": classic,
               "define_schema": classmethod(define_schema), "execute": classmethod(execute)}
    if hasattr(classic, "VALIDATE_INPUTS"):
        members["validate_inputs"] = _validation(classic)
    if hasattr(classic, "IS_CHANGED"):
        members["fingerprint_inputs"] = classmethod(lambda cls, **inputs: classic.IS_CHANGED(**inputs))
    return type(classic.__name__, (io.ComfyNode,), members)


def v3_nodes(classes) -> list[type]:
    """The V3 node of each classic class, schemas checked (ComfyUI's own validation of ids)."""
    nodes = [v3_node(c) for c in classes]
    for node in nodes:
        node.GET_SCHEMA()
    return nodes


class Text2LiveExtension(ComfyExtension):
    """The pack as a V3 extension: ComfyUI reads its node list from :func:`comfy_entrypoint`."""

    def __init__(self, nodes: list[type]):
        self.nodes = nodes

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(self.nodes)
