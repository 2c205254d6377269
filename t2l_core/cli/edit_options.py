"""Command-line options of the edit commands, derived from the config fields (default, help, choices) through
:mod:`t2l_core.cli.setting_options`: the image and video commands share them and state no default of their own."""

from __future__ import annotations

import argparse

from ..settings import help_of
from .clip_commands import add_clip_arguments
from .setting_options import add_setting

#: (option, flat setting name) of the settings both edit commands offer, in --help order
SHARED_SETTINGS = (
    ("--iters", "iters"), ("--seed", "seed"), ("--views", "n_views"),
    ("--lambda-composition", "lambda_composition"), ("--lambda-screen", "lambda_screen"),
    ("--lambda-structure", "lambda_structure"), ("--sparsity-l1", "sparsity_l1"),
    ("--sparsity-l0", "sparsity_l0"), ("--lambda-bootstrap", "lambda_bootstrap"),
)


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
