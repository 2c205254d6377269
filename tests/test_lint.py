"""The linter's rules hold (ruff, configured in pyproject.toml: function size and complexity, no access to
private members from outside, pyflakes), no module imports another's private names (ruff's rule for that,
PLC2701, is not stable yet), and no module of the core or the nodes outgrows the size limit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINTED = ("t2l_core", "nodes", "bench")
MAX_MODULE_LINES = 500  # the core's and the nodes' modules: one job each (ruff has no module-size rule)


def test_ruff_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *LINTED], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    if "No module named ruff" in proc.stderr:
        raise AssertionError("ruff is not installed: pip install -r requirements-dev.txt")
    assert proc.returncode == 0, f"ruff check {' '.join(LINTED)}:\n{proc.stdout}{proc.stderr}"


def test_modules_stay_small():
    sizes = {str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines())
             for folder in ("t2l_core", "nodes") for p in sorted((REPO / folder).rglob("*.py"))}
    too_long = {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them by job): {too_long}"


def test_no_module_imports_a_private_name():
    found = []
    for folder in LINTED:
        for p in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom):
                    found += [f"{p.relative_to(REPO)}:{node.lineno} {alias.name}" for alias in node.names
                              if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not found, f"private names imported from another module (make them public or move them): {found}"
