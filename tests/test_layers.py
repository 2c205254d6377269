"""Layer rules of the code base, read from the source (every import, including those inside functions):

- nothing in ``t2l_core`` imports ComfyUI;
- the method packages (``clip``, ``edit``, ``image``, ``nla``, ``video``) never import ``t2l_core.runtime``
  (how a step is computed stays a separate layer);
- ``nodes/`` reach the core only through its public API, ``t2l_core.api``;
- no import cycle between the core's parts (its sub-packages and top-level modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

COMFY_MODULES = {"comfy", "comfy_extras", "comfy_api", "comfy_execution", "folder_paths", "server", "execution",
                 "nodes", "node_helpers", "latent_preview"}
METHOD_PACKAGES = ("clip", "edit", "image", "nla", "video")
PACK = "<pack>"  # the repository root is a package (ComfyUI imports the pack by its folder name)


def imports_of(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, dotted target) of every import in ``path`` (relative imports resolved; the repository root is the
    pack's package, left out of the names): ``import a.b`` gives ``a.b``; ``from a import b, c`` gives ``a``,
    ``a.b`` and ``a.c`` (b may be a module); a bare ``import t2l_core`` gives ``t2l_core.*``. ``text``: the
    source to read instead of the file's."""
    package = [PACK] + list(path.relative_to(REPO).parent.parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name if a.name != "t2l_core" else "t2l_core.*") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{a.name}") for a in node.names]
    prefix = PACK + "."
    return [(line, m[len(prefix):] if m.startswith(prefix) else m) for line, m in found]


def sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def violations(folder: str, bad) -> list[str]:
    """``file:line imports module`` for each import line of ``folder`` whose target ``bad(path, module)``."""
    found: dict[str, str] = {}
    for path in sources(folder):
        for line, module in imports_of(path):
            where = f"{path.relative_to(REPO)}:{line}"
            if bad(path, module) and (where not in found or len(module) < len(found[where])):
                found[where] = module
    return sorted(f"{where} imports {module}" for where, module in found.items())


def is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_imports_are_found_wherever_they_stand_and_resolved():
    core = imports_of(REPO / "t2l_core" / "video" / "example.py", (
        "from ..runtime import fast_path\nfrom .. import runtime\nfrom .config import VideoEditConfig\n"
        "def f():\n    import comfy.utils\n"))
    assert [m for _, m in core] == ["t2l_core.runtime", "t2l_core.runtime.fast_path", "t2l_core", "t2l_core.runtime",
                                    "t2l_core.video.config", "t2l_core.video.config.VideoEditConfig", "comfy.utils"]
    node = imports_of(REPO / "nodes" / "example.py", "from ..t2l_core import api\nimport t2l_core\n")
    assert [m for _, m in node] == ["t2l_core", "t2l_core.api", "t2l_core.*"]


def test_the_core_never_imports_comfyui():
    assert violations("t2l_core", lambda p, m: m.split(".")[0] in COMFY_MODULES) == []


def test_the_method_packages_never_import_the_runtime():
    def bad(path: Path, module: str) -> bool:
        return path.relative_to(REPO / "t2l_core").parts[0] in METHOD_PACKAGES and is_under(module, "t2l_core.runtime")

    assert violations("t2l_core", bad) == []


def test_nodes_reach_the_core_only_through_its_api():
    def bad(path: Path, module: str) -> bool:
        return is_under(module, "t2l_core") and module != "t2l_core" and not is_under(module, "t2l_core.api")

    assert violations("nodes", bad) == []


def core_part(module: str) -> str | None:
    """The part of ``t2l_core`` a module belongs to: its sub-package or top-level module (None outside the core
    and for the package root, which only holds the version)."""
    parts = module.split(".")
    if parts[0] != "t2l_core" or len(parts) < 2:
        return None
    name = parts[1]
    return name if (REPO / "t2l_core" / name).is_dir() or (REPO / "t2l_core" / f"{name}.py").is_file() else None


def part_graph() -> dict[str, dict[str, str]]:
    """{part: {imported part: the first file:line that imports it}} over every import in ``t2l_core``."""
    graph: dict[str, dict[str, str]] = {}
    for path in sources("t2l_core"):
        source = core_part("t2l_core." + ".".join(path.relative_to(REPO / "t2l_core").with_suffix("").parts))
        for line, module in imports_of(path):
            target = core_part(module)
            if source and target and target != source:
                graph.setdefault(source, {}).setdefault(target, f"{path.relative_to(REPO)}:{line}")
    return graph


def cycle_in(graph: dict[str, dict[str, str]]) -> list[str]:
    """One cycle of ``graph`` as the import lines that close it, or [] when it has none (depth-first search)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        path.append(node)
        for nxt in graph.get(node, {}):
            if state.get(nxt) == "open":
                loop = path[path.index(nxt):] + [nxt]
                return [f"{a} -> {b} ({graph[a][b]})" for a, b in zip(loop, loop[1:])]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_a_cycle_is_found_with_the_lines_that_close_it():
    graph = {"edit": {"image": "edit/layer.py:31", "clip": "edit/config.py:15"}, "image": {"edit": "image/training.py:30"},
             "clip": {}}
    assert cycle_in(graph) == ["edit -> image (edit/layer.py:31)", "image -> edit (image/training.py:30)"]
    assert cycle_in({"edit": {"clip": "x"}, "clip": {}}) == []


def test_the_core_parts_import_each_other_without_a_cycle():
    graph = part_graph()
    assert "edit" in graph.get("image", {}) and "clip" in graph.get("edit", {})  # the graph sees real imports
    assert cycle_in(graph) == []
