"""Layer rules of the code base, read from the source (every import, including those inside functions):

- nothing in ``t2l_core`` imports ComfyUI;
- the method packages (``clip``, ``edit``, ``image``, ``nla``, ``video``) never import ``t2l_core.runtime``
  (how a step is computed stays a separate layer);
- ``nodes/`` reach the core only through its public API, ``t2l_core.api``.
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
