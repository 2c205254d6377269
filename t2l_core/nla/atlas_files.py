"""Save and load a fitted layered atlas (:class:`~t2l_core.nla.fitted.FittedNLA`) as one safetensors file.

Tensors: ``model.*`` (atlas parameters), ``frames_u8`` [T,3,H,W] (the original frames, needed to blend
edits) and, when the source video had sound, ``audio`` [C,S] (float waveform). Metadata: format tag, atlas
config (frame size/count, uv scale, grid sizes), fit config, atlas bounding boxes, PSNR, steps, the flow
estimator used and, when known, the source's ``fps`` and the sound's ``audio_rate``. Files written before the
frame rate and sound were kept have neither and load with them unknown (None).
"""

from __future__ import annotations

import json
from typing import Optional

import torch

from ..device import resolve_device
from ..io.frame_sources import StreamedVideo, safetensors_frames
from ..io.safetensors_files import read_metadata, write_tensors
from .atlas_images import AtlasBBox
from .atlas_model import AtlasConfig, LayeredAtlas
from .fitted import FittedNLA

FORMAT = "t2l-nla"
FORMAT_VERSION = "1"
#: stored frames larger than this (bytes) stay in the file when it is loaded, read when used
STREAM_FRAMES_ABOVE = 2 ** 30


def save_nla(nla: FittedNLA, path: str) -> str:
    """Write a fitted atlas to one file (atomic).

    Args:
        nla: the fitted atlas.
        path: a ``.safetensors`` path (folders are created).

    Returns:
        The path, as a string.
    """
    if not str(path).endswith(".safetensors"):
        raise ValueError(f"an atlas file must end with .safetensors, got '{path}'")
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in nla.model.state_dict().items()}
    streamed = {"frames_u8": nla.frames_u8} if isinstance(nla.frames_u8, StreamedVideo) else {}
    if not streamed:
        tensors["frames_u8"] = nla.frames_u8.contiguous()
    cfg = nla.cfg
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "atlas_config": json.dumps(cfg.to_dict()),
        "fit_config": json.dumps(nla.fit_config),
        "bboxes": json.dumps({k: b.to_dict() for k, b in nla.bboxes.items()}),
        "psnr": repr(float(nla.psnr)),
        "steps": str(int(nla.steps)),
        "flow_estimator": nla.flow_estimator,
        "frames": str(cfg.frames),
        "height": str(cfg.height),
        "width": str(cfg.width),
    }
    if nla.fps:
        meta["fps"] = repr(float(nla.fps))
    if nla.audio is not None and nla.audio_rate:
        tensors["audio"] = nla.audio.detach().to("cpu", torch.float32).contiguous()
        meta["audio_rate"] = str(int(nla.audio_rate))
    write_tensors(path, tensors, meta, streamed)
    return str(path)


def read_nla_header(path: str) -> dict:
    """The metadata of an atlas file, without loading tensors.

    Args:
        path: the atlas file.

    Returns:
        {key: str}: format, frames, height, width, psnr, steps, atlas_config, fit_config, bboxes, ...
        A file that is not an atlas raises ValueError.
    """
    meta = read_metadata(path, "atlas", "Fit the atlas again (Fit Layered Atlas + Save Atlas, or the nla command).")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a Text2LIVE atlas file (format tag {meta.get('format')!r}); "
                         "fit one with T2L_NLAFit or `python -m t2l_core nla`.")
    return meta


def load_nla(path: str, device: str | torch.device = "cpu", frames: Optional[torch.Tensor] = None,
             stream_frames: Optional[bool] = None) -> FittedNLA:
    """Load an atlas file (frozen, in eval mode).

    Args:
        path: the atlas file.
        device: where the model goes.
        frames: None, or [T,3,H,W] in 0..1 replacing the stored originals; they must match the fitted size
            and count (a ValueError says what to change).
        stream_frames: leave the stored frames in the file, read a few at a time when used (a
            :class:`~t2l_core.io.frame_sources.StreamedVideo`; the file must stay as it is): for videos too
            long to hold in memory. None: when they are over :data:`STREAM_FRAMES_ABOVE` bytes.

    Returns:
        The :class:`FittedNLA`.
    """
    from safetensors import safe_open

    meta = read_nla_header(path)
    cfg = AtlasConfig.from_dict(json.loads(meta["atlas_config"]))
    if stream_frames is None:
        stream_frames = frames is None and cfg.frames * 3 * cfg.height * cfg.width > STREAM_FRAMES_ABOVE
    with safe_open(path, framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if not (stream_frames and k == "frames_u8")}
    if stream_frames:
        tensors["frames_u8"] = safetensors_frames(path, "frames_u8")
    with torch.inference_mode(False):
        model = LayeredAtlas(cfg)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        model = model.to(resolve_device(device)).eval()
        for p in model.parameters():
            p.requires_grad_(False)
    bboxes = {k: AtlasBBox.from_dict(v) for k, v in json.loads(meta["bboxes"]).items()}
    nla = FittedNLA(model=model, frames_u8=tensors["frames_u8"], fit_config=json.loads(meta["fit_config"]),
                    psnr=float(meta["psnr"]), steps=int(meta["steps"]), flow_estimator=meta.get("flow_estimator", ""),
                    bboxes=bboxes, fps=float(meta["fps"]) if meta.get("fps") else None,
                    audio=tensors.get("audio") if meta.get("audio_rate") else None,
                    audio_rate=int(meta["audio_rate"]) if meta.get("audio_rate") else None)
    if frames is not None:
        nla.check_frames(frames)
        nla.frames_u8 = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return nla
