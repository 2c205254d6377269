"""comfyui-text2live: ComfyUI entry point.

In ComfyUI with the current node API (``comfy_api.latest``, ComfyUI >= 0.3.64) the pack offers its nodes as
``io.ComfyNode`` classes through ``comfy_entrypoint`` (nodes/v3_schema.py), made from the classic classes in
``nodes/`` (which stay the declaration and the implementation). ComfyUI reads ``NODE_CLASS_MAPPINGS`` first
and then never calls ``comfy_entrypoint``, so the classic mappings are exported only where that API is
missing (an older ComfyUI, or plain Python: scripts and tests reach them as ``nodes.NODE_CLASS_MAPPINGS``).
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


def _v3_nodes():
    """The V3 nodes made from the classic classes; None without comfy_api.latest, or when this ComfyUI's API
    lacks a part they use (then logged, and ComfyUI loads the classic classes)."""
    try:
        from .nodes.v3_schema import v3_nodes
        return v3_nodes(NODE_CLASS_MAPPINGS.values())
    except Exception as exc:
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "comfy_api":
            return None  # no ComfyUI, or one older than the V3 node API
        logging.getLogger("text2live").exception("Text2LIVE: the V3 node schema failed, classic nodes load: %s", exc)
        return None


V3_NODES = _v3_nodes() if NODE_CLASS_MAPPINGS else None

if V3_NODES:
    async def comfy_entrypoint():
        """The pack as a V3 extension (ComfyUI's ``load_custom_node`` calls it when NODE_CLASS_MAPPINGS is absent)."""
        from .nodes.v3_schema import Text2LiveExtension

        return Text2LiveExtension(V3_NODES)

    del NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
