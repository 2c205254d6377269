"""What node classes declare alike: widget options taken from the core's settings (default, limits and help
stated once in the config dataclasses), the defaults of widgets a saved workflow or a script leaves out, the
outputs of a node that writes a file, the change signature of a file a node reads, and the checks of a node's
settings (``RULES``) that run both when a prompt is queued (VALIDATE_INPUTS) and when the node runs."""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

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


# ------------------------------------------------------------------------------------- checks at queue time
class _Wired:
    """The value of an input wired to another node's output while the prompt is validated: ComfyUI passes None
    for it to VALIDATE_INPUTS (the value exists only once the graph runs)."""

    def __repr__(self) -> str:
        return "<wired to another node>"


WIRED = _Wired()
#: the default of every VALIDATE_INPUTS parameter: ComfyUI leaves out an input the prompt does not hold
#: (an unconnected optional input, a widget a workflow of an earlier version lacks)
NOT_GIVEN = object()


class QueueCheckFailed(ValueError):
    """Raised by VALIDATE_INPUTS when ComfyUI passed it several inputs. ComfyUI (0.3.64) lists a message that
    VALIDATE_INPUTS returns once per input it passed, but an exception raised there once for the node, so
    raising keeps one message per problem; with one input passed the message is returned."""


@dataclass(frozen=True)
class Rule:
    """One check of a node's settings, used both when a prompt is queued (VALIDATE_INPUTS) and when the node
    runs, so there is one copy of each rule.

    Args:
        widgets: the widget values ``check`` reads; the rule is skipped at queue time while one of them is wired
            to another node (and when one of them already broke its declared limits).
        check: ``check(values)`` with every input of the node by name (declared defaults filled in, None for an
            unconnected optional input); raises ValueError (or FileNotFoundError) saying what to change.
        connections: inputs whose connection (not value) ``check`` reads: ``values[name] is not None`` when
            connected, at queue time too.
        own_choices: the widgets are combos of files whose list may be out of date (a file added or removed
            since the list was made): ``check`` judges any value and says what to do, instead of "not in list".
    """

    widgets: tuple[str, ...]
    check: Callable[[dict], Any]
    connections: tuple[str, ...] = ()
    own_choices: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return self.widgets + self.connections


def checked_inputs(node_cls: type) -> list[str]:
    """The inputs a node's rules read (the parameters of its VALIDATE_INPUTS), in declaration order."""
    names: list[str] = []
    for rule in getattr(node_cls, "RULES", ()):
        names += [n for n in rule.names if n not in names]
    return names


def _spec(input_types: dict, name: str) -> Optional[tuple]:
    for group in ("required", "optional"):
        if name in input_types.get(group, {}):
            return input_types[group][name]
    return None


def limit_problem(input_types: dict, name: str, value: Any) -> Optional[str]:
    """What is wrong with widget ``name``'s ``value`` against its declaration (combo options, INT/FLOAT min and
    max), the checks ComfyUI skips for the inputs VALIDATE_INPUTS takes; None when nothing is."""
    spec = _spec(input_types, name)
    if spec is None:
        return None
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(kind, (list, tuple)):
        if value not in kind:
            shown = ", ".join(f"'{o}'" for o in kind) if len(kind) <= 20 else f"the {len(kind)} in its list"
            return f"'{value}' is not one of {shown}; pick one from the list"
        return None
    if kind not in ("INT", "FLOAT"):
        return None
    try:
        number = int(value) if kind == "INT" else float(value)
    except (TypeError, ValueError):
        return f"'{value}' is not {'an integer' if kind == 'INT' else 'a number'}"
    lo, hi = opts.get("min"), opts.get("max")
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        span = f"{lo}..{hi}" if lo is not None and hi is not None else (f">= {lo}" if lo is not None else f"<= {hi}")
        return f"{value} is out of range; use {span}"
    return None


def problems(node_cls: type, values: dict, limits_of: Optional[Sequence[str]] = None) -> list[str]:
    """Every problem of a node's inputs, each naming its widget and what to change.

    Args:
        node_cls: a node class with ``RULES``.
        values: the node's inputs by name, declared defaults filled in; :data:`WIRED` for an input wired to
            another node whose value is not known yet.
        limits_of: the widgets whose declared limits are checked (default: the inputs the rules read, those
            ComfyUI leaves to VALIDATE_INPUTS).
    """
    input_types = node_cls.INPUT_TYPES()
    rules = getattr(node_cls, "RULES", ())
    judged_by_rule = {n for rule in rules if rule.own_choices for n in rule.widgets}
    found, broken = [], set()
    for name in checked_inputs(node_cls) if limits_of is None else limits_of:
        value = values.get(name)
        if value is WIRED or value is None or name in judged_by_rule:
            continue
        problem = limit_problem(input_types, name, value)
        if problem:
            found.append(f"{name}: {problem}")
            broken.add(name)
    for rule in rules:
        if any(values.get(n) is WIRED or n in broken for n in rule.widgets):
            continue
        try:
            rule.check(values)
        except (ValueError, FileNotFoundError) as exc:
            msg = str(exc).strip()
            # led by the widget it is about (a message about connections names them itself)
            found.append(f"{rule.widgets[0]}: {msg}" if rule.widgets and not msg.startswith(rule.widgets)
                         else msg)
    return found


def queue_check(node_cls: type, received: dict):
    """The body of a node's VALIDATE_INPUTS: True, or one message listing every problem.

    Args:
        node_cls: a node class with ``RULES``.
        received: what ComfyUI passed (:data:`NOT_GIVEN` for an input the prompt does not hold, None for one
            wired to another node).

    Returns:
        True, or the message when ComfyUI passed one input.

    Raises:
        QueueCheckFailed: the message, when ComfyUI passed several inputs (see :class:`QueueCheckFailed`).
    """
    given = {k: (WIRED if v is None else v) for k, v in received.items() if v is not NOT_GIVEN}
    found = problems(node_cls, with_defaults(node_cls.INPUT_TYPES(), given))
    if not found:
        return True
    message = "\n".join(found)
    if len(given) > 1:
        raise QueueCheckFailed(message)
    return message


def queue_message(node_cls: type, **received) -> Any:
    """What VALIDATE_INPUTS reports for ``received``: True or the message (raised or returned), for tests and
    scripts."""
    try:
        return node_cls.VALIDATE_INPUTS(**received)
    except QueueCheckFailed as exc:
        return str(exc)


def check_inputs(node_cls: type, values: dict) -> dict:
    """When the node runs: its inputs with declared defaults filled in, after the same rules as at queue time
    and the declared limits of every widget in ``values`` (which ComfyUI has checked already; plain Python
    callers have not).

    Raises:
        ValueError: every problem, one per line, each naming its widget.
    """
    w = with_defaults(node_cls.INPUT_TYPES(), values)
    found = problems(node_cls, w, limits_of=list(values))  # what ComfyUI's own checks cover at queue time too
    if found:
        raise ValueError(f"{node_cls.DISPLAY_NAME}: " + "\n".join(found))
    return w


def add_queue_validation(node_cls: type) -> type:
    """Give a node class with ``RULES`` its VALIDATE_INPUTS: one parameter per input the rules read (ComfyUI
    passes exactly the inputs named in the signature, and skips its own min/max/combo checks for them, which
    :func:`problems` makes instead), each defaulting to :data:`NOT_GIVEN`."""

    def validate(cls, *args, **received):
        received.update(zip(checked_inputs(cls), args))  # positional calls (scripts, tests) in signature order
        return queue_check(cls, received)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    validate.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("cls", kind)] + [inspect.Parameter(n, kind, default=NOT_GIVEN)
                                            for n in checked_inputs(node_cls)])
    validate.__name__ = validate.__qualname__ = "VALIDATE_INPUTS"
    validate.__doc__ = ("Checks at queue time, before any node runs: " + ", ".join(checked_inputs(node_cls))
                        + " (the rules in RULES, also applied when the node runs).")
    node_cls.VALIDATE_INPUTS = classmethod(validate)
    return node_cls
