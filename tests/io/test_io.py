"""io/: safetensors files written atomically and read back exactly, PNG frames and RGBA images round-tripped at
8 bits, and input checks that name the input."""

from __future__ import annotations

import pytest
import torch

from t2l_core.io.input_checks import require_finite
from t2l_core.io.safetensors_files import UnreadableFile, read_metadata, read_tensors, write_tensors
from t2l_core.io.video_files import read_frames, read_rgba, write_frames, write_rgba


def test_safetensors_round_trip_is_exact_and_leaves_no_partial_file(tmp_path):
    tensors = {"a": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)), "b": torch.arange(5)}
    path = write_tensors(tmp_path / "sub" / "x.safetensors", tensors, {"k": "v"})
    got, meta = read_tensors(path, "test")
    assert meta == {"k": "v"} and read_metadata(path, "test") == {"k": "v"}
    assert all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert [p.name for p in path.parent.iterdir()] == ["x.safetensors"]
    path.write_bytes(path.read_bytes()[:20])  # cut short
    with pytest.raises(UnreadableFile, match="x.safetensors.*Fit again"):
        read_tensors(path, "test", "Fit again.")


def test_frames_and_rgba_round_trip_at_8_bits(tmp_path):
    frames = torch.rand(3, 3, 10, 12, generator=torch.Generator().manual_seed(1))
    paths = write_frames(frames, str(tmp_path / "frames"), prefix="f")
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["f_00000.png", "f_00001.png", "f_00002.png"]
    back = read_frames(str(tmp_path / "frames"))
    assert back.shape == frames.shape and float((back - frames).abs().max()) <= 0.5 / 255 + 1e-6
    rgb, alpha = frames[0], frames[1, 0]
    rgb2, alpha2 = read_rgba(write_rgba(str(tmp_path / "e.png"), rgb, alpha))
    assert float((rgb2 - rgb).abs().max()) <= 0.5 / 255 + 1e-6 and float((alpha2 - alpha).abs().max()) <= 0.5 / 255 + 1e-6
    _, opaque = read_rgba(write_rgba(str(tmp_path / "rgb.png"), rgb))
    assert torch.equal(opaque, torch.ones(10, 12))


def test_require_finite_names_the_input_and_the_first_bad_item():
    x = torch.zeros(4, 2, 2)
    require_finite(x, "the frames")
    x[2, 0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN values in the frames \(1 of 16, first in item 2 of 4\)"):
        require_finite(x, "the frames")


def test_require_finite_checks_block_by_block_and_finds_a_value_in_any_block(monkeypatch):
    import t2l_core.io.input_checks as checks

    monkeypatch.setattr(checks, "FINITE_CHECK_VALUES", 8)  # two items of 2x2 per block
    x = torch.zeros(5, 2, 2, dtype=torch.float16)
    require_finite(x, "the flow")
    x[4, 1, 1] = float("inf")  # in the last, short block
    with pytest.raises(ValueError, match=r"infinite values in the flow \(1 of 20, first in item 4 of 5\)"):
        require_finite(x, "the flow")
    require_finite(torch.tensor(1.0), "a number")
    with pytest.raises(ValueError, match="NaN values in a number"):
        require_finite(torch.tensor(float("nan")), "a number")
