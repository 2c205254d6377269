"""comfyui-text2live: ComfyUI entry point.

ComfyUI imports this folder as a package and reads NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS.
Importing never fails because ComfyUI, weights or an optional library is missing.
"""

import logging

try:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except Exception as _exc:  # e.g. imported outside a package context (pytest collecting the repo root)
    if __package__:
        logging.getLogger("text2live").exception("Text2LIVE nodes failed to load: %s", _exc)
    NODE_CLASS_MAPPINGS = {}
    NODE_DISPLAY_NAME_MAPPINGS = {}

# Frontend extension: new Text2LIVE nodes start with their seed control at "fixed" (web/fixed_seeds.js).
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
