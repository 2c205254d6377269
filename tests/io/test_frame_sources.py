"""Streamed frames and masks (t2l_core.io.frame_sources): what they read equals what the in-memory readers
read, indexing behaves as a tensor's, and the streamed safetensors writer writes a file safetensors reads back
exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from t2l_core.io.frame_sources import (StreamedVideo, frame_chunks, image_folder_frames, image_folder_masks,
                                       open_frames, video_file_frames, video_file_info)
from t2l_core.io.safetensors_files import write_tensors
from t2l_core.io.video_files import read_frames, read_masks, read_video_file


def _frames_u8(T: int = 7, H: int = 24, W: int = 40) -> torch.Tensor:
    """A moving integer gradient pattern, [T,3,H,W] uint8."""
    t = torch.arange(T)[:, None, None, None]
    y = torch.arange(H)[None, None, :, None]
    x = torch.arange(W)[None, None, None, :]
    c = torch.arange(3)[None, :, None, None]
    return ((x * 5 + y * 3 + t * 17 + c * 60) % 256).to(torch.uint8)


def _write_lossless_video(path, frames: torch.Tensor, fps: int = 12) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=fps)
        stream.width, stream.height = frames.shape[3], frames.shape[2]
        stream.pix_fmt = "bgr0"
        for f in frames:
            frame = av.VideoFrame.from_ndarray(f.permute(1, 2, 0).numpy(), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_video_file_frames_read_the_decoded_frames_in_any_order(tmp_path):
    frames = _frames_u8()
    path = tmp_path / "clip.mkv"
    _write_lossless_video(path, frames)
    assert video_file_info(path)[:3] == (7, 24, 40)
    video = video_file_frames(path)
    assert isinstance(video, StreamedVideo) and video.shape == (7, 3, 24, 40) and video.fps == pytest.approx(12)
    assert torch.equal(video[:], frames)  # lossless: the exact pixels
    assert torch.equal(video[:], (read_video_file(str(path)) * 255).round().to(torch.uint8))
    assert torch.equal(video[5], frames[5]) and torch.equal(video[-1], frames[6])
    assert torch.equal(video[1:3], frames[1:3])  # backwards: decoded again from the start
    assert video[4:2].shape == (0, 3, 24, 40)
    assert torch.equal(video[2, :, 3:9, 5:7], frames[2, :, 3:9, 5:7])
    assert torch.equal(video[2:4, 1, 3], frames[2:4, 1, 3])
    with pytest.raises(IndexError):
        video[7]
    with pytest.raises(IndexError, match="step 1"):
        video[::2]
    assert video_file_frames(path, max_frames=3).shape[0] == 3
    small = video_file_frames(path, size=(12, 20))
    assert small.shape == (7, 3, 12, 20) and small[0].dtype == torch.uint8
    assert open_frames(str(path)).shape == video.shape


def test_image_folders_stream_what_the_in_memory_readers_read(tmp_path):
    frames = _frames_u8(4)
    (tmp_path / "f").mkdir()
    (tmp_path / "m").mkdir()
    for t in range(4):
        Image.fromarray(frames[t].permute(1, 2, 0).numpy()).save(tmp_path / "f" / f"{t:03d}.png")
        Image.fromarray(frames[t, 0].numpy()).save(tmp_path / "m" / f"{t:03d}.png")
    video = image_folder_frames(tmp_path / "f")
    assert torch.equal(video[:], frames) and torch.equal(video[:].float() / 255, read_frames(str(tmp_path / "f")))
    masks = image_folder_masks(tmp_path / "m", max_frames=3)
    assert masks.shape == (3, 24, 40) and torch.equal(masks[:], frames[:3, 0])
    assert torch.equal(masks[:].float() / 255, read_masks(str(tmp_path / "m"), max_frames=3))
    assert image_folder_masks(tmp_path / "m", size=(12, 20))[0].shape == (12, 20)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "f" / "999.png")
    with pytest.raises(ValueError, match="999.png .* is 10x10 .* give images of one size"):
        image_folder_frames(tmp_path / "f")[:]
    with pytest.raises(FileNotFoundError, match="no frames directory or video file"):
        open_frames(str(tmp_path / "nothing"))


def test_frame_chunks_cover_a_tensor_and_a_streamed_video_alike():
    frames = _frames_u8(19)
    video = StreamedVideo(frames.shape, lambda s, e: frames[s:e].clone())
    a = [(s, c) for s, c in frame_chunks(frames)]
    b = [(s, c) for s, c in frame_chunks(video)]
    assert [s for s, _ in a] == [s for s, _ in b] == [0, 8, 16]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))


def test_a_source_that_changes_size_is_refused_with_its_name():
    video = StreamedVideo((3, 3, 8, 8), lambda s, e: torch.zeros(e - s, 3, 9, 8, dtype=torch.uint8), "the test clip")
    with pytest.raises(ValueError, match="the test clip gave frames"):
        video[0]


def test_our_safetensors_files_read_back_as_the_library_writes_them(tmp_path):
    g = torch.Generator().manual_seed(0)
    small = {"a.f32": torch.randn(3, 5, generator=g), "b.i64": torch.arange(7), "c.bool": torch.tensor([True, False]),
             "d.bf16": torch.randn(4, generator=g).bfloat16(), "e.f16": torch.randn(2, 3, generator=g).half(),
             "f.empty": torch.zeros(0, 3), "g.transposed": torch.arange(12.0).reshape(3, 4).t()}
    small["h.same_storage"] = small["a.f32"][1]
    frames = _frames_u8(11)
    video = StreamedVideo(frames.shape, lambda s, e: frames[s:e].clone())
    meta = {"format": "test", "n": "11"}
    ours = write_tensors(tmp_path / "ours.safetensors", small, meta, {"frames_u8": video})
    save_file({**{k: v.contiguous().clone() for k, v in small.items()}, "frames_u8": frames},
              str(tmp_path / "lib.safetensors"), metadata=meta)
    with safe_open(str(ours), framework="pt") as f, safe_open(str(tmp_path / "lib.safetensors"), framework="pt") as g2:
        assert f.metadata() == g2.metadata() and set(f.keys()) == set(g2.keys())
        for k in g2.keys():
            x, y = f.get_tensor(k), g2.get_tensor(k)
            assert x.dtype == y.dtype and torch.equal(x, y), k
    assert not (tmp_path / "ours.safetensors.part").exists()
    with pytest.raises(TypeError, match="str to str"):
        write_tensors(tmp_path / "bad.safetensors", small, {"n": 11})
    with pytest.raises(TypeError, match="complex64"):
        write_tensors(tmp_path / "bad.safetensors", {"z": torch.zeros(2, dtype=torch.complex64)}, {})
