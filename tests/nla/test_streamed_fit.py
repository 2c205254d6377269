"""An atlas fit of a video read from its source a few frames at a time (a StreamedVideo): the same result as
the fit of the same frames held in memory, each frame read only in the passes the fit needs, the atlas file
written and read back without the whole video in memory, and the CLI fitting a video file this way."""

from __future__ import annotations

import json
import os

import pytest

import torch
from safetensors import safe_open

from synthetic_video import make_synthetic_video

from t2l_core.io.frame_sources import StreamedVideo
from t2l_core.nla.atlas_files import load_nla, save_nla
from t2l_core.nla.config import NLAFitConfig
from t2l_core.nla.fit import fit_nla
from t2l_core.nla.reconstruction import reconstruct_video
from t2l_core.nla.working_size import at_frame_size, working_inputs

CFG = dict(iterations=12, batch_pixels=1024, flow="lk")


def _counted(x: torch.Tensor) -> tuple:
    """A StreamedVideo over ``x`` and the list of (start, stop) reads made."""
    reads: list = []

    def read(s: int, e: int) -> torch.Tensor:
        reads.append((s, e))
        return x[s:e].clone()

    return StreamedVideo(x.shape, read, "the counted clip"), reads


def _clip(frames: int = 5, size: int = 40) -> tuple:
    v = make_synthetic_video(frames=frames, height=size, width=size)
    return (v.frames * 255).round().to(torch.uint8), (v.masks > 0.5).to(torch.uint8) * 255


def _frames_read(reads: list, T: int) -> list:
    """How many times each frame was read."""
    n = [0] * T
    for s, e in reads:
        for t in range(s, e):
            n[t] += 1
    return n


def test_a_streamed_fit_equals_the_in_memory_fit_and_reads_each_frame_twice():
    u8, masks = _clip()
    cfg = NLAFitConfig(working_size=24, **CFG)
    held = fit_nla(u8, masks, cfg, reconstruction="psnr")
    video, reads = _counted(u8)
    mask_video, mask_reads = _counted(masks)
    streamed = fit_nla(video, mask_video, cfg, reconstruction="psnr")
    for k, v in held.model.state_dict().items():
        assert torch.equal(v, streamed.model.state_dict()[k]), k
    assert streamed.psnr == held.psnr and streamed.bboxes == held.bboxes and streamed.size == (40, 40)
    # frames: once for the working copy, once for the full-size PSNR; masks once; never more than 8 at a time
    assert _frames_read(reads, 5) == [2] * 5 and _frames_read(mask_reads, 5) == [1] * 5
    assert max(e - s for s, e in reads + mask_reads) <= 8
    assert streamed.frames_u8 is video and streamed.reconstruction is None


def test_psnr_at_the_working_size_skips_the_full_size_pass():
    u8, masks = _clip()
    cfg = NLAFitConfig(working_size=24, **CFG)
    full = fit_nla(u8, masks, cfg, reconstruction="psnr")
    video, reads = _counted(u8)
    small = fit_nla(video, masks, cfg, reconstruction="working_psnr")
    assert _frames_read(reads, 5) == [1] * 5
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, small.model.state_dict()[k]), k  # the same fit, measured elsewhere
    # its PSNR is the reconstruction's against the working-size frames the fit ran on
    working = working_inputs(u8, None, (24, 24))[0]
    assert small.size == (40, 40) and small.psnr == reconstruct_video(at_frame_size(small.model, 24, 24), working)[2]
    assert any("working size 24x24" in n for n in small.notes)
    assert set(small.bboxes) == set(full.bboxes)


def test_a_streamed_atlas_file_is_written_and_read_a_few_frames_at_a_time(tmp_path):
    u8, masks = _clip()
    video, _ = _counted(u8)
    nla = fit_nla(video, masks, NLAFitConfig(**CFG), reconstruction="psnr")
    path = save_nla(nla, str(tmp_path / "a.safetensors"))
    held = load_nla(path)
    assert torch.equal(held.frames_u8, u8)
    lazy = load_nla(path, stream_frames=True)
    assert isinstance(lazy.frames_u8, StreamedVideo) and torch.equal(lazy.frames_u8[2], u8[2])
    assert torch.equal(lazy.original_frames(), u8.float() / 255)
    for k, v in held.model.state_dict().items():
        assert torch.equal(v, lazy.model.state_dict()[k])
    # the same tensors as an atlas saved from memory
    os.replace(path, tmp_path / "moved.safetensors")
    with pytest.raises(ValueError, match="changed .* after it was loaded"):
        lazy.frames_u8[0]
    os.replace(tmp_path / "moved.safetensors", path)
    nla.frames_u8 = u8
    save_nla(nla, str(tmp_path / "b.safetensors"))
    with safe_open(path, framework="pt") as f, safe_open(str(tmp_path / "b.safetensors"), framework="pt") as g:
        assert f.metadata() == g.metadata()
        assert all(torch.equal(f.get_tensor(k), g.get_tensor(k)) for k in g.keys())


def test_cli_fits_a_video_file_streamed_with_its_frame_rate(tmp_path, capsys):
    import av

    from t2l_core.cli.main import main

    u8, _ = _clip(frames=4)
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=15)
        stream.width = stream.height = 40
        stream.pix_fmt = "bgr0"
        for f in u8:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f.permute(1, 2, 0).numpy(), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    out_file = tmp_path / "atlas.safetensors"
    assert main(["nla", str(path), "--iters", "6", "--batch", "512", "--flow", "lk", "--working-size", "24",
                 "--psnr-at-working-size", "--out", str(out_file)]) == 0
    text = capsys.readouterr().out
    assert "measured on the frames at the working size 24x24" in text and "fitted 4 frames 40x40" in text
    nla = load_nla(str(out_file))
    assert nla.fps == 15 and torch.equal(nla.frames_u8, u8)
    assert json.loads(open(out_file, "rb").read(8 + int.from_bytes(open(out_file, "rb").read(8), "little"))[8:])[
        "frames_u8"]["shape"] == [4, 3, 40, 40]


def test_a_large_atlas_file_loads_with_its_frames_left_in_the_file(tmp_path, monkeypatch):
    import t2l_core.nla.atlas_files as atlas_files

    u8, masks = _clip(frames=3)
    path = save_nla(fit_nla(u8, masks, NLAFitConfig(**CFG), reconstruction="psnr"), str(tmp_path / "a.safetensors"))
    assert torch.is_tensor(load_nla(path).frames_u8)
    monkeypatch.setattr(atlas_files, "STREAM_FRAMES_ABOVE", u8.numel() - 1)
    nla = load_nla(path)
    assert isinstance(nla.frames_u8, StreamedVideo) and torch.equal(nla.frames_u8[1, :, 4:9], u8[1, :, 4:9])
    assert torch.is_tensor(load_nla(path, frames=u8.float() / 255).frames_u8)  # given frames replace them

