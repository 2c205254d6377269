"""EditLayer: full-resolution inference, memory budget, save/load; the CLI commands."""

import pytest
import torch

from t2l_core.edit.layer import BYTES_PER_PIXEL, EditLayer
from t2l_core.edit.generator import build_generator

from _edit_helpers import SMALL_GENERATOR


@pytest.fixture(scope="module")
def layer_and_gen():
    g = build_generator(SMALL_GENERATOR, seed=1)
    return EditLayer(g.state_dict(), SMALL_GENERATOR, {"prompt": ["x"], "steps": 0}), g


def test_full_resolution_equals_direct_generator_pass(layer_and_gen, astronaut):
    layer, g = layer_and_gen
    img = torch.nn.functional.interpolate(astronaut, size=(150, 201), mode="bilinear")
    color, alpha = layer.predict(img)
    with torch.no_grad():
        direct = g(img)
    # channels-last inference: the same values up to float summation order (1e-3, a quarter of an 8-bit level)
    assert torch.allclose(torch.cat([color, alpha], 1), direct, rtol=0, atol=1e-3)
    out = layer.render(img)
    assert torch.allclose(out.composite, alpha * color + (1 - alpha) * img)
    assert out.rgba().shape == (1, 4, 150, 201)


def test_batches_are_processed_one_image_at_a_time(layer_and_gen):
    layer, g = layer_and_gen
    imgs = torch.rand(2, 3, 130, 140)
    color, alpha = layer.predict(imgs)
    with torch.no_grad():
        second = g(imgs[1:2])
    assert torch.allclose(alpha[1:2], second[:, 3:], rtol=0, atol=1e-3)  # as a single image would get it
    assert torch.equal(torch.cat(layer.predict(imgs[1:2]), 1), torch.cat([color[1:2], alpha[1:2]], 1))


def test_small_images_are_upscaled_for_the_pass(layer_and_gen, astronaut):
    layer, _ = layer_and_gen
    color, alpha = layer.predict(astronaut)  # 96x128 < 129
    assert color.shape == (1, 3, 96, 128) and alpha.shape == (1, 1, 96, 128)
    assert 0 <= alpha.min() and alpha.max() <= 1


def test_memory_budget_fallback_and_error(layer_and_gen):
    layer, g = layer_and_gen
    img = torch.rand(1, 3, 300, 400)
    budget = BYTES_PER_PIXEL * 200 * 260
    with pytest.warns(RuntimeWarning, match="does not fit the memory budget"):
        color, alpha = layer.predict(img, memory_budget=budget)
    assert color.shape == (1, 3, 300, 400) and layer.notes
    with pytest.raises(MemoryError, match="smaller output size"):
        layer.predict(img, memory_budget=budget, oversize="error")
    with pytest.raises(MemoryError, match="memory budget"):
        layer.predict(img, memory_budget=1000)


def test_save_load_roundtrip(layer_and_gen, tmp_path):
    layer, _ = layer_and_gen
    p = layer.save(tmp_path / "layer.safetensors")
    back = EditLayer.load(p)
    assert back.info == layer.info and back.generator_config == layer.generator_config
    x = torch.rand(1, 3, 130, 133)
    assert torch.equal(torch.cat(back.predict(x), 1), torch.cat(layer.predict(x), 1))
    with pytest.raises(FileNotFoundError):
        EditLayer.load(tmp_path / "missing.safetensors")


def test_cli_image_and_apply_layer(tiny_clip_file, tmp_path):
    import numpy as np
    from PIL import Image
    from skimage import data

    from t2l_core.cli.main import main

    src = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).convert("RGBA").resize((128, 96)).save(src)  # RGBA input is handled
    args = ["image", str(src), "--prompt", "golden astronaut", "--src-prompt", "astronaut", "--clip",
            str(tiny_clip_file), "--iters", "2", "--size", "129", "--views", "2", "--seed", "3", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    for name in ("composite.png", "edit.png", "alpha.png", "greenscreen.png"):
        a, b = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
        assert a == b, f"{name} differs between two runs with the same seed"
    assert Image.open(tmp_path / "a" / "edit.png").mode == "RGBA"
    assert Image.open(tmp_path / "a" / "composite.png").size == (128, 96)
    layer = tmp_path / "a" / "edit_layer.safetensors"
    assert main(["apply-layer", str(layer), str(src), "--device", "cpu", "--out", str(tmp_path / "c")]) == 0
    same = np.asarray(Image.open(tmp_path / "c" / "composite.png")).astype(int)
    trained = np.asarray(Image.open(tmp_path / "a" / "composite.png")).astype(int)
    assert np.abs(same - trained).max() <= 1  # same layer, same image (float rounding may flip a level)
    # empty prompt: clear error, exit code 2, nothing written
    assert main(["image", str(src), "--prompt", " ", "--clip", str(tiny_clip_file), "--out", str(tmp_path / "d")]) == 2
    assert not (tmp_path / "d").exists()
