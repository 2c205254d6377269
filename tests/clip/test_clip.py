"""CLIP layer: position-grid interpolation, token taps, text banks, file formats and loading errors."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from t2l_core.clip.loading import (ClipWeightsNotFound, build_tiny_clip, load_clip, load_clip_file, read_state_dict,
                                   save_clip)
from t2l_core.clip.model import ClipModel
from t2l_core.clip.position_grid import interpolate_pos_grid
from t2l_core.clip.templates import COMPOSITION_TEMPLATES, SCREEN_TEMPLATES, expand

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def _cubic(t: float, a: float = -0.75) -> float:
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def _reference_grid(pos: np.ndarray, g: int, rows: int, cols: int) -> np.ndarray:
    """Brute force, one token at a time: token (r, c) samples the g x g grid at the source point
    ((r + .5) / sy - .5, (c + .5) / sx - .5), sy = (rows + .1) / g, sx = (cols + .1) / g, with a
    bicubic kernel (a = -0.75) and clamped borders."""
    grid = pos.reshape(g, g, -1)
    sy, sx = (rows + 0.1) / g, (cols + 0.1) / g
    out = np.zeros((rows, cols, grid.shape[-1]))
    for r in range(rows):
        for c in range(cols):
            y = (r + 0.5) / sy - 0.5
            x = (c + 0.5) / sx - 0.5
            y0, x0 = math.floor(y), math.floor(x)
            acc = np.zeros(grid.shape[-1])
            for i in range(y0 - 1, y0 + 3):
                for j in range(x0 - 1, x0 + 3):
                    w = _cubic(y - i) * _cubic(x - j)
                    acc += w * grid[min(max(i, 0), g - 1), min(max(j, 0), g - 1)]
            out[r, c] = acc
    return out.reshape(rows * cols, -1)


def test_templates_match_the_paper():
    assert len(COMPOSITION_TEMPLATES) == 14 and len(SCREEN_TEMPLATES) == 2
    assert COMPOSITION_TEMPLATES[0] == "photo of {}." and COMPOSITION_TEMPLATES[-1] == "{}..."
    assert expand(["a", "b"], ("x {}", "{} y")) == ["x a", "a y", "x b", "b y"]


def test_position_grid_matches_brute_force_on_non_square_grid():
    torch.manual_seed(0)
    g, dim = 7, 5
    pos = torch.randn(g * g, dim, dtype=torch.float64)
    rows, cols = 6, 10  # e.g. a 192x320 view at patch 32
    got = interpolate_pos_grid(pos, rows, cols).numpy()
    ref = _reference_grid(pos.numpy(), g, rows, cols)
    assert np.abs(got - ref).max() < 1e-5
    # a transposed or stretched grid would not match the same reference
    transposed = interpolate_pos_grid(pos, rows, cols, mode="t2l-compat").numpy()
    assert np.abs(transposed - ref).max() > 1e-2
    stretched = torch.nn.functional.interpolate(pos.T.reshape(1, dim, g, g), size=(rows, cols), mode="bicubic",
                                                align_corners=False)[0].reshape(dim, -1).T.numpy()
    assert np.abs(stretched - ref).max() > 1e-3


def test_t2l_compat_reproduces_the_authors_reflow():
    torch.manual_seed(1)
    pos = torch.randn(49, 3, dtype=torch.float64)
    rows, cols = 6, 10
    compat = interpolate_pos_grid(pos, rows, cols, mode="t2l-compat")
    # the authors interpolate to a cols x rows grid and read it row-major as rows x cols
    ref_t = _reference_grid(pos.numpy(), 7, cols, rows)
    assert np.abs(compat.numpy() - ref_t).max() < 1e-5


def test_non_square_input_with_the_native_grid_is_interpolated_like_any_other():
    """A 224x250 view at patch 32 still has a 7x7 grid; as the authors, it is resampled (scale 7.1/7)."""
    torch.manual_seed(2)
    pos = torch.randn(49, 4, dtype=torch.float64)
    assert torch.equal(interpolate_pos_grid(pos, 7, 7), pos)  # square input: the stock grid
    got = interpolate_pos_grid(pos, 7, 7, square=False)
    assert np.abs(got.numpy() - _reference_grid(pos.numpy(), 7, 7, 7)).max() < 1e-5
    assert float((got - pos).abs().max()) > 1e-2


def test_clip_interpolates_for_a_non_square_image_of_the_native_grid(tiny_clip):
    x = torch.rand(1, 3, 64, 72, generator=torch.Generator().manual_seed(3))  # 4x4 patches + 8 leftover columns
    square = x[..., :64]  # the same patches, a square image
    with torch.no_grad():
        assert not torch.allclose(tiny_clip.encode_image(x), tiny_clip.encode_image(square), atol=1e-4)
        p = tiny_clip.visual.positional_embedding
        resampled = torch.cat([p[:1], interpolate_pos_grid(p[1:], 4, 4, square=False)])
        assert torch.equal(tiny_clip.position_embedding(4, 4, square=False), resampled)
        assert torch.allclose(tiny_clip.view(fused=True).encode_image(x), tiny_clip.encode_image(x), atol=1e-4)


def test_identity_at_native_size(tiny_clip):
    x = torch.rand(3, 3, tiny_clip.native_size, tiny_clip.native_size, generator=torch.Generator().manual_seed(0))
    stock = tiny_clip.model.encode_image(tiny_clip.normalize(x))
    ours = tiny_clip.encode_image(x)
    assert torch.equal(stock, ours)
    pos = tiny_clip.visual.positional_embedding
    assert torch.equal(tiny_clip.position_embedding(4, 4), pos)


def test_tokens_entering_the_last_block(tiny_clip):
    x = torch.rand(2, 3, 48, 80, generator=torch.Generator().manual_seed(0))
    emb, tokens = tiny_clip.encode_image(x, tokens_block=-1)
    assert tokens.shape == (2, 1 + 3 * 5, tiny_clip.width)
    assert emb.shape == (2, tiny_clip.embed_dim)
    # the last block applied to those tokens, then the head, gives the same embedding
    last = tiny_clip.visual.transformer.resblocks[-1]
    assert torch.allclose(tiny_clip.pool(last(tokens)), emb, atol=1e-5)
    assert torch.allclose(tiny_clip.image_tokens(x, block=-1), tokens)
    # tokens entering block 0 are the embedded patches after ln_pre
    assert torch.allclose(tiny_clip.image_tokens(x, block=0), tiny_clip.embed_patches(x))
    with pytest.raises(ValueError, match="out of range"):
        tiny_clip.image_tokens(x, block=tiny_clip.num_blocks)


def test_non_square_encoding_is_differentiable_and_sized(tiny_clip):
    x = torch.rand(1, 3, 40, 70, requires_grad=True)  # leftover pixels beyond the patch grid are dropped
    tiny_clip.encode_image(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="smaller than one CLIP patch"):
        tiny_clip.encode_image(torch.rand(1, 3, 8, 64))


def test_text_bank_order_and_cache(tiny_clip):
    bank = tiny_clip.text_bank(["oreo cake", "ice"], COMPOSITION_TEMPLATES)
    assert bank.shape == (28, tiny_clip.embed_dim)
    single = tiny_clip.encode_text(["a photo of ice."])
    assert torch.allclose(bank[14 + 2], single[0])
    assert "a photo of ice." in tiny_clip._text_cache
    assert not bank.requires_grad
    with pytest.raises(ValueError, match="empty"):
        tiny_clip.text_bank("   ", COMPOSITION_TEMPLATES)


def test_save_load_round_trip_gives_identical_embeddings(tiny_clip, tiny_clip_file):
    loaded = load_clip(str(tiny_clip_file), device="cpu")
    assert loaded.name == tiny_clip.name and loaded.patch_size == 16
    x = torch.rand(2, 3, 48, 96, generator=torch.Generator().manual_seed(3))
    assert torch.equal(loaded.encode_image(x), tiny_clip.encode_image(x))
    # text may have been encoded in a different batch in another test: equal up to batching round-off
    assert torch.allclose(loaded.encode_text(["oreo cake"]), tiny_clip.encode_text(["oreo cake"]), atol=1e-6)


def test_cli_make_tiny_clip_and_info(tmp_path):
    out = tmp_path / "x.safetensors"
    env_cmd = [sys.executable, "-m", "t2l_core"]
    r = subprocess.run(env_cmd + ["make-tiny-clip", str(out), "--patch-size", "8"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    assert "NOT A REAL MODEL" in r.stdout
    r = subprocess.run(env_cmd + ["clip-info", str(out)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert '"architecture": "tiny-vit-p8"' in r.stdout and '"patch_size": 8' in r.stdout
    a = load_clip(str(out), device="cpu")
    b = build_tiny_clip(patch_size=8, seed=0)
    x = torch.rand(1, 3, 40, 24)
    assert torch.equal(a.encode_image(x), b.encode_image(x))


def _openai_like_state_dict() -> tuple[dict, "ClipModel"]:
    """A tiny CLIP whose widths follow OpenAI's 64-wide heads, as an OpenAI-layout state dict."""
    clip = build_tiny_clip(patch_size=16, seed=5, width=128, text_width=64)
    # OpenAI head width is 64: rebuild with that head width so the inferred config matches
    from t2l_core.clip.architectures import build_model
    from t2l_core.clip.tiny import tiny_clip_config

    cfg = tiny_clip_config(patch_size=16, width=128, text_width=64)
    cfg["vision_cfg"]["head_width"] = 64
    cfg["text_cfg"]["heads"] = 1
    cfg["quick_gelu"] = True
    torch.manual_seed(5)
    model = build_model(cfg)
    sd = dict(model.state_dict())
    sd.pop("attn_mask", None)
    sd["input_resolution"] = torch.tensor(64)
    sd["context_length"] = torch.tensor(77)
    sd["vocab_size"] = torch.tensor(49408)
    del clip
    return sd, model


def test_openai_state_dict_pt_loads_with_quickgelu(tmp_path):
    sd, model = _openai_like_state_dict()
    path = tmp_path / "ViT-tiny.pt"
    torch.save(sd, path)
    clip = load_clip_file(path, device="cpu")
    assert clip.pretrained == "openai" and clip.config["quick_gelu"] is True
    x = torch.rand(1, 3, 64, 64)
    ref = model.eval().encode_image(clip.normalize(x))
    assert torch.allclose(clip.encode_image(x), ref, atol=1e-5)


def test_openai_torchscript_archive_loads(tmp_path):
    sd, model = _openai_like_state_dict()

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    holder = torch.jit.script(Holder())
    path = tmp_path / "ViT-script.pt"
    holder.save(str(path))
    sd2, meta = read_state_dict(path)
    assert meta.get("openai") == "1"
    assert any(k.endswith("visual.conv1.weight") for k in sd2)


def test_pickled_object_in_pt_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed!",))

    path = tmp_path / "evil.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1), "payload": Evil()}, path)
    with pytest.raises(ValueError, match="refusing to load"):
        load_clip_file(path, "ViT-B-32", device="cpu")


def test_bare_state_dict_needs_architecture(tmp_path, tiny_clip):
    from safetensors.torch import save_file

    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match="architecture"):
        load_clip_file(path, device="cpu")
    with pytest.raises(ValueError, match="does not match the ViT-B-32"):
        load_clip_file(path, "ViT-B-32", device="cpu")


def test_missing_weights_message_names_searched_folders(tmp_path, monkeypatch):
    a, b = tmp_path / "models_a", tmp_path / "models_b"
    with pytest.raises(ClipWeightsNotFound) as exc:
        load_clip("ViT-B-32:openai", search_dirs=[a, b], allow_download=False)
    msg = str(exc.value)
    assert str(a) in msg and str(b) in msg
    assert "ViT-B-32.pt" in msg and f"into {a}" in msg
    with pytest.raises(ClipWeightsNotFound, match=str(b / "nothing.safetensors").replace("\\", "\\\\")):
        load_clip("nothing.safetensors", search_dirs=[a, b])
    with pytest.raises(ValueError, match="unknown CLIP architecture"):
        load_clip("ViT-Q-99:openai", search_dirs=[a])


def test_local_folder_is_searched_for_arch_and_tag(tmp_path, tiny_clip):
    folder = tmp_path / "models"
    save_clip(tiny_clip, folder / "ViT-B-32-openai.safetensors")  # our format: the config travels with it
    clip = load_clip("ViT-B-32:openai", search_dirs=[folder], allow_download=False)
    assert clip.patch_size == tiny_clip.patch_size


def test_a_bare_file_named_after_its_pretrained_pair_needs_no_architecture(tmp_path, tiny_clip):
    """The example workflows download OpenAI's ViT-B/32 (open_clip layout, no config inside) as
    ViT-B-32-openai.safetensors: the name says which architecture reads it (the QuickGELU one)."""
    from safetensors.torch import save_file

    from t2l_core.clip.search import file_name_architecture

    assert file_name_architecture("ViT-B-32-openai.safetensors") == "ViT-B-32-quickgelu"
    assert file_name_architecture("models/ViT-B-16-laion2b_s34b_b88k.bin") == "ViT-B-16"
    assert file_name_architecture("bare.safetensors") is None and file_name_architecture("ViT-B-32-openai.txt") is None
    path = tmp_path / "ViT-B-32-openai.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_clip.model.state_dict().items()}, str(path))
    # tiny weights under that name: read as ViT-B-32-quickgelu (so they do not fit), not "give the architecture"
    with pytest.raises(ValueError, match="does not match the ViT-B-32-quickgelu architecture"):
        load_clip_file(path, device="cpu")
