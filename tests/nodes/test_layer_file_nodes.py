"""Save Edit Layer -> Load Edit Layer -> Apply Edit Layer reproduces the trained result; files that are not
layers are refused with a message naming the file; the CLI reads what the node writes."""

from __future__ import annotations

import inspect
import sys

import pytest
import torch
from safetensors.torch import save_file


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside ComfyUI, outputs go to ./t2l_outputs/text2live
    return tmp_path


@pytest.fixture(scope="module")
def trained(pack, tiny_clip, astronaut):
    """Train Edit Layer (node class) at tiny settings on the astronaut photo: (image IMAGE, outputs)."""
    train = pack.NODE_CLASS_MAPPINGS["T2L_TrainEditLayer"]()
    image = astronaut.permute(0, 2, 3, 1).contiguous()  # IMAGE [1,96,128,3]
    with torch.inference_mode():  # ComfyUI's executor runs nodes in inference mode
        out = train.train(tiny_clip, image, "golden astronaut", iterations=2, size=129, seed=3, views=2,
                          resume=False)
    return image, out


def _nodes(pack):
    return sys.modules[pack.__name__ + ".nodes.layer_file_nodes"]


def test_save_load_apply_reproduces_the_trained_composite(pack, trained, in_tmp):
    image, (composite, edit, opacity, _green, layer) = trained
    lf = _nodes(pack)
    saved = lf.SaveEditLayer().save(layer, "cat/leopard")
    (path,) = saved["result"]
    assert saved["ui"]["text"] == [path]
    assert path.endswith("cat/leopard_00001.safetensors") and (lf.layers_dir() / "cat/leopard_00001.safetensors").is_file()
    # listed for loading (the list is rebuilt on every INPUT_TYPES call, which ComfyUI's refresh makes)
    choices = lf.LoadEditLayer.INPUT_TYPES()["required"]["file"][0]
    assert choices == ["cat/leopard_00001.safetensors"]
    assert lf.LoadEditLayer.VALIDATE_INPUTS(choices[0]) is True
    (loaded,) = lf.LoadEditLayer().load(choices[0])
    apply = pack.NODE_CLASS_MAPPINGS["T2L_ApplyEditLayer"]()
    with torch.inference_mode():
        comp2, edit2, opacity2, _ = apply.apply(loaded, image)
    assert float((comp2 - composite).abs().max()) <= 1 / 255
    assert float((edit2 - edit).abs().max()) <= 1 / 255
    assert float((opacity2 - opacity).abs().max()) <= 1 / 255
    assert loaded.info == layer.info
    # a second save does not overwrite the first
    (path2,) = lf.SaveEditLayer().save(layer, "cat/leopard")["result"]
    assert path2.endswith("leopard_00002.safetensors")


def test_cli_apply_layer_reads_the_node_file(pack, trained, in_tmp):
    from t2l_core.cli.main import main
    from t2l_core.io.image_files import save_png

    from t2l_core.io.image_files import load_image

    image, (*_outputs, layer) = trained
    (path,) = _nodes(pack).SaveEditLayer().save(layer, "edit_layer")["result"]
    save_png(image[0].permute(2, 0, 1), in_tmp / "photo.png")
    assert main(["apply-layer", path, str(in_tmp / "photo.png"), "--device", "cpu", "--out", str(in_tmp / "out")]) == 0
    cli = load_image(in_tmp / "out" / "composite.png")  # [1,3,H,W], 8-bit PNG
    photo = load_image(in_tmp / "photo.png").permute(0, 2, 3, 1)  # the same 8-bit input, as an IMAGE
    with torch.inference_mode():
        (node, *_rest) = pack.NODE_CLASS_MAPPINGS["T2L_ApplyEditLayer"]().apply(layer, photo)
    assert float((cli[0].permute(1, 2, 0) - node[0]).abs().max()) <= 1 / 255 + 1e-6


def test_files_that_are_not_layers_are_refused_naming_the_file(pack, tiny_clip, in_tmp):
    from t2l_core.clip.loading import save_clip

    lf = _nodes(pack)
    d = lf.layers_dir()
    (d / "empty.safetensors").write_bytes(b"")
    save_file({"w": torch.zeros(64)}, str(d / "full.safetensors"), metadata={"format": "t2l_edit_layer/1"})
    (d / "truncated.safetensors").write_bytes((d / "full.safetensors").read_bytes()[:60])
    save_clip(tiny_clip, d / "clip.safetensors")
    cases = {"empty.safetensors": "empty", "truncated.safetensors": "truncated",
             "clip.safetensors": "not a Text2LIVE edit layer", "gone.safetensors": "not found"}
    for name, problem in cases.items():
        msg = lf.LoadEditLayer.VALIDATE_INPUTS(name)
        assert isinstance(msg, str), name
        assert name in msg and problem in msg, msg
        assert "output/text2live/layers" in msg and "press R" in msg, msg  # where to look, in ComfyUI's words
        assert "SafetensorError" not in msg
    assert "Save Edit Layer" in lf.LoadEditLayer.VALIDATE_INPUTS(lf.NONE_SAVED)
    assert "not inside" in lf.LoadEditLayer.VALIDATE_INPUTS("../../escape.safetensors")
    # one argument: ComfyUI shows a VALIDATE_INPUTS message once per argument
    assert list(inspect.signature(lf.LoadEditLayer.VALIDATE_INPUTS).parameters) == ["file"]


def test_cli_names_the_layer_file_and_the_argument(tmp_path, capsys):
    from t2l_core.cli.main import main

    bad = tmp_path / "edit_layer.safetensors"
    bad.write_bytes(b"\x08\x00")
    assert main(["apply-layer", str(bad), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "LAYER" in err and "header" in err
