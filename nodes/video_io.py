"""ComfyUI's VIDEO type <-> what the core keeps: frames, frame rate and sound.

A VIDEO arriving at a node is duck-typed: any object whose ``get_components()`` returns something with
``images`` (an IMAGE batch [T,H,W,C]), ``frame_rate`` (a number or Fraction) and ``audio`` (None or ComfyUI's
AUDIO, ``{"waveform": [B,C,S] float, "sample_rate": int}``), as comfy_api's VideoFromFile (Load Video) and
VideoFromComponents (Create Video) do. The core keeps plain values: the frames, ``fps`` (float) and the
sound as a [C,S] waveform with its sample rate.

The VIDEO this pack outputs is built with comfy_api's VideoFromComponents, imported only when a node makes
one. Where comfy_api cannot be imported (plain Python, or a ComfyUI older than the VIDEO type) a stand-in
with the same ``get_components()`` is returned instead, so the IMAGE outputs of the node still work; only
writing that stand-in as a file (Save Video) fails, with a message saying to update ComfyUI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from types import SimpleNamespace
from typing import Any, Optional

import torch

log = logging.getLogger("text2live")

#: frame rate of the VIDEO output when neither the atlas nor a connected video knows one
DEFAULT_FPS = 24.0


@dataclass
class VideoParts:
    """What a node takes from its ``frames`` / ``video`` inputs."""

    images: Optional[torch.Tensor]   # IMAGE [T,H,W,C], None when neither input is connected
    fps: Optional[float] = None      # frames per second, None when unknown
    audio: Optional[dict] = None     # ComfyUI AUDIO, None without sound
    source: str = "frames"           # the input the pictures came from (named in messages)


def _frame_count(images: torch.Tensor) -> int:
    return 1 if images.ndim == 3 else int(images.shape[0])


def check_audio(audio: Any, name: str = "video") -> Optional[dict]:
    """``audio`` as ComfyUI's AUDIO dict ({"waveform": [B,C,S], "sample_rate": int}), or None when there is
    no sound (None, or an empty waveform)."""
    if audio is None:
        return None
    try:
        waveform, rate = audio["waveform"], int(audio["sample_rate"])
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{name}: its sound is not ComfyUI audio (a dict with 'waveform' and 'sample_rate'), got "
                         f"{type(audio).__name__}") from None
    if not isinstance(waveform, torch.Tensor) or waveform.ndim not in (2, 3):
        raise ValueError(f"{name}: its sound's waveform must be a [B,C,S] tensor, got "
                         f"{getattr(waveform, 'shape', type(waveform).__name__)}")
    if waveform.numel() == 0:
        return None
    if rate <= 0:
        raise ValueError(f"{name}: its sound has sample rate {rate}; it must be positive")
    return {"waveform": waveform if waveform.ndim == 3 else waveform[None], "sample_rate": rate}


def video_parts(video: Any, name: str = "video") -> VideoParts:
    """A VIDEO -> its frames (IMAGE [T,H,W,C]), frame rate and sound.

    Args:
        video: anything with ``get_components()`` (see the module docstring).
        name: the node input, for messages.
    """
    get = getattr(video, "get_components", None)
    if not callable(get):
        raise TypeError(f"{name}: expected a VIDEO (from Load Video or Create Video), got {type(video).__name__}")
    parts = get()
    images = getattr(parts, "images", None)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0 or images.shape[1] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name}: the video has no frames to read (its images are {shape}); check the file in "
                         "Load Video")
    rate = getattr(parts, "frame_rate", None)
    fps = float(rate) if rate is not None and float(rate) > 0 else None
    return VideoParts(images=images, fps=fps, audio=check_audio(getattr(parts, "audio", None), name), source=name)


def frames_and_sound(frames: Optional[torch.Tensor], video: Any) -> VideoParts:
    """The pictures, frame rate and sound of a node with a ``frames`` (IMAGE) and a ``video`` (VIDEO) input.

    ``frames`` gives the pictures when connected (e.g. the video's frames resized), else the video does; the
    frame rate and sound always come from the video. Both connected: the same frame count is required, so the
    sound stays in step with the pictures. Neither: ``images`` is None (the node says what to connect).
    """
    if video is None:
        return VideoParts(images=frames)
    parts = video_parts(video)
    if frames is None:
        parts.source = "video"
        return parts
    n, m = _frame_count(frames), _frame_count(parts.images)
    if n != m:
        raise ValueError(f"frames has {n} images but video has {m} frames: connect frames made from this video "
                         "(resized is fine, but every frame), or connect only one of them")
    return VideoParts(images=frames, fps=parts.fps, audio=parts.audio)


# ---------------------------------------------------------------------------------- the core's form of sound
def audio_to_core(audio: Optional[dict]) -> tuple[Optional[torch.Tensor], Optional[int]]:
    """ComfyUI AUDIO -> (waveform [C,S] float32 on the CPU, sample rate), or (None, None) without sound. A batch
    of several sounds keeps the first (a video has one sound track)."""
    audio = check_audio(audio, "audio")
    if audio is None:
        return None, None
    waveform = audio["waveform"]
    if waveform.shape[0] > 1:
        log.info("Text2LIVE: the video's audio is a batch of %d; keeping the first", waveform.shape[0])
    return waveform[0].detach().to("cpu", torch.float32).clone(), int(audio["sample_rate"])


def core_to_audio(waveform: Optional[torch.Tensor], rate: Optional[int]) -> Optional[dict]:
    """(waveform [C,S], sample rate) -> ComfyUI AUDIO ({"waveform": [1,C,S], "sample_rate": rate}), or None."""
    if waveform is None or not rate:
        return None
    return {"waveform": waveform.float()[None], "sample_rate": int(rate)}


# ------------------------------------------------------------------------------------------ VIDEO output
def _comfy_video_classes():
    """(VideoFromComponents, VideoComponents) from comfy_api, or None where comfy_api cannot be imported."""
    try:
        from comfy_api.latest import InputImpl, Types

        return InputImpl.VideoFromComponents, Types.VideoComponents
    except Exception:  # an older comfy_api (no 'latest'), or none at all
        pass
    try:
        from comfy_api.input_impl import VideoFromComponents
        from comfy_api.util import VideoComponents

        return VideoFromComponents, VideoComponents
    except Exception:
        return None


TOO_OLD = ("writing this VIDEO needs ComfyUI's VIDEO type (comfy_api's VideoFromComponents), which this "
           "ComfyUI lacks: update ComfyUI (this pack needs 0.3.64 or newer), or use the IMAGE output with "
           "another video writer")


class FramesVideo:
    """Stand-in VIDEO where comfy_api is missing: the same ``get_components()``, no file writing."""

    def __init__(self, images: torch.Tensor, frame_rate: Fraction, audio: Optional[dict]):
        self._components = SimpleNamespace(images=images, frame_rate=frame_rate, audio=audio, metadata=None)

    def get_components(self):
        c = self._components
        return SimpleNamespace(images=c.images, frame_rate=c.frame_rate, audio=c.audio, metadata=None)

    def get_dimensions(self) -> tuple[int, int]:
        return int(self._components.images.shape[2]), int(self._components.images.shape[1])

    def get_duration(self) -> float:
        return float(self._components.images.shape[0] / self._components.frame_rate)

    def save_to(self, *args, **kwargs):
        raise RuntimeError(TOO_OLD)

    def get_stream_source(self):
        raise RuntimeError(TOO_OLD)


def frame_rate(fps: Optional[float]) -> Fraction:
    """``fps`` as the Fraction ComfyUI's videos carry (30000/1001 for 29.97...); DEFAULT_FPS when unknown."""
    return Fraction(float(fps) if fps and fps > 0 else DEFAULT_FPS).limit_denominator(1001000)


def make_video(images: torch.Tensor, fps: Optional[float], audio: Optional[dict]):
    """A VIDEO of ``images`` (IMAGE [T,H,W,C]) at ``fps`` (DEFAULT_FPS when None) with ``audio`` (ComfyUI
    AUDIO or None), built with comfy_api's VideoFromComponents (a :class:`FramesVideo` where it is missing)."""
    classes = _comfy_video_classes()
    rate = frame_rate(fps)
    audio = check_audio(audio, "audio")
    if classes is None:
        return FramesVideo(images, rate, audio)
    video_cls, components_cls = classes
    return video_cls(components_cls(images=images, audio=audio, frame_rate=rate))
