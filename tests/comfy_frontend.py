"""Drive the real ComfyUI web frontend in headless Chromium (Playwright + Debian's chromium): load a
UI-format workflow, let the frontend convert it to an API prompt, and take screenshots of the graph.

Used by tests/nodes/test_e2e_comfyui.py (opt-in) and to make the workflow thumbnails and README pictures:

    python tests/comfy_frontend.py http://127.0.0.1:8199 example_workflows/image_edit.json shot.png

Needs ``pip install playwright`` (its own browser download is NOT needed: Debian's /usr/bin/chromium is used).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional

CHROMIUM = os.environ.get("T2L_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def available() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists()


@contextlib.contextmanager
def comfy_page(url: str, width: int = 1600, height: int = 1000) -> Iterator[object]:
    """A Playwright page with the ComfyUI frontend loaded and its app ready."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="t2l-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": width, "height": height}, device_scale_factor=1)
            try:
                page = ctx.new_page()
                page.goto(url, wait_until="domcontentloaded", timeout=60_000)
                page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=60_000)
                page.wait_for_timeout(1500)
                page.keyboard.press("Escape")  # close a first-run dialog, if any
                page.evaluate("""async () => { const s = window.app.extensionManager?.setting;
                    if (!s) return;
                    for (const [k, v] of [['Comfy.Minimap.Visible', false], ['Comfy.Graph.CanvasInfo', false],
                                         ['LiteGraph.Canvas.MinFontSizeForLOD', 1]]) {
                        try { await s.set(k, v); } catch (e) {} } }""")
                yield page
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def load_workflow(page, ui: dict) -> None:
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf, true, true, null); }", ui)
    page.wait_for_timeout(800)
    page.keyboard.press("Escape")


def missing_models_dialog(page, ui: dict) -> str:
    """Load ``ui`` with the frontend's missing-models warning on and return the text of the dialogs it opens
    ("" when none: every model the nodes' ``properties.models`` name is in its folder), then close them."""
    page.evaluate("async () => { await window.app.extensionManager.setting.set("
                  "'Comfy.Workflow.ShowMissingModelsWarning', true); }")
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf, true, true, null); }", ui)
    page.wait_for_timeout(1500)
    text = page.evaluate("() => Array.from(document.querySelectorAll('.p-dialog')).map(d => d.innerText).join('\\n')")
    page.keyboard.press("Escape")
    page.wait_for_timeout(300)
    return text


def missing_node_types(page) -> list[str]:
    """Node types in the loaded graph the frontend does not know (what it would show as red 'missing')."""
    return page.evaluate(
        "() => window.app.graph._nodes.filter(n => !(n.type in LiteGraph.registered_node_types))"
        ".map(n => n.type).filter(t => !['Note','MarkdownNote','Reroute','PrimitiveNode'].includes(t))")


def new_node_controls(page, node_types: list[str]) -> list:
    """The seed control a freshly created node of each type starts with (as when a user adds it)."""
    return page.evaluate("""(types) => types.map((t) => {
        const n = LiteGraph.createNode(t);
        const w = (n.widgets || []).find((w) => w.name === "control_after_generate");
        return w ? w.value : null; })""", node_types)


def frontend_prompt(page) -> dict:
    """The API prompt the frontend would send to /prompt for the loaded graph (``app.graphToPrompt``)."""
    return page.evaluate("async () => (await window.app.graphToPrompt()).output")


def serialized_workflow(page) -> dict:
    return page.evaluate("() => window.app.graph.serialize()")


def fit_view(page, nodes: Optional[list] = None) -> None:
    """Fit the whole graph (or the given node ids) into the canvas."""
    page.evaluate("""(ids) => {
        const c = window.app.canvas; const g = window.app.graph;
        c.low_quality_zoom_threshold = 0.1; c.low_quality = false;
        let ns = g._nodes.filter(n => !ids || ids.includes(n.id));
        let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
        for (const n of ns) { x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 40);
                              x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]); }
        for (const gr of (g._groups || [])) { const b = gr._bounding || gr.bounding;
            if (!ids) { x0 = Math.min(x0, b[0]); y0 = Math.min(y0, b[1]); x1 = Math.max(x1, b[0] + b[2]); y1 = Math.max(y1, b[1] + b[3]); } }
        const r = c.canvas.getBoundingClientRect(); const W = r.width, H = r.height - 50;  // tab bar on top
        const s = Math.min(W / (x1 - x0 + 40), H / (y1 - y0 + 40));
        c.ds.scale = s;
        c.ds.offset[0] = -x0 + (W / s - (x1 - x0)) / 2;
        c.ds.offset[1] = -y0 + 50 / s + (H / s - (y1 - y0)) / 2;
        c.setDirty(true, true); c.draw(true, true);
    }""", nodes)
    page.wait_for_timeout(500)


def screenshot_canvas(page, path: str | Path, quality: int = 80) -> None:
    """Screenshot of the graph canvas only (JPEG if the name ends in .jpg)."""
    path = Path(path)
    kind = "jpeg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    el = page.locator("canvas#graph-canvas")
    opts = {"path": str(path), "type": kind}
    if kind == "jpeg":
        opts["quality"] = quality
    el.screenshot(**opts)


def main(argv: list[str]) -> None:
    url, wf_path, out = argv[0], argv[1], argv[2]
    ui = json.loads(Path(wf_path).read_text())
    with comfy_page(url) as page:
        load_workflow(page, ui)
        print("missing:", missing_node_types(page))
        fit_view(page)
        screenshot_canvas(page, out)
        print(json.dumps(frontend_prompt(page))[:2000])


if __name__ == "__main__":
    main(sys.argv[1:])
