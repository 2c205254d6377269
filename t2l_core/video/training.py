"""Atlas (video) edits (paper section 3.2, eqs. 9-12, appendix A.4): the settings, a step's examples, training.

Public API::

    config = VideoEditConfig.from_flat(prompt="snowy countryside", layer="bg", iters=3000, seed=0)
    result = train_video_edit_layer(clip, nla, config, hooks=Hooks(...), checkpoint_path="ckpt.safetensors")
    result.layer        # EditLayer (info["atlas"] records the layer and atlas framing it was trained on)
    result.atlas_edit   # AtlasEdit: the whole atlas through the generator once (RGBA over the atlas bbox)
    result.frames       # [T,3,H,W] the edited video (atlas edit mapped back and blended, NLA eqs. 15-16)

A step's examples (:class:`AtlasExamples`): a 3-frame sample (:mod:`t2l_core.video.atlas_dataset`); the
generator runs on the atlas crop, its edit / opacity / composite / green screen are rendered in the atlas and
grid-sampled into the three frame crops (bilinear, ``align_corners=False``, clamped to 0..1). Foreground:
every sampled map is multiplied by the NLA opacity (the green screen gets (1 - opacity)·green added). Plus
one direct generator pass on one of the frame crops (foreground: its four channels times the opacity), and
every ``full_image_every``-th step the whole atlas (background downscaled x3). The loop is the image edit's
(:func:`t2l_core.edit.training_loop.train_generator`) with the video defaults of :class:`VideoEditConfig`.

Foreground and background layers are trained in separate runs and combined by rendering both edits
(:mod:`t2l_core.video.atlas_apply`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .. import __version__
from ..checkpoint import EDIT_JOB, CheckpointFile, result_hash
from ..clip.templates import as_prompt_list
from ..edit.bootstrap import relevancy_target, uses_relevancy
from ..edit.compositing import GREEN, on_green_screen, solid_background
from ..edit.generator import build_generator
from ..edit.layer import EditLayer
from ..edit.objective import TextBanks
from ..edit.step_runner import PlainStepRunner
from ..edit.objective import StepExamples
from ..edit.training_loop import LoopSettings, WholeInputTarget, train_generator
from ..image.training import result_settings
from ..io.frame_sources import frame_chunks
from ..nla.fit import FittedNLA
from ..nla.render import AtlasEdit, render_frame
from ..progress import PHASE_TEXT, Hooks
from .atlas_apply import render_video, video_frames_u8, whole_atlas_edit
from .atlas_dataset import VideoAtlasDataset, layer_key
from .config import VideoEditConfig


@dataclass
class VideoEditResult:
    """What :func:`train_video_edit_layer` returns."""

    layer: EditLayer
    atlas_edit: AtlasEdit               # the trained layer's atlas edit (RGBA over the training bbox)
    atlas: torch.Tensor                 # [3,Ha,Wa] the atlas image the generator ran on
    frames: Optional[torch.Tensor]      # [T,3,H,W] edited video (None with render=False)
    history: list
    steps: int
    checkpoint_path: Optional[Path] = None  # the kept checkpoint (keep_checkpoint), else None
    notes: list = field(default_factory=list)  # what the user should know (resume)
    resumed_from: int = 0  # steps taken from a checkpoint


def nla_fingerprint(nla: FittedNLA, config: VideoEditConfig, clip=None, frames: Optional[torch.Tensor] = None) -> str:
    """Hash of everything that determines an atlas edit's result (a checkpoint key): the atlas model and its
    framing, the frames, every setting including ``iters``, with ``clip`` its identity and the autocast dtype,
    and :data:`~t2l_core.checkpoint.RESULT_VERSION` (as :func:`t2l_core.image.training.input_fingerprint`).

    Args:
        nla: the fitted atlas.
        config: the edit's settings.
        clip: None, or the CLIP model the run uses.
        frames: None (the stored frames), or [T,3,H,W] float 0..1 or uint8, as given to
            :func:`train_video_edit_layer`.

    Returns:
        A sha256 hex digest.
    """
    h = result_hash()
    for k, v in sorted(nla.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    for _, chunk in frame_chunks(video_frames_u8(nla, frames)):
        h.update(chunk.contiguous().numpy().tobytes())
    h.update(json.dumps({k: b.to_dict() for k, b in sorted(nla.bboxes.items())}, sort_keys=True).encode())
    d = result_settings(config, clip)
    d["layer"] = layer_key(d["layer"])
    h.update(json.dumps(d, sort_keys=True, default=str).encode())
    return h.hexdigest()


def default_video_checkpoint_path(folder: str | Path, nla: FittedNLA, config: VideoEditConfig, clip=None,
                                  frames: Optional[torch.Tensor] = None) -> Path:
    """``folder/video_edit_<fingerprint[:16]>.safetensors``; arguments as :func:`nla_fingerprint`."""
    return Path(folder) / f"video_edit_{nla_fingerprint(nla, config, clip, frames)[:16]}.safetensors"


# -- a step's examples --------------------------------------------------------------------------------


def sample_into_frame(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sample atlas-crop maps into a frame crop (paper eq. 10): bilinear, align_corners=False, clamped.

    Args:
        maps: [1,C,ha,wa], maps over the atlas crop.
        grid: [1,h,w,2], each frame pixel's grid_sample coordinates in the atlas crop.

    Returns:
        [1,C,h,w] in 0..1.
    """
    return F.grid_sample(maps, grid.to(maps), mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


def atlas_examples(out: torch.Tensor, atlas_crop: torch.Tensor, frames: list, layer: str,
                   multiply_alpha: bool = True, authors_inputs: bool = False) -> list:
    """Map a generator output on an atlas crop into the frame crops (paper eq. 10).

    Args:
        out: ``[1,4,ha,wa]`` RGB + opacity in 0..1, the generator on ``atlas_crop``.
        atlas_crop: ``[1,3,ha,wa]`` in 0..1.
        frames: the step's :class:`t2l_core.video.atlas_dataset.FrameCrop` list.
        layer: ``"fg"`` or ``"bg"``.
        multiply_alpha: foreground: every map times the NLA opacity a_N and the green screen plus
            (1 - a_N)·green, so screen = a_N(aC + (1-a)G) + (1-a_N)G.
        authors_inputs: foreground: the inputs are not multiplied by a_N (the authors' code).

    Returns:
        Per frame (input, colour, opacity, composite, green screen), each ``[1,C,h,w]``: the maps rendered in
        the atlas and sampled into the frame.
    """
    color, alpha = out[:, :3], out[:, 3:]
    comp = alpha * color + (1 - alpha) * atlas_crop
    screen = on_green_screen(color, alpha)
    maps = torch.cat([color, alpha, comp, screen], dim=1)
    res = []
    for fc in frames:
        s = sample_into_frame(maps, fc.grid)
        with torch.no_grad():
            x = sample_into_frame(atlas_crop, fc.grid)
        c, a, cp, sc = s[:, :3], s[:, 3:4], s[:, 4:7], s[:, 7:10]
        if layer == "fg" and multiply_alpha:
            an = fc.nla_alpha
            c, a, cp = c * an, a * an, cp * an
            sc = an * sc + (1 - an) * solid_background(sc, GREEN)
            if not authors_inputs:
                x = x * an
        res.append((x, c, a, cp, sc))
    return res


class AtlasExamples:
    """The examples of an atlas edit (paper section 3.2, appendix A.4): the generator runs on an atlas
    crop whose edit is sampled into three frame crops, plus once directly on one of the frame crops, plus on
    the whole atlas every ``full_image_every`` steps.

    Args:
        runner_clip: the CLIP the runner computes with (relevancy targets, the fixed structure target).
        dataset: the atlas layer's :class:`VideoAtlasDataset`.
        layer: ``"fg"`` or ``"bg"``.
        config: the edit's settings.
        preview: ``generator -> [H,W,3]`` the middle frame with the current edit.
    """

    def __init__(self, runner_clip, dataset: VideoAtlasDataset, layer: str, config: VideoEditConfig,
                 preview: Callable[[torch.nn.Module], torch.Tensor]) -> None:
        self.clip, self.dataset, self.layer, self.config = runner_clip, dataset, layer, config
        self.use_relevancy = uses_relevancy(config)
        self._preview = preview
        self.whole_target = WholeInputTarget(runner_clip, config.views, config.weights.structure)

    def examples(self, step: int, rng: torch.Generator, runner, bootstrap_weight: float) -> StepExamples:
        """See :meth:`t2l_core.edit.training_loop.ExampleSource.examples`."""
        cfg, sample = self.config, self.dataset.sample(step, rng)
        losses = cfg.frame_losses
        fg_alpha = self.layer == "fg" and losses.multiply_foreground_alpha
        ex = StepExamples([], [], [], composites=[], screens=[])
        out = runner.generate(sample.atlas_crop)
        for x, c, a, cp, sc in atlas_examples(out, sample.atlas_crop, sample.frames, self.layer,
                                              losses.multiply_foreground_alpha, losses.authors_fg_inputs):
            _add(ex, x, c, a, cp, sc)
        if losses.direct_pass:
            fc = sample.frames[sample.direct]
            o = runner.generate(fc.image)
            o = o * fc.nla_alpha if fg_alpha else o
            _add(ex, fc.image, o[:, :3], o[:, 3:])
        if sample.full is not None:  # an extra example: a runner may regenerate it for its backward pass
            o = runner.generate(sample.full, deferred=True)
            _add(ex, sample.full, o[:, :3], o[:, 3:])
            ex.source_tokens = self.whole_target.last_of(sample.full, len(ex.inputs))
        if self.use_relevancy and bootstrap_weight > 0:
            ex.bootstrap_targets = [relevancy_target(self.clip, x, cfg) for x in ex.inputs]
        return ex

    def preview(self, runner) -> torch.Tensor:
        """The middle frame with the current edit, [H,W,3] in 0..1 on the CPU."""
        return self._preview(runner.generator)


def _add(ex: StepExamples, x, color, alpha, comp=None, screen=None) -> None:
    """Append one example to ``ex``."""
    for seq, v in ((ex.inputs, x), (ex.colors, color), (ex.alphas, alpha), (ex.composites, comp),
                   (ex.screens, screen)):
        seq.append(v)


# -- training -----------------------------------------------------------------------------------------


def train_video_edit_layer(clip, nla: FittedNLA, config: VideoEditConfig, *, frames: Optional[torch.Tensor] = None,
                           hooks: Optional[Hooks] = None, checkpoint_path: str | Path | None = None,
                           resume: bool = False, render: bool = True, other_edit: Optional[AtlasEdit] = None,
                           keep_checkpoint: bool = False, runner: Optional[PlainStepRunner] = None) -> VideoEditResult:
    """Train an edit layer on ``config.layer``'s atlas of ``nla`` (paper section 3.2).

    Args:
        clip: the CLIP model (:class:`t2l_core.clip.model.ClipModel`).
        nla: the fitted atlas.
        config: the edit's settings.
        frames: ``[T,3,H,W]`` (0..1 or uint8) the original video (default: the frames stored with the atlas);
            used for the foreground inputs and as the base the edit is blended over.
        hooks: progress, cancel and preview callbacks.
        render: also return the edited video (streamed, one frame at a time).
        other_edit: an :class:`AtlasEdit` of the other layer, combined in the rendered video (foreground and
            background are trained one after the other).
        checkpoint_path, resume, keep_checkpoint: as for images (:func:`t2l_core.image.training.train_edit_layer`):
            resumed only for the same atlas, frames, settings, ``iters`` and CLIP.
        runner: how steps are computed; None = the plain fp32 path (:func:`t2l_core.api.train_video_edit_layer`
            picks the runner the config's speed settings ask for).

    Returns:
        A :class:`VideoEditResult`: the layer, its atlas edit, the edited video, the loss history.

    Raises:
        ValueError: bad inputs or settings, or no such layer; NonFiniteLoss: the loss diverged.
    """
    config.validate()
    layer = layer_key(config.layer)
    if layer not in nla.bboxes:
        raise ValueError(f"this atlas has no {'foreground' if layer == 'fg' else 'background'} layer"
                         + (" (it was fitted without masks): edit the background instead" if layer == "fg" else ""))
    hooks = hooks or Hooks()
    runner = runner or PlainStepRunner(clip, config.runtime.threads)
    with torch.inference_mode(False), torch.enable_grad(), runner.run_scope():
        u8 = video_frames_u8(nla, frames)
        file = CheckpointFile(checkpoint_path, EDIT_JOB, nla_fingerprint(nla, config, clip, u8))
        dataset = VideoAtlasDataset(nla.model, nla.bboxes[layer], u8, config.atlas_sampling(), device=clip.device,
                                    on_progress=hooks.phase_callback("sampling the atlas (texel chunks)"))
        edits = _EditsOnVideo(nla, u8, layer, other_edit)
        source = AtlasExamples(runner.clip, dataset, layer, config,
                               lambda gen: edits.middle_frame(whole_atlas_edit(gen, dataset.atlas, dataset.bbox)))
        banks = TextBanks.build(runner.clip, config.prompt, config.screen_prompt, config.directional_source(),
                                on_progress=hooks.phase_callback(PHASE_TEXT))
        gen = runner.prepare(build_generator(config.generator, device=clip.device, seed=config.seed))
        run = train_generator(gen, source, LoopSettings.from_config(config, banks), runner, hooks, file, resume,
                              keep_checkpoint)
        edit_layer = EditLayer(gen.state_dict(), config.generator, _layer_info(config, run.steps, nla, dataset))
        edit = whole_atlas_edit(gen, dataset.atlas, dataset.bbox)
        video = edits.render(edit, hooks.phase_callback("rendering the edited video (frames)")) if render else None
    return VideoEditResult(edit_layer, edit, dataset.atlas[0].cpu(), video, run.history, run.steps,
                           file.path if keep_checkpoint else None, run.notes, run.resumed_from)


class _EditsOnVideo:
    """The trained layer's edit combined with ``other_edit`` (of the other layer) over the original frames."""

    def __init__(self, nla: FittedNLA, u8: torch.Tensor, layer: str, other_edit: Optional[AtlasEdit]) -> None:
        self.nla, self.u8, self.layer, self.other = nla, u8, layer, other_edit

    def _layers(self, edit: AtlasEdit) -> tuple:
        """(foreground edit, background edit)."""
        return (edit, self.other) if self.layer == "fg" else (self.other, edit)

    def middle_frame(self, edit: AtlasEdit) -> torch.Tensor:
        """The middle frame with the edits, [H,W,3] in 0..1 on the CPU."""
        mid = self.nla.num_frames // 2
        frame = render_frame(self.nla.model, mid, self.u8[mid].float() / 255.0, *self._layers(edit))
        return frame.permute(1, 2, 0).cpu()

    def render(self, edit: AtlasEdit, on_frame) -> torch.Tensor:
        """The edited video, [T,3,H,W] float in 0..1 (:func:`render_video`)."""
        return render_video(self.nla, self.u8, *self._layers(edit), on_frame=on_frame)


def _layer_info(config: VideoEditConfig, steps: int, nla: FittedNLA, dataset: VideoAtlasDataset) -> dict:
    """What a saved layer records about its training, including the atlas framing it was trained on."""
    return {"prompt": as_prompt_list(config.prompt), "steps": steps, "seed": config.seed,
            "working_size": list(dataset.atlas.shape[-2:]),
            "atlas": {"layer": layer_key(config.layer), "bbox": dataset.bbox.to_dict(), "frames": nla.num_frames,
                      "height": nla.size[0], "width": nla.size[1]},
            "config": json.loads(json.dumps(config.to_dict(), default=str)), "version": __version__}
