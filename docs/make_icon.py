"""The pack's icon (assets/icon.png, named by pyproject's [tool.comfy] Icon): the edited background atlas of
docs/images/nla_atlas_edit.jpg around its Text2LIVE badge, 256x256 (the registry takes PNG up to 800x400).

    python docs/make_icon.py
"""

from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    atlas = Image.open(REPO / "docs" / "images" / "nla_atlas_edit.jpg").convert("RGB")
    badge = atlas.crop((652, 38, 908, 256))  # the edited atlas below its caption
    icon = Image.new("RGB", (256, 256), (24, 24, 24))
    icon.paste(badge, (0, (256 - badge.height) // 2))
    icon.save(REPO / "assets" / "icon.png", optimize=True)


if __name__ == "__main__":
    main()
