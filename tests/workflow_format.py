"""ComfyUI workflow JSON without ComfyUI: node definitions, a checker for UI-format (version 0.4) workflows and
a UI -> API ("prompt") converter.

Node definitions come from our pack's classes (``INPUT_TYPES`` / ``RETURN_TYPES``) and, for the few core nodes
our example workflows use, from ``CORE_NODES`` below (copied by hand from ``/object_info`` of ComfyUI 0.3.64,
frontend 1.27.10). Widget rules follow that frontend:

- a widget is an input of type INT, FLOAT, STRING, BOOLEAN or a combo (a list of options / "COMBO") that is
  not ``forceInput``; everything else is a socket;
- ``widgets_values`` holds one value per widget in input order (required, then optional), plus
  one extra control value ("fixed" | "increment" | "decrement" | "randomize") right after every INT/COMBO whose
  ``control_after_generate`` is truthy, and after an INT named ``seed``/``noise_seed`` unless
  ``control_after_generate`` is explicitly False; plus an upload widget value ("image") after a combo with
  ``image_upload``/``video_upload``;
- frontend-only nodes (Note, MarkdownNote, Reroute, PrimitiveNode) never reach the server;
- a node's ``properties.models`` (``[{"name", "url", "directory"}]``) is the model metadata the frontend offers
  to download when the file named in a widget is missing: a combo value equal to one of those names is valid
  (the file is not there yet, by design);
- outputs are only ever appended: a workflow saved before a node gained an output lists a prefix of them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4

# A combo whose options are files in one of ComfyUI's folders (input/, models/...): any non-empty name is
# accepted by the checker because the list depends on the user's installation.
FILES = "__FILES__"

_INT_SCALE = {"default": 512, "min": 0, "max": 16384, "step": 1}
_SCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]

#: Core nodes used by our workflows, as ComfyUI 0.3.64 defines them (input order = dict order).
CORE_NODES: dict[str, dict] = {
    "LoadImage": {"input": {"required": {"image": (FILES, {"image_upload": True})}},
                  "output": ("IMAGE", "MASK"), "output_node": False},
    "LoadImageMask": {"input": {"required": {"image": (FILES, {"image_upload": True}),
                                             "channel": (["alpha", "red", "green", "blue"], {})}},
                      "output": ("MASK",), "output_node": False},
    "SaveImage": {"input": {"required": {"images": ("IMAGE", {}), "filename_prefix": ("STRING", {"default": "ComfyUI"})}},
                  "output": (), "output_node": True},
    "PreviewImage": {"input": {"required": {"images": ("IMAGE", {})}}, "output": (), "output_node": True},
    "ImageScale": {"input": {"required": {
        "image": ("IMAGE", {}), "upscale_method": (_SCALE_METHODS, {}), "width": ("INT", dict(_INT_SCALE)),
        "height": ("INT", dict(_INT_SCALE)), "crop": (["disabled", "center"], {})}},
        "output": ("IMAGE",), "output_node": False},
    "ImageBlur": {"input": {"required": {
        "image": ("IMAGE", {}), "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
        "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1})}},
        "output": ("IMAGE",), "output_node": False},
    "ImageSharpen": {"input": {"required": {
        "image": ("IMAGE", {}), "sharpen_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
        "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.01}),
        "alpha": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0, "step": 0.01})}},
        "output": ("IMAGE",), "output_node": False},
    "ImageCompositeMasked": {"input": {
        "required": {"destination": ("IMAGE", {}), "source": ("IMAGE", {}),
                     "x": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1}),
                     "y": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1}),
                     "resize_source": ("BOOLEAN", {"default": False})},
        "optional": {"mask": ("MASK", {})}},
        "output": ("IMAGE",), "output_node": False},
    "MaskToImage": {"input": {"required": {"mask": ("MASK", {})}}, "output": ("IMAGE",), "output_node": False},
    "ImageToMask": {"input": {"required": {"image": ("IMAGE", {}), "channel": (["red", "green", "blue", "alpha"], {})}},
                    "output": ("MASK",), "output_node": False},
    "InvertMask": {"input": {"required": {"mask": ("MASK", {})}}, "output": ("MASK",), "output_node": False},
    "JoinImageWithAlpha": {"input": {"required": {"image": ("IMAGE", {}), "alpha": ("MASK", {})}},
                           "output": ("IMAGE",), "output_node": False},
    "ThresholdMask": {"input": {"required": {"mask": ("MASK", {}),
                                             "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01})}},
                      "output": ("MASK",), "output_node": False},
    "MaskComposite": {"input": {"required": {
        "destination": ("MASK", {}), "source": ("MASK", {}),
        "x": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1}),
        "y": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 1}),
        "operation": (["multiply", "add", "subtract", "and", "or", "xor"], {})}},
        "output": ("MASK",), "output_node": False},
    "LoadVideo": {"input": {"required": {"file": (FILES, {"video_upload": True})}},
                  "output": ("VIDEO",), "output_node": False},
    "GetVideoComponents": {"input": {"required": {"video": ("VIDEO", {})}},
                           "output": ("IMAGE", "AUDIO", "FLOAT"), "output_name": ("images", "audio", "fps"),
                           "output_node": False},
    "SaveVideo": {"input": {"required": {
        "video": ("VIDEO", {}), "filename_prefix": ("STRING", {"default": "video/ComfyUI"}),
        "format": (["auto", "mp4"], {"default": "auto"}), "codec": (["auto", "h264"], {"default": "auto"})}},
        "output": (), "output_node": True},
    "SaveAnimatedWEBP": {"input": {"required": {
        "images": ("IMAGE", {}), "filename_prefix": ("STRING", {"default": "ComfyUI"}),
        "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}),
        "lossless": ("BOOLEAN", {"default": True}), "quality": ("INT", {"default": 80, "min": 0, "max": 100}),
        "method": (["default", "fastest", "slowest"], {})}},
        "output": (), "output_node": True},
    "SaveAnimatedPNG": {"input": {"required": {
        "images": ("IMAGE", {}), "filename_prefix": ("STRING", {"default": "ComfyUI"}),
        "fps": ("FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}),
        "compress_level": ("INT", {"default": 4, "min": 0, "max": 9})}},
        "output": (), "output_node": True},
    # The diffusion img2img group of atlas_chaining.json (shipped muted: it needs a checkpoint).
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": (FILES, {})}},
                               "output": ("MODEL", "CLIP", "VAE"), "output_node": False},
    "CLIPTextEncode": {"input": {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                                              "clip": ("CLIP", {})}},
                       "output": ("CONDITIONING",), "output_node": False},
    "VAEEncode": {"input": {"required": {"pixels": ("IMAGE", {}), "vae": ("VAE", {})}},
                  "output": ("LATENT",), "output_node": False},
    "VAEDecode": {"input": {"required": {"samples": ("LATENT", {}), "vae": ("VAE", {})}},
                  "output": ("IMAGE",), "output_node": False},
    "KSampler": {"input": {"required": {
        "model": ("MODEL", {}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
        "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
        "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
        "sampler_name": (FILES, {}), "scheduler": (FILES, {}),  # long lists that change between releases
        "positive": ("CONDITIONING", {}), "negative": ("CONDITIONING", {}), "latent_image": ("LATENT", {}),
        "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}},
        "output": ("LATENT",), "output_node": False},
}


# ----------------------------------------------------------------------------------------------- definitions
@dataclass
class InputDef:
    name: str
    type: str                      # "INT", "IMAGE", "COMBO", ...
    opts: dict
    optional: bool
    options: Optional[list] = None  # combo options (None = FILES: any name)

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.opts.get("forceInput")

    @property
    def has_control(self) -> bool:
        if not self.is_widget:
            return False
        cag = self.opts.get("control_after_generate")
        if self.type == "INT":
            return bool(cag) if cag is not None else self.name in ("seed", "noise_seed")
        return self.type == "COMBO" and bool(cag)

    @property
    def has_upload(self) -> bool:
        return self.type == "COMBO" and bool(self.opts.get("image_upload") or self.opts.get("video_upload"))


@dataclass
class NodeDef:
    type: str
    inputs: list[InputDef]
    outputs: tuple
    output_node: bool = False
    output_names: tuple = ()

    @property
    def widgets(self) -> list[InputDef]:
        return [i for i in self.inputs if i.is_widget]

    @property
    def sockets(self) -> list[InputDef]:
        return [i for i in self.inputs if not i.is_widget]

    def input(self, name: str) -> Optional[InputDef]:
        return next((i for i in self.inputs if i.name == name), None)

    def widget_slots(self) -> list[tuple[str, Optional[InputDef]]]:
        """One entry per ``widgets_values`` position: (kind, input) with kind "value", "control" or "upload"."""
        slots: list[tuple[str, Optional[InputDef]]] = []
        for w in self.widgets:
            slots.append(("value", w))
            if w.has_control:
                slots.append(("control", w))
            if w.has_upload:
                slots.append(("upload", w))
        return slots


def _parse_inputs(spec: dict) -> list[InputDef]:
    out = []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            t = entry[0]
            opts = dict(entry[1]) if len(entry) > 1 and entry[1] else {}
            if isinstance(t, (list, tuple)):
                out.append(InputDef(name, "COMBO", opts, section == "optional", list(t)))
            elif t == FILES:
                out.append(InputDef(name, "COMBO", opts, section == "optional", None))
            elif t == "COMBO":
                out.append(InputDef(name, "COMBO", opts, section == "optional", opts.get("options")))
            else:
                out.append(InputDef(name, str(t), opts, section == "optional"))
    return out


def node_def_from_class(node_type: str, cls: type) -> NodeDef:
    """A classic-API node class -> NodeDef."""
    return NodeDef(node_type, _parse_inputs(cls.INPUT_TYPES()), tuple(cls.RETURN_TYPES),
                   bool(getattr(cls, "OUTPUT_NODE", False)), tuple(getattr(cls, "RETURN_NAMES", ()) or ()))


def node_defs(node_class_mappings: dict) -> dict[str, NodeDef]:
    """Our pack's classes + the core table."""
    defs = {t: NodeDef(t, _parse_inputs(d["input"]), tuple(d["output"]), d["output_node"], tuple(d.get("output_name", ())))
            for t, d in CORE_NODES.items()}
    for node_type, cls in node_class_mappings.items():
        defs[node_type] = node_def_from_class(node_type, cls)
    return defs


# ---------------------------------------------------------------------------------------------- the checker
def _check_value(inp: InputDef, value: Any, offered: tuple = ()) -> Optional[str]:
    """What is wrong with a widget value; ``offered``: file names the workflow's model metadata offers to download."""
    t, o = inp.type, inp.opts
    if t == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expects an integer, got {value!r}"
        if "min" in o and value < o["min"] or "max" in o and value > o["max"]:
            return f"value {value} outside [{o.get('min')}, {o.get('max')}]"
    elif t == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expects a number, got {value!r}"
        if "min" in o and value < o["min"] or "max" in o and value > o["max"]:
            return f"value {value} outside [{o.get('min')}, {o.get('max')}]"
    elif t == "STRING":
        if not isinstance(value, str):
            return f"expects a string, got {value!r}"
    elif t == "BOOLEAN":
        if not isinstance(value, bool):
            return f"expects true/false, got {value!r}"
    elif t == "COMBO":
        if inp.options is None:
            if not isinstance(value, str) or not value:
                return f"expects a file name, got {value!r}"
        elif value not in inp.options and value not in offered:
            shown = inp.options[:6] + (["..."] if len(inp.options) > 6 else [])
            return f"value {value!r} not in {shown}"
    return None


def _links_by_id(ui: dict) -> dict[int, list]:
    return {link[0]: link for link in ui.get("links", [])}


def check_workflow(ui: dict, defs: dict[str, NodeDef], *, require_fixed_seeds: bool = True) -> list[str]:
    """All problems found in a UI-format workflow (empty list = valid)."""
    errors: list[str] = []
    if ui.get("version") != 0.4:
        errors.append(f"version must be 0.4, got {ui.get('version')!r}")
    for key in ("last_node_id", "last_link_id", "nodes", "links"):
        if key not in ui:
            errors.append(f"missing top-level key {key!r}")
    nodes = {}
    for n in ui.get("nodes", []):
        if n["id"] in nodes:
            errors.append(f"duplicate node id {n['id']}")
        nodes[n["id"]] = n
    links = _links_by_id(ui)
    if nodes and ui.get("last_node_id", 0) < max(nodes):
        errors.append("last_node_id is smaller than a node id")
    if links and ui.get("last_link_id", 0) < max(links):
        errors.append("last_link_id is smaller than a link id")

    for n in nodes.values():
        where = f"node {n['id']} ({n['type']})"
        if n["type"] in VIRTUAL_NODES:
            continue
        d = defs.get(n["type"])
        if d is None:
            errors.append(f"{where}: unknown node type (neither ours nor a known core node)")
            continue
        # widgets_values: positional, with control and upload extras
        values = n.get("widgets_values", [])
        offered = tuple(m.get("name") for m in (n.get("properties") or {}).get("models") or [] if isinstance(m, dict))
        slots = d.widget_slots()
        if not isinstance(values, list):
            errors.append(f"{where}: widgets_values must be a list")
            continue
        if len(values) != len(slots):
            names = [("control_after_generate" if k == "control" else "upload" if k == "upload" else i.name)
                     for k, i in slots]
            errors.append(f"{where}: {len(values)} widgets_values for {len(slots)} widgets {names}")
        for (kind, inp), value in zip(slots, values):
            if kind == "control":
                if value not in CONTROL_VALUES:
                    errors.append(f"{where}: control value after '{inp.name}' must be one of {CONTROL_VALUES}, got {value!r}")
                elif require_fixed_seeds and value != "fixed":
                    errors.append(f"{where}: '{inp.name}' control must be 'fixed' in shipped workflows, got {value!r}")
            elif kind == "upload":
                if value != "image":
                    errors.append(f"{where}: upload widget value must be 'image', got {value!r}")
            else:
                problem = _check_value(inp, value, offered)
                if problem:
                    errors.append(f"{where}: widget '{inp.name}' {problem}")
        # declared sockets
        for slot, s in enumerate(n.get("inputs", [])):
            inp = d.input(s.get("name", ""))
            if inp is None:
                if s.get("widget") and s.get("name") == "upload" and any(i.has_upload for i in d.inputs):
                    continue  # the frontend lists the upload button of LoadImage/LoadVideo as a widget input
                errors.append(f"{where}: input '{s.get('name')}' does not exist")
                continue
            if inp.is_widget and not s.get("widget"):
                errors.append(f"{where}: widget input '{inp.name}' listed as a socket without 'widget'")
            if s.get("type") not in (inp.type, "*") and not (inp.type == "COMBO" and s.get("widget")):
                errors.append(f"{where}: input '{inp.name}' declared as {s.get('type')} but is {inp.type}")
            link_id = s.get("link")
            if link_id is not None:
                link = links.get(link_id)
                if link is None:
                    errors.append(f"{where}: input '{inp.name}' refers to missing link {link_id}")
                elif link[3] != n["id"] or link[4] != slot:
                    errors.append(f"{where}: link {link_id} does not end at input '{inp.name}' (slot {slot})")
        if n.get("mode", 0) == MODE_ALWAYS:
            linked = {s["name"] for s in n.get("inputs", []) if s.get("link") is not None}
            for inp in d.sockets:
                if not inp.optional and inp.name not in linked:
                    errors.append(f"{where}: required input '{inp.name}' is not connected")
        # outputs
        outs = n.get("outputs", [])
        if len(outs) > len(d.outputs):  # fewer: saved before outputs were appended, which the frontend accepts
            errors.append(f"{where}: {len(outs)} outputs, the node has {len(d.outputs)}")
        for slot, (o, t) in enumerate(zip(outs, d.outputs)):
            if o.get("type") != t:
                errors.append(f"{where}: output {slot} declared {o.get('type')} but is {t}")
            for link_id in o.get("links") or []:
                link = links.get(link_id)
                if link is None or link[1] != n["id"] or link[2] != slot:
                    errors.append(f"{where}: output {slot} lists link {link_id} that does not start there")

    for link_id, (lid, src, src_slot, dst, dst_slot, ltype) in links.items():
        a, b = nodes.get(src), nodes.get(dst)
        if a is None or b is None:
            errors.append(f"link {lid}: missing node {src if a is None else dst}")
            continue
        da, db = defs.get(a["type"]), defs.get(b["type"])
        if da is None or db is None:
            continue
        if src_slot >= len(da.outputs):
            errors.append(f"link {lid}: {a['type']} has no output {src_slot}")
            continue
        if dst_slot >= len(b.get("inputs", [])):
            errors.append(f"link {lid}: {b['type']} has no input slot {dst_slot}")
            continue
        out_type = da.outputs[src_slot]
        inp = db.input(b["inputs"][dst_slot]["name"])
        in_type = inp.type if inp else None
        if ltype != out_type:
            errors.append(f"link {lid}: type {ltype} but {a['type']} output {src_slot} is {out_type}")
        if in_type not in (out_type, "*"):
            errors.append(f"link {lid}: {a['type']} output {out_type} into {b['type']}.{inp.name if inp else '?'} "
                          f"of type {in_type}")
        if lid not in (a.get("outputs", [])[src_slot].get("links") or []):
            errors.append(f"link {lid}: not listed in {a['type']} output {src_slot} links")
    return errors


# -------------------------------------------------------------------------------------------- UI -> API
def widget_inputs(node: dict, d: NodeDef, saved_before: bool = False) -> dict[str, Any]:
    """Widget name -> value from a UI node's ``widgets_values`` (control/upload extras dropped).

    With ``saved_before`` (a workflow saved by an earlier version of the node, which has gained widgets since:
    widgets are only ever appended) fewer values are read as the frontend reads them: by position, and every
    widget past the saved ones keeps its declared default."""
    values = node.get("widgets_values", [])
    slots = d.widget_slots()
    if len(values) > len(slots) or (len(values) < len(slots) and not saved_before):
        raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widgets_values for {len(slots)} widgets")
    given = {inp.name: v for (kind, inp), v in zip(slots, values) if kind == "value"}
    later = {inp.name: inp.opts["default"] for kind, inp in slots[len(values):]
             if kind == "value" and "default" in inp.opts}
    return {**given, **later}


def _resolve_origin(ui_nodes: dict, links: dict, defs: dict, link_id: int, seen: Optional[set] = None):
    """(origin node id, slot) of a link, following bypassed nodes like the frontend; None if it leads nowhere."""
    link = links[link_id]
    src, slot, ltype = link[1], link[2], link[5]
    n = ui_nodes[src]
    mode = n.get("mode", 0)
    if mode == MODE_ALWAYS:
        return src, slot
    if mode == MODE_BYPASS:
        seen = seen or set()
        if src in seen:
            return None
        seen.add(src)
        for s in n.get("inputs", []):  # first input of the same type passes through
            if s.get("type") == ltype and s.get("link") is not None:
                return _resolve_origin(ui_nodes, links, defs, s["link"], seen)
    return None  # muted or nothing to pass through


def to_api(ui: dict, defs: dict[str, NodeDef], saved_before: bool = False) -> dict[str, dict]:
    """UI-format workflow -> API prompt ``{id: {class_type, inputs, _meta}}`` as POST /prompt accepts it
    (``saved_before``: a workflow saved by an earlier node version, see :func:`widget_inputs`)."""
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = _links_by_id(ui)
    prompt: dict[str, dict] = {}
    for nid in sorted(nodes):
        n = nodes[nid]
        if n["type"] in VIRTUAL_NODES or n.get("mode", 0) != MODE_ALWAYS:
            continue
        d = defs[n["type"]]
        inputs: dict[str, Any] = dict(widget_inputs(n, d, saved_before))
        for s in n.get("inputs", []):
            if s.get("link") is None:
                continue
            origin = _resolve_origin(nodes, links, defs, s["link"])
            if origin is None:
                inputs.pop(s["name"], None)
                continue
            inputs[s["name"]] = [str(origin[0]), origin[1]]
        prompt[str(nid)] = {"class_type": n["type"], "inputs": inputs,
                            "_meta": {"title": n.get("title") or n["type"]}}
    return prompt


def check_api(prompt: dict, defs: dict[str, NodeDef], offered: Iterable[str] = ()) -> list[str]:
    """Problems in an API prompt: unknown types, missing/extra inputs, bad values, dangling or mistyped links.
    ``offered``: model file names the UI workflow's model metadata offers to download (valid combo values)."""
    offered = tuple(offered)
    errors = []
    for nid, node in prompt.items():
        d = defs.get(node.get("class_type"))
        where = f"node {nid} ({node.get('class_type')})"
        if d is None:
            errors.append(f"{where}: unknown class_type")
            continue
        for name, value in node["inputs"].items():
            inp = d.input(name)
            if inp is None:
                errors.append(f"{where}: unknown input {name!r}")
            elif isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                src = prompt.get(value[0])
                if src is None:
                    errors.append(f"{where}: {name} links to missing node {value[0]}")
                    continue
                ds = defs.get(src["class_type"])
                out_t = ds.outputs[value[1]] if ds and value[1] < len(ds.outputs) else None
                if out_t != inp.type and inp.type != "*":
                    errors.append(f"{where}: {name} ({inp.type}) linked to a {out_t} output")
            else:
                problem = _check_value(inp, value, offered)
                if problem:
                    errors.append(f"{where}: {name} {problem}")
        for inp in d.inputs:
            if not inp.optional and inp.name not in node["inputs"]:
                errors.append(f"{where}: required input {inp.name!r} missing")
    return errors


def load_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def dump_json(obj: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def set_widget(ui: dict, node_type: str, name: str, value: Any, defs: dict[str, NodeDef]) -> dict:
    """A copy of ``ui`` with widget ``name`` of every ``node_type`` node set to ``value`` (for tests/e2e)."""
    ui = copy.deepcopy(ui)
    for n in ui["nodes"]:
        if n["type"] != node_type:
            continue
        slots = defs[node_type].widget_slots()
        for i, (kind, inp) in enumerate(slots):
            if kind == "value" and inp.name == name:
                n["widgets_values"][i] = value
    return ui


def output_nodes(prompt: dict, defs: dict[str, NodeDef]) -> list[str]:
    return [nid for nid, n in prompt.items() if defs[n["class_type"]].output_node]


def offered_models(ui: dict) -> list[dict]:
    """Every model entry (``{"name", "url", "directory"}``) of the nodes' ``properties.models`` in a UI workflow."""
    return [m for n in ui.get("nodes", []) for m in (n.get("properties") or {}).get("models") or []]


def iter_workflows(folder: str | Path) -> Iterable[Path]:
    return sorted(Path(folder).glob("*.json"))
