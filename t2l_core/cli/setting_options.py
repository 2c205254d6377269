"""Command-line options derived from the fields of a config dataclass (default, choices and help stated once in
:mod:`t2l_core.settings`), and the config that parsed options give."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..settings import choices_of, default_of, flat_table, from_flat, help_of


def add_setting(p: argparse.ArgumentParser, config_cls: type, option: str | tuple[str, ...], flat: str,
                text: str = "") -> None:
    """Add the option of one setting, with the field's default, choices and help.

    A boolean that is off by default becomes a switch; one that is on by default a ``--no-...`` switch.

    Args:
        p: the command's parser.
        config_cls: the config class the setting belongs to.
        option: the option, e.g. ``"--iters"``, or the option and its aliases (the first is shown as metavar).
        flat: the setting's flat name; the value is stored under ``args.<flat>``.
        text: the help; empty = the field's.
    """
    names = (option,) if isinstance(option, str) else tuple(option)
    default = default_of(config_cls, flat)
    text = text or help_of(config_cls, flat)
    if isinstance(default, bool):
        p.add_argument(*names, dest=flat, action="store_false" if default else "store_true", help=text)
        return
    kind = type(default) if default is not None else str
    choices = choices_of(config_cls, flat)
    shown = {"choices": list(choices)} if choices else {"metavar": names[0].lstrip("-").upper().replace("-", "_")}
    p.add_argument(*names, dest=flat, type=kind, default=default, help=f"{text} (default %(default)s)", **shown)


def add_settings(p: argparse.ArgumentParser, config_cls: type, options: Sequence[tuple]) -> None:
    """:func:`add_setting` for each setting.

    Args:
        p: the command's parser.
        config_cls: the config class.
        options: (option, flat name[, help]) tuples; the option may be a tuple of the option and its aliases.
    """
    for option in options:
        add_setting(p, config_cls, *option)


def config_from_args(config_cls: type, args: argparse.Namespace, **more):
    """The config of a command's options.

    Args:
        config_cls: the config class (with a ``validate()`` method).
        args: the parsed options; those stored under a flat setting name are used.
        **more: more flat settings.

    Returns:
        The validated config.

    Raises:
        ValueError: a setting is wrong (said before anything large is loaded).
    """
    names = flat_table(config_cls)
    config = from_flat(config_cls, {**{k: v for k, v in vars(args).items() if k in names}, **more})
    config.validate()  # fail before loading anything large
    return config
