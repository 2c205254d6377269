"""What node classes declare alike: widget options taken from the core's settings (default, limits and help
stated once in the config dataclasses), the defaults of widgets a saved workflow or a script leaves out, the
outputs of a node that writes a file, and the change signature of a file a node reads."""

from __future__ import annotations

import os
from typing import Any

from ..t2l_core import api


def setting_widget(config_cls: type, flat: str, tooltip_extra: str = "", **options: Any) -> dict:
    """Options of the widget for setting ``flat`` of ``config_cls``: its default (None shown as ""), its
    min/max and its help as the tooltip (plus ``tooltip_extra``); ``options`` add or override (step...)."""
    default = api.default_of(config_cls, flat)
    lo, hi = api.limits_of(config_cls, flat)
    opts: dict[str, Any] = {"default": "" if default is None else default}
    if lo is not None:
        opts["min"] = lo
    if hi is not None:
        opts["max"] = hi
    opts["tooltip"] = f"{api.help_of(config_cls, flat)} {tooltip_extra}".strip()
    opts.update(options)
    return opts


def with_defaults(input_types: dict, given: dict) -> dict:
    """``given`` widget values plus the declared default of every widget not given (optional inputs a saved
    workflow of an earlier version lacks, or a script leaves out); None for an unconnected optional input."""
    out = {}
    for group in ("required", "optional"):
        for name, spec in input_types.get(group, {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if "default" in options:
                out[name] = options["default"]
            elif group == "optional":
                out[name] = None
    out.update(given)
    return out


class SavesFile:
    """Outputs of a node that writes one file: its full path, shown on the node and returned as STRING."""

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Full path of the written file.",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @staticmethod
    def saved(path: str) -> dict:
        """What ``save`` returns once ``path`` is written."""
        return {"ui": {"text": [path]}, "result": (path,)}


def file_signature(path: str | os.PathLike) -> str | float:
    """``IS_CHANGED`` value of a file a node reads: size and modification time (NaN, never equal to itself,
    when the file is missing, so the node runs and reports it)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return float("nan")
    return f"{st.st_size}:{st.st_mtime_ns}"
