"""The pack imports like ComfyUI imports it (no ComfyUI installed), and the CLIP nodes work as plain classes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import REPO


def test_pack_imports_without_comfyui_and_lists_node_ids(pack):
    assert "comfy" not in sys.modules and "folder_paths" not in sys.modules
    ids = set(pack.NODE_CLASS_MAPPINGS)
    assert {"T2L_LoadCLIP", "T2L_RelevancyMap"} <= ids
    assert all(i.startswith("T2L_") for i in ids)
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == ids
    assert not pack.nodes.IMPORT_ERRORS, pack.nodes.IMPORT_ERRORS


def test_pack_import_in_a_fresh_interpreter():
    code = (
        "import importlib.util, sys;"
        f"spec = importlib.util.spec_from_file_location('custom_nodes_x_text2live', r'{REPO / '__init__.py'}',"
        f" submodule_search_locations=[r'{REPO}']);"
        "m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m; spec.loader.exec_module(m);"
        "print(sorted(m.NODE_CLASS_MAPPINGS))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert "T2L_LoadCLIP" in r.stdout


def test_core_never_imports_comfyui():
    for path in (REPO / "t2l_core").rglob("*.py"):
        text = path.read_text()
        for banned in ("import comfy", "from comfy", "import folder_paths", "from folder_paths"):
            assert banned not in text, f"{path} imports ComfyUI ({banned})"


def test_every_node_is_documented(pack):
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert cls.DESCRIPTION and cls.CATEGORY.startswith("Text2LIVE"), node_id
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS), node_id
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                assert len(entry) == 2 and entry[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert callable(getattr(cls, cls.FUNCTION)), node_id


@pytest.fixture()
def models_dir(tmp_path, monkeypatch, tiny_clip):
    from t2l_core.clip.loading import save_clip

    folder = tmp_path / "text2live"
    save_clip(tiny_clip, folder / "tiny.safetensors", note="tiny")
    monkeypatch.setenv("T2L_MODELS_DIR", str(folder))
    return folder


def test_load_clip_node_lists_files_and_loads(pack, models_dir):
    LoadCLIP = pack.NODE_CLASS_MAPPINGS["T2L_LoadCLIP"]
    choices = LoadCLIP.INPUT_TYPES()["required"]["model"][0]
    assert choices[0] == "tiny.safetensors" and "ViT-B-32:openai" in choices
    assert LoadCLIP.VALIDATE_INPUTS("tiny.safetensors") is True
    (clip,) = LoadCLIP().load("tiny.safetensors", "cpu", "fp32")
    assert clip.patch_size == 16 and not any(p.requires_grad for p in clip.model.parameters())
    # built under inference mode (as ComfyUI runs nodes), the weights still allow backprop
    with torch.inference_mode():
        (clip2,) = LoadCLIP().load("tiny.safetensors", "cpu", "fp32")
    x = torch.rand(1, 3, 32, 48, requires_grad=True)
    clip2.encode_image(x).sum().backward()
    assert x.grad is not None


def test_load_clip_node_validation_messages(pack, models_dir, monkeypatch):
    LoadCLIP = pack.NODE_CLASS_MAPPINGS["T2L_LoadCLIP"]
    msg = LoadCLIP.VALIDATE_INPUTS("missing.safetensors")
    assert isinstance(msg, str) and str(models_dir) in msg
    with pytest.raises(ValueError, match="fp16"):
        LoadCLIP().load("tiny.safetensors", device="cpu", precision="fp16")
    monkeypatch.setattr(pack.nodes.clip_nodes, "weights_obtainable", lambda a, t: False)
    msg = LoadCLIP.VALIDATE_INPUTS("ViT-B-32:openai")
    assert isinstance(msg, str) and str(models_dir) in msg and "ViT-B-32.pt" in msg


def test_relevancy_node_shapes_and_errors(pack, tiny_clip, astronaut):
    RelevancyMap = pack.NODE_CLASS_MAPPINGS["T2L_RelevancyMap"]
    image = astronaut.permute(0, 2, 3, 1).repeat(2, 1, 1, 1)  # IMAGE [2,H,W,3]
    with torch.inference_mode():  # ComfyUI's executor runs nodes in inference mode
        mask, heat = RelevancyMap().run(tiny_clip, image, "astronaut")
    assert mask.shape == (2, 96, 128) and heat.shape == (2, 96, 128, 3)
    assert mask.min() >= 0 and mask.max() <= 1 and torch.isclose(mask.amax(), torch.tensor(1.0))
    assert torch.allclose(mask[0], mask[1], atol=1e-5)
    with pytest.raises(ValueError, match="empty"):
        RelevancyMap().run(tiny_clip, image, "  ")
    with pytest.raises(ValueError, match="blocks"):  # within the widget's range, beyond this CLIP's depth
        RelevancyMap().run(tiny_clip, image, "x", layers=tiny_clip.num_blocks + 1)
    with pytest.raises(ValueError, match="layers: 99 is out of range; use 1..48"):  # the widget's declared range
        RelevancyMap().run(tiny_clip, image, "x", layers=99)
