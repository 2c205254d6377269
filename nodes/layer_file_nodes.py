"""Save Edit Layer and Load Edit Layer: trained layers as files in ``output/text2live/layers/``.

The file is the CLI's ``edit_layer.safetensors`` format (:meth:`EditLayer.save`), so layers move freely
between ComfyUI and ``python -m t2l_core apply-layer`` / ``video --other-layer``.
"""

from __future__ import annotations

from pathlib import Path

from ..t2l_core.api import EditLayer
from . import comfy_bridge as cb
from .declarations import Rule, SavesFile, add_queue_validation, check_inputs, file_signature

LAYER_FOLDER = "output/text2live/layers"
NONE_SAVED = "(no layer saved yet)"
_REMEDY = (f"Pick another file in Load Edit Layer (files in {LAYER_FOLDER}; press R after adding one), or save a "
           "trained layer with Save Edit Layer.")


def layers_dir() -> Path:
    d = cb.output_dir() / "layers"
    d.mkdir(parents=True, exist_ok=True)
    return d


def list_layer_files() -> list[str]:
    """``.safetensors`` files under the layers folder (sub-folders included, as relative POSIX paths)."""
    root = layers_dir()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.safetensors") if p.is_file())


def _resolve(file: str) -> Path:
    """The file inside the layers folder; names that climb out of it are refused."""
    root = layers_dir().resolve()
    p = (root / file).resolve()
    if root not in p.parents:
        raise ValueError(f"'{file}' is not inside {LAYER_FOLDER}: pick a file from Load Edit Layer's list.")
    return p


def _prefix_target(filename_prefix: str) -> tuple[Path, str]:
    """(folder, file stem) a Save Edit Layer prefix names: a '/' makes a sub-folder of the layers folder; a
    prefix that climbs out of it is refused."""
    prefix = filename_prefix.strip().replace("\\", "/").strip("/") or "edit_layer"
    folder, _, stem = prefix.rpartition("/")
    return (_resolve(folder) if folder else layers_dir()), (stem or "edit_layer")


class SaveEditLayer(SavesFile):
    NODE_ID = "T2L_SaveEditLayer"
    DISPLAY_NAME = "Save Edit Layer (Text2LIVE)"
    CATEGORY = "Text2LIVE"
    DESCRIPTION = (
        f"Saves a trained edit layer as a .safetensors file in {LAYER_FOLDER}/ (the same format as the CLI's "
        "edit_layer.safetensors). Load it again with Load Edit Layer, in any workflow, without training again."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "edit_layer": ("T2L_EDIT_LAYER", {"tooltip": "From Train Edit Layer (image or atlas)."}),
            "filename_prefix": ("STRING", {"default": "edit_layer", "tooltip":
                                "File name prefix; a counter is appended (edit_layer_00001.safetensors). A prefix "
                                "with '/' makes a sub-folder."}),
        }}

    def save(self, edit_layer, filename_prefix="edit_layer"):
        if not isinstance(edit_layer, EditLayer):
            raise ValueError("Save Edit Layer: edit_layer must come from Train Edit Layer or Load Edit Layer.")
        check_inputs(type(self), {"filename_prefix": filename_prefix})
        d, stem = _prefix_target(filename_prefix)
        d.mkdir(parents=True, exist_ok=True)
        path = str(edit_layer.save(cb.numbered_file(d, stem)))
        return self.saved(path)


class LoadEditLayer:
    NODE_ID = "T2L_LoadEditLayer"
    DISPLAY_NAME = "Load Edit Layer (Text2LIVE)"
    CATEGORY = "Text2LIVE"
    DESCRIPTION = (
        f"Loads an edit layer saved by Save Edit Layer, or an edit_layer.safetensors written by the CLI, from "
        f"{LAYER_FOLDER}/ (copy files there and press R to refresh the list). Connect it to Apply Edit Layer, or "
        "to Atlas Render's fg_edit_layer / bg_edit_layer for a layer trained on an atlas."
    )
    RETURN_TYPES = ("T2L_EDIT_LAYER",)
    RETURN_NAMES = ("edit_layer",)
    OUTPUT_TOOLTIPS = ("The trained layer, for Apply Edit Layer or Atlas Render.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "file": (list_layer_files() or [NONE_SAVED], {"tooltip":
                     f"A layer file in {LAYER_FOLDER}/. New files appear after pressing R (refresh)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, file):
        try:
            return file_signature(_resolve(file))
        except ValueError:  # a name outside the folder: the node runs and says so
            return float("nan")

    def load(self, file):
        check_inputs(type(self), {"file": file})
        return (EditLayer.load(_resolve(file), _REMEDY),)


def _layer_file_readable(w: dict) -> None:
    file = w["file"]
    if file == NONE_SAVED:
        raise ValueError(f"No edit layer in {LAYER_FOLDER} yet: save one with Save Edit Layer (or copy an "
                         "edit_layer.safetensors there), then press R to refresh the list.")
    EditLayer.check_file(_resolve(file), _REMEDY)


SaveEditLayer.RULES = (Rule(("filename_prefix",), lambda w: _prefix_target(w["filename_prefix"])),)
add_queue_validation(SaveEditLayer)
LoadEditLayer.RULES = (Rule(("file",), _layer_file_readable, own_choices=True),)
add_queue_validation(LoadEditLayer)

NODE_CLASSES = [SaveEditLayer, LoadEditLayer]
