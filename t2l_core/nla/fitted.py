"""A fitted layered atlas (:class:`FittedNLA`): the atlas model, the frames it was fitted on and its atlas images."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .atlas_model import AtlasConfig, LayeredAtlas


@dataclass
class FittedNLA:
    """A fitted layered atlas plus the original frames it was fitted on (uint8, for blending edits) and, when
    known, the source video's frame rate and sound."""

    model: LayeredAtlas
    frames_u8: torch.Tensor              # [T,3,H,W] uint8, or a StreamedVideo read from its source when used
    fit_config: dict
    psnr: float = float("nan")
    steps: int = 0
    flow_estimator: str = ""
    bboxes: dict = field(default_factory=dict)   # {layer: AtlasBBox} of the discretised atlas images
    # transient (never saved): (rgb [T,3,H,W], alpha [T,H,W]) computed for the PSNR right after fitting
    reconstruction: Optional[tuple] = field(default=None, repr=False)
    notes: list = field(default_factory=list, repr=False)  # transient: what the fit wants the user to know
    # the source video's timing and sound, kept so a render can be written as that video again (None when
    # the frames came without them, e.g. an image batch, or from an atlas file saved before they were kept)
    fps: Optional[float] = None
    audio: Optional[torch.Tensor] = field(default=None, repr=False)  # [C,S] float waveform
    audio_rate: Optional[int] = None     # the waveform's sample rate, Hz

    @property
    def cfg(self) -> AtlasConfig:
        """The atlas model's config."""
        return self.model.cfg

    @property
    def num_frames(self) -> int:
        """T, the frames fitted."""
        return self.cfg.frames

    @property
    def size(self) -> tuple:
        """(H, W) of the frames."""
        return (self.cfg.height, self.cfg.width)

    def original_frames(self) -> torch.Tensor:
        """The frames the atlas was fitted on.

        Returns:
            [T,3,H,W] float in 0..1 (decoded from the stored uint8).
        """
        return self.frames_u8[:].float() / 255.0

    def atlas_images(self, on_progress: Optional[Callable[[int, int], None]] = None) -> dict:
        """The discretised atlas colour images over :attr:`bboxes` (Text2LIVE Sec. 3.2, "discretized atlas").

        Args:
            on_progress: ``(done, total)``, called after each chunk of texels of all layers together.

        Returns:
            {layer: [3,Ha,Wa] float in 0..1}.
        """
        from .atlas_images import discretise_atlas
        from .frame_maps import CHUNK

        chunks = {layer: -(-bbox.height * bbox.width // CHUNK) for layer, bbox in self.bboxes.items()}
        total, done, out = sum(chunks.values()), 0, {}
        for layer, bbox in self.bboxes.items():
            base = done
            step = None if on_progress is None else (lambda i, n, base=base: on_progress(base + i, total))
            out[layer] = discretise_atlas(self.model, bbox, on_chunk=step)
            done += chunks[layer]
        return out

    def check_frames(self, frames: torch.Tensor) -> None:
        """Refuse frames of another size or count than the fit, with a message saying what to change.

        Args:
            frames: [T,3,H,W].
        """
        T, _, H, W = frames.shape
        if (H, W) != self.size or T != self.num_frames:
            raise ValueError(
                f"this atlas was fitted on {self.num_frames} frames of {self.cfg.width}x{self.cfg.height} (WxH), "
                f"but got {T} frames of {W}x{H}. Resize/trim the frames to match, or fit a new atlas for this video.")
