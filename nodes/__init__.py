"""ComfyUI node classes (classic API). Each module lists its classes in ``NODE_CLASSES``; every class
carries ``NODE_ID`` (``T2L_*``, never renamed) and ``DISPLAY_NAME``.

A module that fails to import (missing optional library) is reported and skipped; the rest still load.
"""

from __future__ import annotations

import importlib
import logging

_MODULES = [
    "clip_nodes",
    "edit_nodes",
    "video_nodes",
    "layer_file_nodes",
]

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
IMPORT_ERRORS: dict = {}

for _name in _MODULES:
    try:
        _mod = importlib.import_module(f".{_name}", __name__)
    except Exception as exc:  # keep the pack importable; say which part failed
        IMPORT_ERRORS[_name] = exc
        logging.getLogger("text2live").exception("Text2LIVE: could not import nodes.%s: %s", _name, exc)
        continue
    for _cls in _mod.NODE_CLASSES:
        NODE_CLASS_MAPPINGS[_cls.NODE_ID] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_cls.NODE_ID] = _cls.DISPLAY_NAME
