"""Settings stated once: config dataclasses whose fields carry their help text and limits, grouped in nested
sub-configs, and read or written through one flat public name per setting.

A field is declared with :func:`setting` (default, help, optional ``min``/``max``/``choices``). A config made
of sub-configs lists its flat names in a class attribute ``FLAT``: ``{flat name: (sub-config, field)}``
where the sub-config is ``""`` for a field of the config itself and the field is ``""`` for a whole
sub-config stored as a dict. A plain dataclass without ``FLAT`` has its own field names as flat names (a field
whose default is a dataclass is a whole sub-config).

    lr = default_of(EditConfig, "lr")            # 2.5e-3, from OptimConfig.lr
    help_of(EditConfig, "n_views")               # the help text of ViewConfig.n_views
    limits_of(EditConfig, "size")                # (min, max); None where a side is open
    check_limits(config, ("size", "n_views"))    # ValueError naming the first setting outside its limits
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import MISSING, field
from typing import Any, Optional, Sequence

TOP = ""  # the sub-config name of a config's own fields in a FLAT table
WHOLE = ""  # the field name of a whole sub-config (stored as a dict) in a FLAT table


def setting(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING,
            min: Optional[float] = None, max: Optional[float] = None,
            choices: Optional[Sequence[Any]] = None) -> Any:
    """A dataclass field with its help text and limits in the field's metadata.

    Args:
        default / default_factory: as :func:`dataclasses.field`.
        help: one sentence a user reads (CLI ``--help``, node tooltips).
        min / max: the inclusive range the setting accepts (None = open).
        choices: the values a text setting accepts.

    Returns:
        The :func:`dataclasses.field`.
    """
    meta = {"help": help, "min": min, "max": max, "choices": tuple(choices) if choices is not None else None}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def flat_table(cls: type) -> dict[str, tuple[str, str]]:
    """The flat names of a config class.

    Args:
        cls: the config class.

    Returns:
        ``{flat name: (sub-config, field)}`` (its own fields when it has no ``FLAT``, a field whose default is a
        dataclass as a whole sub-config).
    """
    table = getattr(cls, "FLAT", None)
    if table is not None:
        return table
    return {f.name: (f.name, WHOLE) if _holds_config(f) else (TOP, f.name) for f in dataclasses.fields(cls)}


def _holds_config(f: dataclasses.Field) -> bool:
    """Whether a field's default is a config (a dataclass instance)."""
    try:
        default = _field_default(f)
    except KeyError:
        return False
    return dataclasses.is_dataclass(default) and not isinstance(default, type)


def _field(cls: type, name: str) -> dataclasses.Field:
    """The dataclass field ``name`` of ``cls`` (KeyError when none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field '{name}'")


def _field_default(f: dataclasses.Field) -> Any:
    """A field's default (a fresh one from its factory; KeyError when none)."""
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    if f.default is MISSING:
        raise KeyError(f"field '{f.name}' has no default")
    return f.default


def _locate(cls: type, flat: str) -> tuple[type, Optional[dataclasses.Field], Any]:
    """(owner class, owner field or None for a whole sub-config, default value) of a flat name."""
    try:
        sub, name = flat_table(cls)[flat]
    except KeyError:
        raise KeyError(f"{cls.__name__} has no setting '{flat}'") from None
    if sub == TOP:
        f = _field(cls, name)
        return cls, f, _field_default(f)
    sub_default = _field_default(_field(cls, sub))
    if name == WHOLE:
        return type(sub_default), None, sub_default
    owner = type(sub_default)
    return owner, _field(owner, name), getattr(sub_default, name)


def default_of(cls: type, flat: str) -> Any:
    """The default of a setting (sub-config defaults of ``cls`` included).

    Args:
        cls: the config class.
        flat: the setting's flat name.

    Returns:
        The default.

    Raises:
        KeyError: ``cls`` has no such setting.
    """
    return _locate(cls, flat)[2]


def help_of(cls: type, flat: str) -> str:
    """The help text of a setting.

    Args:
        cls: the config class.
        flat: the setting's flat name.

    Returns:
        The text ("" when none is stated).
    """
    _, f, _ = _locate(cls, flat)
    return "" if f is None else f.metadata.get("help", "")


def limits_of(cls: type, flat: str) -> tuple[Optional[float], Optional[float]]:
    """The inclusive range of a setting.

    Args:
        cls: the config class.
        flat: the setting's flat name.

    Returns:
        (min, max); None for an open side.
    """
    _, f, _ = _locate(cls, flat)
    return (None, None) if f is None else (f.metadata.get("min"), f.metadata.get("max"))


def choices_of(cls: type, flat: str) -> Optional[tuple]:
    """The values a setting accepts.

    Args:
        cls: the config class.
        flat: the setting's flat name.

    Returns:
        The values, or None when any value of its type does.
    """
    _, f, _ = _locate(cls, flat)
    return None if f is None else f.metadata.get("choices")


def check_limits(config: Any, flats: Sequence[str]) -> None:
    """Check settings of a config against their declared limits and choices.

    Args:
        config: a config instance.
        flats: the flat names to check.

    Raises:
        ValueError: the first setting whose value is outside its inclusive range or not one of its choices,
            named with what it accepts.
    """
    values = to_flat(config)
    for flat in flats:
        value, (lo, hi), choices = values[flat], limits_of(type(config), flat), choices_of(type(config), flat)
        if choices is not None and value not in choices:
            raise ValueError(f"{flat} must be one of {', '.join(map(str, choices))}, got {value!r}")
        if value is None:
            continue
        if lo is not None and value < lo:
            raise ValueError(f"{flat} must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise ValueError(f"{flat} must be <= {hi}, got {value}")


def to_flat(config: Any) -> dict:
    """A config as flat settings.

    Args:
        config: a config instance.

    Returns:
        ``{flat name: value}`` in its table's order (copies); whole sub-configs as dicts.
    """
    out = {}
    for flat, (sub, name) in flat_table(type(config)).items():
        if sub == TOP:
            out[flat] = getattr(config, name)
        elif name == WHOLE:
            out[flat] = dataclasses.asdict(getattr(config, sub))
        else:
            out[flat] = getattr(getattr(config, sub), name)
    return copy.deepcopy(out)


def from_flat(cls: type, settings: dict, *, strict: bool = True) -> Any:
    """A config from flat settings; unset settings keep ``cls``'s defaults.

    Args:
        cls: the config class.
        settings: ``{flat name: value}``.
        strict: an unknown name raises; otherwise it is ignored (files of other versions).

    Returns:
        The config.

    Raises:
        ValueError: with ``strict``, an unknown name (the message lists the known ones).
    """
    table = flat_table(cls)
    unknown = sorted(set(settings) - set(table))
    if unknown and strict:
        raise ValueError(f"unknown setting(s) {unknown} for {cls.__name__}; known: {', '.join(table)}")
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for flat, value in settings.items():
        if flat not in table:
            continue
        sub, name = table[flat]
        if sub == TOP:
            top[name] = value
        elif name == WHOLE:
            top[sub] = value
        else:
            nested.setdefault(sub, {})[name] = value
    for sub, value in list(top.items()):
        if isinstance(value, dict) and sub in nested_names(cls):  # a whole sub-config given as a dict
            top[sub] = type(_field_default(_field(cls, sub)))(**value)
    for sub, values in nested.items():
        top[sub] = dataclasses.replace(_field_default(_field(cls, sub)), **values)
    return cls(**top)


def nested_names(cls: type) -> set[str]:
    """The fields of a config class that are sub-configs in its flat table.

    Args:
        cls: the config class.

    Returns:
        Their names.
    """
    return {sub for sub, _ in flat_table(cls).values() if sub != TOP}
