"""Shared by the bench scripts: print a table and append it to bench/RESULTS.md with the command used."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: t2l_core

from t2l_core.device import cpu_name  # noqa: E402

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine_line() -> str:
    cpu = cpu_name()
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {torch.get_num_threads()} threads, {dev}, torch {torch.__version__}, "
            f"CPU capability {torch.backends.cpu.get_cpu_capability()}")


def table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def publish(title: str, body: str, notes: str = "") -> None:
    """Print ``body`` and append a section to bench/RESULTS.md naming the exact command."""
    cmd = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0].replace(str(Path.cwd()) + "/", "")] + sys.argv[1:])
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = f"\n## {title}\n\n`{cmd}` ({stamp}; {machine_line()})\n\n{body}\n"
    if notes:
        section += f"\n{notes}\n"
    print(section)
    with RESULTS.open("a") as f:
        f.write(section)


def add_no_write_option(ap) -> None:
    """``--no-write``: print the tables only (smoke runs); RESULTS.md stays untouched."""
    ap.add_argument("--no-write", action="store_true", help="print only (smoke runs); RESULTS.md untouched")


def parse_bench_args(parser):
    """Parse a bench's command line: ``--no-write`` applied, and ``--threads`` (when the bench has it and it is
    above 0) set as torch's intra-op threads. Returns the parsed arguments."""
    args = parser.parse_args()
    apply_no_write(args)
    if getattr(args, "threads", 0) and args.threads > 0:
        torch.set_num_threads(args.threads)
    return args


def apply_no_write(args) -> None:
    global RESULTS
    if getattr(args, "no_write", False):
        RESULTS = Path(os.devnull)


def fresh_process_row(script: str, worker_args: list) -> dict:
    """Run ``script`` again in a fresh process (so its peak RSS is its own) with ``worker_args``, a
    ``--result-file`` and this command line's arguments; returns the JSON dict the worker wrote there
    (:func:`write_row`). A failed worker ends the bench (SystemExit naming ``worker_args``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "row.json")
        cmd = [sys.executable, os.path.abspath(script)] + list(worker_args) + ["--result-file", out] + sys.argv[1:]
        proc = subprocess.run(cmd)
        if proc.returncode != 0 or not os.path.isfile(out):
            raise SystemExit(f"{' '.join(worker_args)} failed (exit {proc.returncode})")
        with open(out) as f:
            return json.load(f)


def write_row(path: str, row: dict) -> None:
    """A worker's result for :func:`fresh_process_row`."""
    with open(path, "w") as f:
        json.dump(row, f)
