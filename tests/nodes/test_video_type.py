"""ComfyUI's VIDEO type in and out of the video nodes, without ComfyUI: a fake VIDEO object (the duck type of
comfy_api's VideoFromFile), the conversions of nodes/video_io.py, Fit Layered Atlas and Atlas Render with a
VIDEO, and the frame rate and sound kept in the atlas (and its file; older files without them still load)."""

from __future__ import annotations

import math
import sys
import types
from fractions import Fraction

import pytest
import torch

from synthetic_video import make_synthetic_video

T, H, W = 4, 32, 40
FPS = Fraction(25, 2)  # 12.5 fps: not a whole number, as real videos often have
RATE = 8000


class FakeVideo:
    """What Fit Layered Atlas and Atlas Render read of a VIDEO: ``get_components()`` with images [T,H,W,C],
    frame_rate and audio (ComfyUI AUDIO or None), like comfy_api's VideoFromFile."""

    def __init__(self, images, frame_rate=FPS, audio=None):
        self.images, self.frame_rate, self.audio = images, frame_rate, audio
        self.calls = 0

    def get_components(self):
        self.calls += 1
        return types.SimpleNamespace(images=self.images, frame_rate=self.frame_rate, audio=self.audio, metadata={})


def _sine(seconds: float, channels: int = 2) -> dict:
    n = int(seconds * RATE)
    t = torch.arange(n) / RATE
    wave = torch.stack([0.5 * torch.sin(2 * math.pi * 440 * (c + 1) * t) for c in range(channels)])
    return {"waveform": wave[None].float(), "sample_rate": RATE}


@pytest.fixture(scope="module")
def vn(pack):
    return sys.modules[pack.__name__ + ".nodes.video_nodes"]


@pytest.fixture(scope="module")
def vio(pack):
    return sys.modules[pack.__name__ + ".nodes.video_io"]


@pytest.fixture(scope="module")
def clip_frames():
    video = make_synthetic_video(frames=T, height=H, width=W)
    return video.frames.permute(0, 2, 3, 1).contiguous()  # IMAGE [T,H,W,3]


@pytest.fixture(scope="module")
def fitted(pack, vn, clip_frames, tmp_path_factory):
    """An atlas fitted from a VIDEO alone (no frames input), with sound."""
    import os

    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("fit"))  # outside ComfyUI, outputs go to ./t2l_outputs
    try:
        with torch.inference_mode():  # like ComfyUI
            video = FakeVideo(clip_frames.clone(), audio=_sine(T / float(FPS)))
            res = vn.NLAFit().fit(video=video, iterations=10, atlas_resolution=0, seed=0, batch_pixels=512,
                                  flow="lk")
    finally:
        os.chdir(old)
    return res["result"], video


# ------------------------------------------------------------------------------------ VIDEO <-> parts
def test_a_video_gives_its_frames_frame_rate_and_sound(vio, clip_frames):
    audio = _sine(0.5, channels=1)
    parts = vio.video_parts(FakeVideo(clip_frames, audio=audio))
    assert parts.images is clip_frames and parts.fps == 12.5 and parts.source == "video"
    assert parts.audio["sample_rate"] == RATE and torch.equal(parts.audio["waveform"], audio["waveform"])
    silent = vio.video_parts(FakeVideo(clip_frames, frame_rate=None, audio=None))
    assert silent.fps is None and silent.audio is None
    # a [C,S] waveform is taken as one sound; an empty one as no sound
    two_d = vio.video_parts(FakeVideo(clip_frames, audio={"waveform": torch.zeros(2, 10), "sample_rate": 100}))
    assert two_d.audio["waveform"].shape == (1, 2, 10)
    assert vio.video_parts(FakeVideo(clip_frames, audio={"waveform": torch.zeros(1, 2, 0), "sample_rate": 100})).audio is None


def test_what_is_not_a_video_is_refused_with_a_message(vio, clip_frames):
    with pytest.raises(TypeError, match="expected a VIDEO .*Load Video"):
        vio.video_parts(clip_frames)  # an IMAGE wired where a VIDEO goes
    with pytest.raises(ValueError, match="no frames"):
        vio.video_parts(FakeVideo(torch.zeros(0, 3, 0, 0)))
    with pytest.raises(ValueError, match="'waveform' and 'sample_rate'"):
        vio.video_parts(FakeVideo(clip_frames, audio=[1, 2, 3]))


def test_frames_give_the_pictures_and_the_video_the_timing_and_sound(vio, clip_frames):
    audio = _sine(0.4)
    video = FakeVideo(clip_frames, audio=audio)
    resized = torch.nn.functional.interpolate(clip_frames.permute(0, 3, 1, 2), size=(16, 20)).permute(0, 2, 3, 1)
    both = vio.frames_and_sound(resized, video)
    assert both.images is resized and both.source == "frames"
    assert both.fps == 12.5 and both.audio["waveform"] is audio["waveform"]
    only_frames = vio.frames_and_sound(resized, None)
    assert only_frames.images is resized and only_frames.fps is None and only_frames.audio is None
    assert vio.frames_and_sound(None, None).images is None
    with pytest.raises(ValueError, match="frames has 3 images but video has 4 frames"):
        vio.frames_and_sound(resized[:3], video)


def test_sound_in_the_core_is_a_plain_waveform(vio):
    audio = _sine(0.25)
    wave, rate = vio.audio_to_core(audio)
    assert wave.shape == (2, 2000) and wave.dtype == torch.float32 and rate == RATE
    back = vio.core_to_audio(wave, rate)
    assert back["sample_rate"] == RATE and torch.equal(back["waveform"], audio["waveform"])
    assert vio.audio_to_core(None) == (None, None) and vio.core_to_audio(None, None) is None


def test_the_video_output_without_comfy_api_is_a_stand_in_that_says_what_to_update(vio, clip_frames, monkeypatch):
    for name in ("comfy_api", "comfy_api.latest", "comfy_api.input_impl", "comfy_api.util"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, as in plain Python or an old ComfyUI
    audio = _sine(0.3)
    video = vio.make_video(clip_frames, 29.97002997, audio)
    c = video.get_components()
    assert c.images is clip_frames and c.frame_rate == Fraction(30000, 1001) and c.audio["sample_rate"] == RATE
    assert video.get_dimensions() == (W, H)
    with pytest.raises(RuntimeError, match="update ComfyUI"):
        video.save_to("out.mp4")
    assert vio.make_video(clip_frames, None, None).get_components().frame_rate == vio.DEFAULT_FPS
    # our own VIDEO goes back into our nodes' VIDEO inputs
    assert vio.video_parts(video).fps == pytest.approx(29.97, abs=1e-3)


def test_the_video_output_is_built_with_comfy_apis_classes(vio, clip_frames, monkeypatch):
    made = {}

    class VideoComponents:
        def __init__(self, images, frame_rate, audio=None, metadata=None):
            self.images, self.frame_rate, self.audio = images, frame_rate, audio

    class VideoFromComponents:
        def __init__(self, components):
            made["components"] = components

        def get_components(self):
            return made["components"]

    latest = types.ModuleType("comfy_api.latest")
    latest.InputImpl = types.SimpleNamespace(VideoFromComponents=VideoFromComponents)
    latest.Types = types.SimpleNamespace(VideoComponents=VideoComponents)
    monkeypatch.setitem(sys.modules, "comfy_api", types.ModuleType("comfy_api"))
    monkeypatch.setitem(sys.modules, "comfy_api.latest", latest)
    video = vio.make_video(clip_frames, 12.5, None)
    assert isinstance(video, VideoFromComponents)
    assert made["components"].frame_rate == Fraction(25, 2) and made["components"].audio is None
    assert made["components"].images is clip_frames


# --------------------------------------------------------------------------------- through the nodes
def test_fit_layered_atlas_takes_a_video_and_keeps_its_frame_rate_and_sound(fitted, clip_frames):
    (nla, rec, fg, bg, alpha, info), video = fitted
    assert video.calls == 1  # the video is read once
    assert rec.shape == clip_frames.shape
    assert nla.fps == 12.5 and nla.audio_rate == RATE and nla.audio.shape == (2, int(T / 12.5 * RATE))
    assert torch.equal(nla.audio, video.audio["waveform"][0])
    assert "source video 12.5 fps, with sound" in info
    assert torch.equal(nla.frames_u8, (clip_frames.permute(0, 3, 1, 2) * 255).round().to(torch.uint8))


def test_atlas_render_outputs_the_video_with_the_source_timing_and_sound(vn, vio, fitted):
    (nla, *_), video = fitted
    with torch.inference_mode():
        frames, out = vn.AtlasRender().render(nla)
    parts = vio.video_parts(out)
    assert torch.equal(parts.images, frames) and parts.fps == 12.5
    assert parts.audio["sample_rate"] == RATE and torch.equal(parts.audio["waveform"][0], nla.audio)
    # the original frames can come as a VIDEO too; its timing and sound then win
    other = FakeVideo(video.images.flip(-1).clone(), frame_rate=30, audio=None)
    with torch.inference_mode():
        flipped, out2 = vn.AtlasRender().render(nla, video=other)
    assert torch.allclose(flipped, other.images, atol=1 / 255)
    parts2 = vio.video_parts(out2)
    assert parts2.fps == 30 and parts2.audio is None
    with pytest.raises(ValueError, match="fitted on 4 frames"):
        vn.AtlasRender().render(nla, video=FakeVideo(video.images[:3].clone()))


def test_fit_needs_frames_or_a_video_and_matching_counts(vn, clip_frames, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="connect the video"):
        vn.NLAFit().fit(iterations=10, atlas_resolution=0, seed=0, flow="lk")
    with pytest.raises(ValueError, match="frames has 3 images but video has 4 frames"):
        vn.NLAFit().fit(clip_frames[:3], video=FakeVideo(clip_frames), iterations=10, atlas_resolution=0, seed=0,
                        flow="lk")


def test_an_atlas_fitted_on_image_frames_renders_a_silent_video_at_the_default_rate(vn, vio, pack, tmp_path,
                                                                                   monkeypatch, clip_frames):
    monkeypatch.chdir(tmp_path)
    nla, *_ = vn.NLAFit().fit(clip_frames, iterations=10, atlas_resolution=0, seed=0, batch_pixels=512,
                              flow="lk")["result"]
    assert nla.fps is None and nla.audio is None
    _, out = vn.AtlasRender().render(nla)
    parts = vio.video_parts(out)
    assert parts.fps == vio.DEFAULT_FPS and parts.audio is None


def test_the_atlas_file_keeps_frame_rate_and_sound_and_older_files_still_load(fitted, tmp_path):
    from safetensors import safe_open

    from t2l_core.nla.atlas_files import load_nla, read_nla_header, save_nla

    (nla, *_), _ = fitted
    path = save_nla(nla, str(tmp_path / "with_sound.safetensors"))
    header = read_nla_header(path)
    assert float(header["fps"]) == 12.5 and header["audio_rate"] == str(RATE)
    back = load_nla(path)
    assert back.fps == 12.5 and back.audio_rate == RATE and torch.equal(back.audio, nla.audio)
    # a file written before the frame rate and sound were kept: no such keys; it loads with them unknown
    old = load_nla(path)
    old.fps = old.audio = old.audio_rate = None
    old_path = save_nla(old, str(tmp_path / "older.safetensors"))
    assert "fps" not in read_nla_header(old_path) and "audio_rate" not in read_nla_header(old_path)
    with safe_open(old_path, framework="pt") as f:
        assert "audio" not in set(f.keys())
    again = load_nla(old_path)
    assert again.fps is None and again.audio is None and again.audio_rate is None
    assert torch.equal(again.frames_u8, nla.frames_u8)


def test_export_for_compositing_does_not_take_the_video_inputs(pack):
    export = pack.NODE_CLASS_MAPPINGS["T2L_ExportForCompositing"].INPUT_TYPES()["optional"]
    assert "video" not in export and "frames" not in export
    render = pack.NODE_CLASS_MAPPINGS["T2L_AtlasRender"]
    assert render.RETURN_TYPES == ("IMAGE", "VIDEO") and render.RETURN_NAMES == ("frames", "video")
    fit = pack.NODE_CLASS_MAPPINGS["T2L_NLAFit"].INPUT_TYPES()
    # appended: the sockets keep their order (frames, masks), the widgets theirs; frames is optional in practice
    assert list(fit["required"]) == ["iterations", "atlas_resolution", "seed"]
    assert list(fit["optional"])[:2] == ["frames", "masks"] and list(fit["optional"])[-2:] == ["video", "working_size"]
    assert list(render.INPUT_TYPES()["optional"])[-1] == "video"
