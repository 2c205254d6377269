"""Command line: ``python -m t2l_core <command>`` (also installed as ``t2l``).

Each feature module registers its own subcommands through ``register(subparsers)``; the list below is
the only place that names them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    ".clip_commands",
    ".edit_commands",
    ".atlas_commands",
    ".video_edit_commands",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``t2l`` parser with every module's subcommands."""
    parser = argparse.ArgumentParser(prog="t2l", description="Text2LIVE: text-driven layered image and video editing.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name, __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command.

    Args:
        argv: the arguments; None = ``sys.argv[1:]``.

    Returns:
        The exit status: 0, or 2 after printing an error (bad ``--device``, a missing file, a bad value).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "device", None) is not None:  # every command that computes takes --device
        from ..device import resolve_device

        try:
            resolve_device(args.device)
        except (ValueError, RuntimeError) as exc:
            print(f"error: --device {args.device}: {exc}", file=sys.stderr)
            return 2
    try:
        result = args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)
