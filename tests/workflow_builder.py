"""Builds the UI-format (version 0.4) example workflows in ``example_workflows/`` from a short description, so node
inputs/outputs, links and the positional ``widgets_values`` (with seed controls and upload values) always follow
our node definitions. Regenerate after changing a node's inputs:

    python tests/workflow_builder.py        # writes example_workflows/*.json and tests/workflows_api/*.json

Hand edits in the ComfyUI editor are fine too; tests/nodes/test_workflows.py checks whatever is shipped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from workflow_format import VIRTUAL_NODES, NodeDef, dump_json, node_defs, to_api  # noqa: E402

NOTE_COLOR = {"color": "#432", "bgcolor": "#653"}

#: The CLIP the templates' Load CLIP names: OpenAI's ViT-B/32 (the paper's model) in open_clip's layout, under
#: the first file name Load CLIP looks for for ViT-B-32:openai in models/text2live. The node's
#: ``properties.models`` carries it so ComfyUI's frontend offers the download when the file is missing.
CLIP_FILE = "ViT-B-32-openai.safetensors"
CLIP_MODEL = {"name": CLIP_FILE, "directory": "text2live",
              "url": "https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors"}
GROUP_COLORS = {"blue": "#3f789e", "green": "#8A8", "red": "#b06634", "grey": "#444"}


class Graph:
    def __init__(self, defs: dict[str, NodeDef]):
        self.defs = defs
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []

    def _node(self, nid: int) -> dict:
        return next(n for n in self.nodes if n["id"] == nid)

    def add(self, node_type: str, pos: tuple[float, float], widgets: Optional[dict] = None, *,
            size: tuple[float, float] = (320, 120), title: Optional[str] = None, mode: int = 0,
            inputs_as_widgets: tuple = (), models: tuple = ()) -> int:
        """Add a node; ``widgets`` by input name (others take their defaults; seed controls are 'fixed');
        ``models``: the model files it names, with download URL and folder (``properties.models``)."""
        nid = len(self.nodes) + 1
        widgets = dict(widgets or {})
        if node_type in VIRTUAL_NODES:
            values, ins, outs = [widgets.pop("text")], [], []
        else:
            d = self.defs[node_type]
            values = []
            for kind, inp in d.widget_slots():
                if kind == "control":
                    values.append("fixed")
                elif kind == "upload":
                    values.append("image")
                elif inp.name in widgets:
                    values.append(widgets.pop(inp.name))
                elif "default" in inp.opts:
                    values.append(inp.opts["default"])
                elif inp.options:
                    values.append(inp.options[0])
                elif inp.type == "STRING":
                    values.append("")
                else:
                    raise ValueError(f"{node_type}.{inp.name}: no value and no default")
            ins = []
            for inp in d.sockets:
                s = {"name": inp.name, "type": inp.type, "link": None}
                if inp.optional:
                    s["shape"] = 7
                ins.append(s)
            for name in inputs_as_widgets:  # a widget fed by a link (the frontend keeps its value too)
                w = d.input(name)
                ins.append({"name": name, "type": w.type, "widget": {"name": name}, "link": None})
            names = d.output_names or d.outputs
            outs = [{"name": nm, "type": t, "slot_index": i, "links": []} for i, (nm, t) in enumerate(zip(names, d.outputs))]
        if widgets:
            raise ValueError(f"{node_type}: unknown widgets {sorted(widgets)}")
        node: dict[str, Any] = {"id": nid, "type": node_type, "pos": [float(pos[0]), float(pos[1])],
                                "size": [float(size[0]), float(size[1])], "flags": {}, "order": 0, "mode": mode,
                                "inputs": ins, "outputs": outs, "properties": {"Node name for S&R": node_type},
                                "widgets_values": values}
        if title:
            node["title"] = title
        if models:
            node["properties"]["models"] = [dict(m) for m in models]
        if node_type in VIRTUAL_NODES:
            node["properties"] = {}
            node.update(NOTE_COLOR)
        self.nodes.append(node)
        return nid

    def link(self, src: int, out: int | str, dst: int, inp: str) -> None:
        a, b = self._node(src), self._node(dst)
        if isinstance(out, str):
            out = next(i for i, o in enumerate(a["outputs"]) if o["name"] == out)
        slot = next(i for i, s in enumerate(b["inputs"]) if s["name"] == inp)
        lid = len(self.links) + 1
        ltype = a["outputs"][out]["type"]
        self.links.append([lid, src, out, dst, slot, ltype])
        a["outputs"][out]["links"].append(lid)
        b["inputs"][slot]["link"] = lid

    def group(self, title: str, bounding: tuple, color: str = "blue") -> None:
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(bounding),
                            "color": GROUP_COLORS[color], "font_size": 24, "flags": {}})

    def _orders(self) -> None:
        """Topological execution order, as the frontend stores it in ``order``."""
        deps = {n["id"]: {l[1] for l in self.links if l[3] == n["id"]} for n in self.nodes}
        done: list[int] = []
        while len(done) < len(self.nodes):
            ready = sorted(i for i, d in deps.items() if i not in done and d <= set(done))
            done.extend(ready)
        for order, nid in enumerate(done):
            self._node(nid)["order"] = order

    def to_ui(self) -> dict:
        self._orders()
        for n in self.nodes:
            for o in n["outputs"]:
                if not o["links"]:
                    o["links"] = None
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": 0.75, "offset": [40, 60]}}, "version": 0.4}


# ------------------------------------------------------------------------------------------ the workflows
IMAGE_NOTE = (
    "Text2LIVE image edit\n\n"
    "Provide:\n"
    "1. An image: upload it in Load Image (any photo; the paper edits e.g. a cake, a horse, a cat).\n"
    "   The workflow names chelsea.jpg, the photo that comes with this pack: upload "
    "custom_nodes/comfyui-text2live/assets/chelsea.jpg (or pick your own photo).\n"
    f"2. CLIP weights: the paper's ViT-B-32 from OpenAI. Load CLIP names {CLIP_FILE}: when it is not in "
    "ComfyUI/models/text2live/, ComfyUI offers its download as the workflow opens (save it there under that "
    "name and press R). Or pick ViT-B-32:openai in Load CLIP: open_clip downloads it into its own cache on "
    "first use (offline, the OpenAI file ViT-B-32.pt in models/text2live works too).\n\n"
    "Prompts: 'prompt' = the edited image, 'screen_prompt' = the edit alone (matched over a green screen), "
    "'source_prompt' = the input (directional loss), 'roi_text' = where to edit. The Relevancy Map of the "
    "ROI text bootstraps the opacity (its MASK is wired to bootstrap_mask).\n\n"
    "1000 iterations at size 512 is the paper's setting: minutes on a GPU, hours on a CPU. Try 100 "
    "iterations first. Cancel keeps a checkpoint; queue again (resume on) to continue. The seed is fixed, "
    "so the same inputs give the same result and queuing again without changes reuses it.\n\n"
    "Save Edit Layer writes the trained layer to output/text2live/layers/. Load Edit Layer (press R to "
    "refresh its list) + Apply Edit Layer reuse it on other images without training; the CLI's apply-layer "
    "reads the same file."
)

VIDEO_NOTE = (
    "Text2LIVE video edit through a layered atlas\n\n"
    "Provide:\n"
    "1. A short video (about 2-5 s; upload it in the first Load Video). Frames are resized to the working "
    "size in Upscale Image (keep both resize nodes equal); Fit Layered Atlas also takes the video itself for "
    "its frame rate and sound.\n"
    "2. Foreground masks as a video of the same length (white = object; upload it in the second Load Video), "
    "e.g. from any segmentation node. Without masks, disconnect 'masks': only a background atlas is fitted.\n"
    f"3. CLIP weights as in the image workflow: {CLIP_FILE} in models/text2live (ComfyUI offers the "
    "download when it is missing), or ViT-B-32:openai through open_clip's cache.\n\n"
    "Fit Layered Atlas unwraps the video into a foreground and a background atlas (check 'info' for the "
    "reconstruction PSNR; ~30 dB is good). Train Edit Layer, given the atlas (nla), trains the edit on the "
    "foreground atlas with its losses on the frames the atlas maps to (the paper's video method; 3000 "
    "iterations, video settings), and Atlas Render maps the trained layer back into every frame, so the edit "
    "follows the motion. For the background, set atlas_layer to background (a second Train Edit Layer node "
    "can edit the other layer; connect both to Atlas Render). Optical flow: torchvision RAFT weights in "
    "models/text2live are used when present, otherwise a built-in estimator (no download). Save Video writes "
    "the edited video as an mp4 at the source's frame rate, with its sound (Atlas Render's video output).\n\n"
    "Without CLIP nothing starts: every output of this workflow waits for the edit, so when Load CLIP "
    "reports an error ComfyUI refuses the whole prompt (an error dialog, Load CLIP outlined in red) before "
    "the long atlas fit begins. Seeds are fixed: queuing again with only the edit's widgets changed reuses "
    "the fitted atlas. To look at the fit alone first, connect Fit Layered Atlas's 'reconstruction' to a "
    "Preview Image (that output then runs without CLIP). Save Edit Layer keeps the trained layer in "
    "output/text2live/layers/."
)

CHAIN_NOTE = (
    "Chaining the atlas with any image node\n\n"
    "Atlases are ordinary IMAGEs: edit the background atlas with any node and Atlas Render maps the edit "
    "back into every frame.\n\n"
    "Provide:\n"
    "1. A video (Load Video; about 2-5 s). Its frames are resized to the working size; Fit Layered Atlas also "
    "takes the video itself for its frame rate and sound.\n"
    "2. An overlay image with transparency (Load Image), e.g. a logo or painted strokes. Image Composite Masked "
    "pastes it on the atlas at x, y; Mask Composite puts its opacity at the same x, y (keep both equal), so Atlas "
    "Render changes only that region of every frame. Load Image's MASK is 1 - alpha, hence Invert Mask.\n\n"
    "Diffusion img2img: the muted red group is the place for it. It needs an SD checkpoint in "
    "models/checkpoints. Un-mute the group (select, Ctrl+M), then connect VAE Decode's IMAGE to Atlas Render's "
    "bg_atlas instead of the composite and disconnect bg_opacity (the whole atlas is then applied). Keep the "
    "denoise low (0.3-0.5) so the atlas keeps its layout.\n\n"
    "The preview shows the edit with its opacity (transparent where the atlas stays as it is); Save Video "
    "writes the result as an mp4 at the video's own frame rate, with its sound."
)


def image_edit(defs) -> dict:
    g = Graph(defs)
    g.add("Note", (-420, 40), {"text": IMAGE_NOTE}, size=(380, 520), title="Read me: files and weights")
    img = g.add("LoadImage", (0, 40), {"image": "chelsea.jpg"}, size=(300, 330))
    clip = g.add("T2L_LoadCLIP", (0, 420), {"model": CLIP_FILE}, size=(300, 130), models=(CLIP_MODEL,))
    rel = g.add("T2L_RelevancyMap", (360, 420), {"text": "cat"}, size=(300, 110))
    heat = g.add("PreviewImage", (360, 580), size=(300, 260), title="Relevancy heat map")
    train = g.add("T2L_TrainEditLayer", (720, 40), {
        "prompt": "a cat with leopard fur", "screen_prompt": "leopard fur", "source_prompt": "a cat",
        "iterations": 1000, "size": 512, "seed": 42, "roi_text": ""}, size=(360, 700))
    comp = g.add("T2L_Composite", (1140, 40), size=(300, 110))
    save = g.add("SaveImage", (1500, 40), {"filename_prefix": "text2live/composite"}, size=(300, 320),
                 title="Save composite")
    edit = g.add("SaveImage", (1140, 420), {"filename_prefix": "text2live/edit_layer"}, size=(300, 300),
                 title="Save edit (colour + opacity, RGBA)")
    inv = g.add("InvertMask", (1140, 220), size=(260, 30), title="Invert Mask (alpha = 1 - mask)")
    rgba = g.add("JoinImageWithAlpha", (1140, 300), size=(260, 50))
    keep = g.add("T2L_SaveEditLayer", (720, 800), {"filename_prefix": "edit_layer"}, size=(360, 90))
    m2i = g.add("MaskToImage", (1500, 420), size=(220, 30))
    opac = g.add("PreviewImage", (1500, 500), size=(300, 260), title="Opacity")
    green = g.add("PreviewImage", (1140, 780), size=(300, 260), title="Green screen")
    g.link(img, 0, rel, "image")
    g.link(clip, 0, rel, "clip")
    g.link(rel, "heatmap", heat, "images")
    g.link(clip, 0, train, "clip")
    g.link(img, 0, train, "image")
    g.link(rel, "relevancy", train, "bootstrap_mask")
    g.link(train, "edit", comp, "color")
    g.link(train, "opacity", comp, "opacity")
    g.link(img, 0, comp, "background")
    g.link(comp, 0, save, "images")
    g.link(train, "edit", rgba, "image")
    g.link(train, "opacity", inv, "mask")
    g.link(inv, 0, rgba, "alpha")
    g.link(rgba, 0, edit, "images")
    g.link(train, "edit_layer", keep, "edit_layer")
    g.link(train, "opacity", m2i, "mask")
    g.link(m2i, 0, opac, "images")
    g.link(train, "greenscreen", green, "images")
    return g.to_ui()


def _video_input(g: Graph, file: str, pos: tuple, title: str, width: int, height: int) -> int:
    x, y = pos
    lv = g.add("LoadVideo", (x, y), {"file": file}, size=(280, 330), title=title)
    comps = g.add("GetVideoComponents", (x + 310, y), size=(220, 70))
    scale = g.add("ImageScale", (x + 310, y + 110), {"upscale_method": "area", "width": width, "height": height,
                                                     "crop": "center"}, size=(260, 130))
    g.link(lv, 0, comps, "video")
    g.link(comps, "images", scale, "image")
    return lv, scale


def video_edit(defs) -> dict:
    g = Graph(defs)
    g.add("Note", (-420, 40), {"text": VIDEO_NOTE}, size=(380, 600), title="Read me: files and weights")
    video, frames = _video_input(g, "input_video.mp4", (0, 40), "Load Video (frames)", 768, 432)
    _, masks_img = _video_input(g, "input_video_masks.mp4", (0, 420), "Load Video (foreground masks)", 768, 432)
    to_mask = g.add("ImageToMask", (600, 530), {"channel": "red"}, size=(220, 60))
    fit = g.add("T2L_NLAFit", (880, 40), {"iterations": 2000, "atlas_resolution": 0, "seed": 7}, size=(340, 300),
                title="Fit Layered Atlas (waits for the edit)")
    clip = g.add("T2L_LoadCLIP", (880, 400), {"model": CLIP_FILE}, size=(300, 130), models=(CLIP_MODEL,))
    train = g.add("T2L_TrainEditLayer", (1260, 40), {
        "prompt": "a giraffe with zebra stripes", "screen_prompt": "zebra stripes", "source_prompt": "a giraffe",
        "roi_text": "giraffe", "iterations": 3000, "seed": 42, "atlas_layer": "foreground", "video_defaults": True},
        size=(360, 700), title="Train Edit Layer (on the foreground atlas)")
    inv = g.add("InvertMask", (1680, 330), size=(260, 30), title="Invert Mask (alpha = 1 - mask)")
    rgba = g.add("JoinImageWithAlpha", (1680, 390), size=(260, 50))
    atlas_prev = g.add("PreviewImage", (1680, 470), size=(300, 260), title="Edited foreground atlas (with opacity)")
    keep = g.add("T2L_SaveEditLayer", (1260, 800), {"filename_prefix": "video_edit_layer"}, size=(360, 90))
    render = g.add("T2L_AtlasRender", (1680, 40), size=(280, 230))
    save = g.add("SaveVideo", (2020, 40), {"filename_prefix": "text2live/video_edit"}, size=(320, 380),
                 title="Save Video (mp4 with the source's sound)")
    g.link(frames, 0, fit, "frames")
    g.link(video, 0, fit, "video")
    g.link(masks_img, 0, to_mask, "image")
    g.link(to_mask, 0, fit, "masks")
    g.link(clip, 0, train, "clip")
    g.link(frames, 0, train, "image")
    g.link(fit, "nla", train, "nla")
    g.link(train, "edit", rgba, "image")
    g.link(train, "opacity", inv, "mask")
    g.link(inv, 0, rgba, "alpha")
    g.link(rgba, 0, atlas_prev, "images")
    g.link(train, "edit_layer", keep, "edit_layer")
    g.link(fit, "nla", render, "nla")
    g.link(train, "edit_layer", render, "fg_edit_layer")
    g.link(render, "video", save, "video")
    g.group("1. Video and masks as IMAGE/MASK batches (core nodes)", (-20, -30, 860, 820), "grey")
    g.group("2. Text-driven edit trained on the atlas", (1240, -30, 400, 950), "blue")
    return g.to_ui()


def atlas_chaining(defs) -> dict:
    g = Graph(defs)
    g.add("Note", (-420, 40), {"text": CHAIN_NOTE}, size=(380, 560), title="Read me: files and chaining")
    video, frames = _video_input(g, "input_video.mp4", (0, 40), "Load Video (frames)", 768, 432)
    fit = g.add("T2L_NLAFit", (600, 40), {"iterations": 2000, "atlas_resolution": 0, "seed": 7}, size=(340, 300))
    save_atlas = g.add("SaveImage", (600, 400), {"filename_prefix": "text2live/bg_atlas"}, size=(300, 280),
                       title="Save background atlas")
    overlay = g.add("LoadImage", (1000, 300), {"image": "overlay.png"}, size=(280, 330), title="Load Image (overlay, RGBA)")
    inv = g.add("InvertMask", (1000, 660), size=(200, 30), title="Invert Mask (alpha = 1 - MASK)")
    paste = g.add("ImageCompositeMasked", (1320, 40), {"x": 64, "y": 32, "resize_source": False}, size=(300, 160),
                  title="Paste overlay on the atlas")
    to_mask = g.add("ImageToMask", (1000, 40), {"channel": "red"}, size=(260, 60))
    zeros = g.add("ThresholdMask", (1000, 140), {"value": 1.0}, size=(260, 60), title="Empty mask of atlas size")
    where = g.add("MaskComposite", (1320, 260), {"x": 64, "y": 32, "operation": "add"}, size=(300, 160),
                  title="Where the overlay is (same x, y)")
    edited = g.add("PreviewImage", (1680, 330), size=(300, 260), title="Background atlas edit (with opacity)")
    inv_where = g.add("InvertMask", (1320, 470), size=(260, 30), title="Invert Mask (alpha = 1 - mask)")
    rgba = g.add("JoinImageWithAlpha", (1320, 550), size=(260, 50))
    render = g.add("T2L_AtlasRender", (1680, 40), size=(280, 230))
    save = g.add("SaveVideo", (2020, 40), {"filename_prefix": "text2live/atlas_chaining"}, size=(320, 380),
                 title="Save Video (mp4 with the source's sound)")
    # the diffusion img2img group: muted (mode 2) because it needs a checkpoint
    ck = g.add("CheckpointLoaderSimple", (600, 840), {"ckpt_name": "v1-5-pruned-emaonly-fp16.safetensors"},
               size=(320, 100), mode=2)
    pos = g.add("CLIPTextEncode", (960, 840), {"text": "the same scene in watercolour"}, size=(320, 100), mode=2)
    neg = g.add("CLIPTextEncode", (960, 980), {"text": "blurry, distorted"}, size=(320, 100), mode=2)
    enc = g.add("VAEEncode", (1320, 840), size=(200, 50), mode=2)
    ks = g.add("KSampler", (1560, 840), {"seed": 1234, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
                                         "scheduler": "normal", "denoise": 0.4}, size=(300, 270), mode=2)
    dec = g.add("VAEDecode", (1900, 840), size=(200, 50), mode=2)
    prev = g.add("PreviewImage", (1900, 920), size=(260, 240), mode=2, title="img2img atlas (connect to bg_atlas)")
    g.link(frames, 0, fit, "frames")
    g.link(video, 0, fit, "video")
    g.link(fit, "bg_atlas", save_atlas, "images")
    g.link(fit, "bg_atlas", paste, "destination")
    g.link(overlay, 0, paste, "source")
    g.link(overlay, 1, inv, "mask")
    g.link(inv, 0, paste, "mask")
    g.link(fit, "bg_atlas", to_mask, "image")
    g.link(to_mask, 0, zeros, "mask")
    g.link(zeros, 0, where, "destination")
    g.link(inv, 0, where, "source")
    g.link(paste, 0, rgba, "image")
    g.link(where, 0, inv_where, "mask")
    g.link(inv_where, 0, rgba, "alpha")
    g.link(rgba, 0, edited, "images")
    g.link(fit, "nla", render, "nla")
    g.link(paste, 0, render, "bg_atlas")
    g.link(where, 0, render, "bg_opacity")
    g.link(render, "video", save, "video")
    g.link(ck, 1, pos, "clip")
    g.link(ck, 1, neg, "clip")
    g.link(fit, "bg_atlas", enc, "pixels")
    g.link(ck, 2, enc, "vae")
    g.link(ck, 0, ks, "model")
    g.link(pos, 0, ks, "positive")
    g.link(neg, 0, ks, "negative")
    g.link(enc, 0, ks, "latent_image")
    g.link(ks, 0, dec, "samples")
    g.link(ck, 2, dec, "vae")
    g.link(dec, 0, prev, "images")
    g.group("Edit the atlas with ordinary image nodes", (980, -30, 660, 760), "blue")
    g.group("Diffusion img2img on the atlas (muted: needs a checkpoint)", (580, 770, 1600, 420), "red")
    return g.to_ui()


WORKFLOWS = {"image_edit": image_edit, "video_edit": video_edit, "atlas_chaining": atlas_chaining}


def main() -> None:
    sys.path.insert(0, str(HERE))
    from conftest import load_pack

    defs = node_defs(load_pack().NODE_CLASS_MAPPINGS)
    (REPO / "example_workflows").mkdir(exist_ok=True)
    (HERE / "workflows_api").mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        ui = build(defs)
        dump_json(ui, REPO / "example_workflows" / f"{name}.json")
        dump_json(to_api(ui, defs), HERE / "workflows_api" / f"{name}.json")
        print("wrote", name)


if __name__ == "__main__":
    main()
