"""Screenshots of the example workflows in ComfyUI's real frontend: the template thumbnails
(example_workflows/<name>.jpg, what the template browser shows) and the README pictures
(docs/images/workflow_<name>.jpg).

    python docs/make_workflow_pictures.py http://127.0.0.1:8188

Needs a running ComfyUI with this pack installed, Playwright and Chromium (see tests/comfy_frontend.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import comfy_frontend as cf  # noqa: E402

#: browser window -> canvas size: (1400, 779) gives the 1360x739 thumbnails, (1760, 1000) the 1696x922 pictures
SIZES = {"thumbnail": (1400, 779), "readme": (1760, 1000)}


def main(url: str) -> None:
    workflows = sorted((REPO / "example_workflows").glob("*.json"))
    for kind, (width, height) in SIZES.items():
        with cf.comfy_page(url, width=width, height=height) as page:
            # open workflows are listed in the sidebar, not as tabs over the canvas
            page.evaluate("async () => { await window.app.extensionManager.setting.set("
                          "'Comfy.Workflow.WorkflowTabsPosition', 'Sidebar'); }")
            for path in workflows:
                cf.load_workflow(page, json.loads(path.read_text()))
                missing = cf.missing_node_types(page)
                if missing:
                    raise SystemExit(f"{path.name}: the frontend does not know {missing}")
                cf.fit_view(page)
                out = path.with_suffix(".jpg") if kind == "thumbnail" else \
                    REPO / "docs" / "images" / f"workflow_{path.stem}.jpg"
                cf.screenshot_canvas(page, out)
                print("wrote", out.relative_to(REPO))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188")
