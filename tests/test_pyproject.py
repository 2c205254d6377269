"""pyproject.toml's [tool.comfy] is complete for the Comfy Registry: the fields ComfyUI's comfy_config (the
registry's own schema, kept in sync with comfy-cli) knows, a publisher, a display name, and an icon URL that
points at a PNG of this repository within the registry's limits (PNG/JPG/GIF/SVG, at most 800x400).
tests/nodes/test_e2e_comfyui.py also reads the file with ComfyUI's own parser."""

from __future__ import annotations

import re
import tomllib
from urllib.parse import urlparse

from PIL import Image

from conftest import REPO

#: ComfyConfig's fields in ComfyUI 0.3.64 (comfy_config/types.py: aliases, plus requires-comfyui, which
#: comfy_config/config_parser.py reads from the same table)
KNOWN = {"PublisherId", "DisplayName", "Icon", "Models", "includes", "web", "banner_url", "requires-comfyui"}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_tool_comfy_is_complete_and_known_to_the_registry():
    data = _pyproject()
    comfy = data["tool"]["comfy"]
    assert set(comfy) <= KNOWN, set(comfy) - KNOWN
    assert comfy["PublisherId"].strip() and comfy["DisplayName"].strip()
    assert comfy["requires-comfyui"].startswith(">=")
    project = data["project"]
    # the registry's node id rules: < 100 characters, letters, digits, -, _ and ., starting with a letter,
    # no two special characters in a row
    assert re.fullmatch(r"[A-Za-z](?:[A-Za-z0-9]|[-_.](?=[A-Za-z0-9]))*", project["name"]) and len(project["name"]) < 100
    assert project["urls"]["Repository"].startswith("https://github.com/")
    assert project["license"] == {"file": "LICENSE"} and (REPO / "LICENSE").is_file()


def test_the_icon_is_a_small_image_of_this_repository():
    data = _pyproject()
    icon = urlparse(data["tool"]["comfy"]["Icon"])
    assert icon.scheme == "https" and icon.netloc == "raw.githubusercontent.com"
    repo = urlparse(data["project"]["urls"]["Repository"]).path.strip("/")
    owner, name, branch, *path = icon.path.strip("/").split("/")
    assert f"{owner}/{name}" == repo and branch == "main"
    local = REPO.joinpath(*path)
    assert local.is_file(), local
    assert local.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".svg")
    with Image.open(local) as img:
        assert img.format == "PNG" and img.width <= 800 and img.height <= 400
