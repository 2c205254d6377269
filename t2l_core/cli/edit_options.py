"""Command-line options of the edit commands, derived from the config fields (default, help, choices):
the image and video commands share them and state no default of their own."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..settings import choices_of, default_of, help_of
from .clip_commands import add_clip_arguments

#: (option, flat setting name) of the settings both edit commands offer, in --help order
SHARED_SETTINGS = (
    ("--iters", "iters"), ("--seed", "seed"), ("--views", "n_views"),
    ("--lambda-composition", "lambda_composition"), ("--lambda-screen", "lambda_screen"),
    ("--lambda-structure", "lambda_structure"), ("--sparsity-l1", "sparsity_l1"),
    ("--sparsity-l0", "sparsity_l0"), ("--lambda-bootstrap", "lambda_bootstrap"),
)


def add_setting(p: argparse.ArgumentParser, config_cls: type, option: str, flat: str, text: str = "") -> None:
    """Add the option of one setting, with the field's default, choices and help.

    A boolean that is off by default becomes a switch; one that is on by default a ``--no-...`` switch.

    Args:
        p: the command's parser.
        config_cls: the config class the setting belongs to.
        option: the option, e.g. ``"--iters"``.
        flat: the setting's flat name; the value is stored under ``args.<flat>``.
        text: the help; empty = the field's.
    """
    default = default_of(config_cls, flat)
    text = text or help_of(config_cls, flat)
    if isinstance(default, bool):
        p.add_argument(option, dest=flat, action="store_false" if default else "store_true", help=text)
        return
    kind = type(default) if default is not None else str
    choices = choices_of(config_cls, flat)
    shown = {"choices": list(choices)} if choices else {"metavar": option.lstrip("-").upper().replace("-", "_")}
    p.add_argument(option, dest=flat, type=kind, default=default, help=f"{text} (default %(default)s)", **shown)


def add_settings(p: argparse.ArgumentParser, config_cls: type, options: Sequence[tuple[str, ...]]) -> None:
    """:func:`add_setting` for each setting.

    Args:
        p: the command's parser.
        config_cls: the config class.
        options: (option, flat name[, help]) tuples.
    """
    for option in options:
        add_setting(p, config_cls, *option)


def add_prompt_arguments(p: argparse.ArgumentParser, config_cls: type, roi_help: str) -> None:
    """``--prompt`` (required), ``--screen-prompt``, ``--src-prompt``, ``--roi-prompt`` and the CLIP options.

    Args:
        p: the command's parser.
        config_cls: the config class whose field help the options show.
        roi_help: the help of ``--roi-prompt``.
    """
    p.add_argument("--prompt", required=True, help=help_of(config_cls, "prompt"))
    p.add_argument("--screen-prompt", dest="screen_prompt", default=None, help=help_of(config_cls, "screen_prompt"))
    p.add_argument("--src-prompt", "--source-prompt", dest="source_prompt", default=None,
                   help=help_of(config_cls, "source_prompt"))
    p.add_argument("--roi-prompt", "--roi-text", dest="roi_text", default=None, help=roi_help)
    add_clip_arguments(p)


def add_run_arguments(p: argparse.ArgumentParser, config_cls: type, same_inputs: str, default_checkpoint: str) -> None:
    """``--save-memory``, the checkpoint options and the console output options of a training command.

    Args:
        p: the command's parser.
        config_cls: the config class.
        same_inputs: what must match for ``--resume``, in the help's words (e.g. ``"image"``).
        default_checkpoint: the default checkpoint path, as the help shows it.
    """
    add_setting(p, config_cls, "--save-memory", "save_memory")
    p.add_argument("--checkpoint", default=None, help=f"checkpoint file (default: {default_checkpoint})")
    p.add_argument("--resume", action="store_true",
                   help=f"continue from the checkpoint if a cancelled run with the same {same_inputs}, settings, "
                        "--iters and CLIP left it (another run's checkpoint is not used: training starts over)")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the checkpoint when the run finishes (default: only a cancelled or failed run leaves one)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--quiet", action="store_true")


def config_from_args(config_cls: type, args: argparse.Namespace, **more):
    """The config of a command's options.

    Args:
        config_cls: the config class.
        args: the parsed options; those stored under a flat setting name are used.
        **more: more flat settings.

    Returns:
        The validated config.

    Raises:
        ValueError: a setting is wrong (said before anything large is loaded).
    """
    names = config_cls.FLAT
    config = config_cls.from_flat({k: v for k, v in vars(args).items() if k in names}, **more)
    config.validate()  # fail before loading anything large
    return config


def checkpoint_from_args(args: argparse.Namespace, default_path):
    """The checkpoint file of a training command.

    Args:
        args: the parsed options.
        default_path: called for the path when ``--checkpoint`` is not given.

    Returns:
        The path.
    """
    from pathlib import Path

    return Path(args.checkpoint) if args.checkpoint else default_path()


def console_hooks(args: argparse.Namespace, phases: bool = False):
    """Progress printed every ``--log-every`` steps (and, with ``phases``, on every phase) unless ``--quiet``.

    Args:
        args: the parsed options.
        phases: also print each phase (atlas sampling, rendering).

    Returns:
        The :class:`t2l_core.progress.Hooks`.
    """
    from ..progress import Hooks, console_phase_printer, console_printer

    if args.quiet:
        return Hooks()
    return Hooks(on_step=console_printer(args.log_every), on_phase=console_phase_printer() if phases else None)
