"""Train an edit layer on a layer's atlas of a fitted NLA (paper section 3.2; SM 3.1; method notes 4.4-4.7).

Public API::

    config = VideoEditConfig.from_flat(prompt="snowy countryside", layer="bg", iters=3000, seed=0)
    result = train_video_edit_layer(clip, nla, config, hooks=Hooks(...), checkpoint_path="ckpt.safetensors")
    result.layer        # EditLayer (info["atlas"] records the layer and atlas framing it was trained on)
    result.atlas_edit   # AtlasEdit: the whole atlas through the generator once (RGBA over the atlas bbox)
    result.frames       # [T,3,H,W] the edited video (atlas edit mapped back and blended, NLA eq. 15/16)

Each step (method notes 4.5): sample a 3-frame example (:mod:`t2l_core.video.atlas_dataset`), run the generator
on the atlas crop, render edit / opacity / composite / green screen in the atlas and grid-sample each map
into the three frame crops (bilinear, ``align_corners=False``, clamped to 0..1). Foreground: every
sampled map is multiplied by the NLA opacity (the green screen gets (1 - opacity)·green added). Plus one
direct generator pass on one of the frame crops (foreground: its four channels times the opacity), and on
every ``full_image_every``-th step the whole atlas (background downscaled x3). The loss is the image
objective (:func:`edit_objective`) over those 4 (5) examples with the video weights; MADGRAD,
lr ← max(lr_min, 0.999·lr). Checkpoints, resume, progress, preview and cancel behave as for images.

Inference (4.7): the whole training atlas goes through the generator once; the RGBA result is an
:class:`AtlasEdit` that :func:`render_edits` maps into every frame and blends over the original video.
Foreground and background layers are trained in separate runs and combined by rendering both edits.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import madgrad
import torch
import torch.nn.functional as F

from .. import __version__
from ..nla.render import AtlasBBox, AtlasEdit, discretise_atlas, frame_alpha, render_frame
from ..checkpoint import NonFiniteLoss, nonfinite_message, remove_run_file
from ..edit.views import structure_view
from ..edit.compositing import GREEN, on_green_screen, solid_background
from ..edit.layer import EditLayer
from ..edit.objective import TextBanks, edit_objective
from ..runtime.fast_path import EditRuntime, backward_deferred, deferred_output, free_cuda_memory, thread_scope
from ..edit.generator import build_generator
from ..io.input_checks import require_finite
from ..edit.losses import bootstrap_weight
from ..nla.fit import FittedNLA
from ..progress import Hooks, cancel_inside, losses_to_floats
from ..seeding import make_generator
from ..clip.templates import as_prompt_list
from ..image.training import _relevancy, _resume, _save_if_finite, result_settings, save_checkpoint
from .atlas_dataset import VideoAtlasDataset, layer_key, training_bbox
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
    framing, the frames the foreground inputs come from (``frames`` [T,3,H,W] 0..1 or uint8 as given to
    :func:`train_video_edit_layer`, default the stored ones), every
    setting including ``iters``, and with ``clip`` its identity and the autocast dtype (as
    :func:`~t2l_core.image.training.input_fingerprint`)."""
    h = hashlib.sha256()
    for k, v in sorted(nla.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(_frames_u8(nla, frames).contiguous().numpy().tobytes())
    h.update(json.dumps({k: b.to_dict() for k, b in sorted(nla.bboxes.items())}, sort_keys=True).encode())
    d = result_settings(config, clip)
    d["layer"] = layer_key(d["layer"])
    h.update(json.dumps(d, sort_keys=True, default=str).encode())
    h.update(__version__.encode())
    return h.hexdigest()


def default_video_checkpoint_path(folder: str | Path, nla: FittedNLA, config: VideoEditConfig, clip=None,
                                  frames: Optional[torch.Tensor] = None) -> Path:
    return Path(folder) / f"video_edit_{nla_fingerprint(nla, config, clip, frames)[:16]}.safetensors"


def _frames_u8(nla: FittedNLA, frames: Optional[torch.Tensor]) -> torch.Tensor:
    if frames is None:
        return nla.frames_u8
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [T,3,H,W], got {tuple(frames.shape)}")
    nla.check_frames(frames)
    require_finite(frames, "the frames")
    if frames.dtype == torch.uint8:
        return frames.cpu()
    return (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


# -- forward ------------------------------------------------------------------------------------------


def sample_into_frame(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Atlas-crop maps [1,C,ha,wa] -> frame crop [1,C,h,w]: bilinear, align_corners=False, clamped to 0..1."""
    return F.grid_sample(maps, grid.to(maps), mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


def atlas_examples(out: torch.Tensor, atlas_crop: torch.Tensor, frames: list, layer: str,
                   multiply_alpha: bool = True, authors_inputs: bool = False) -> list:
    """Map a generator output on an atlas crop into the frame crops.

    ``out`` [1,4,ha,wa] (RGB + opacity, 0..1) on ``atlas_crop`` [1,3,ha,wa]; ``frames`` [FrameCrop].
    Returns per frame (input, colour, opacity, composite, green screen), each [1,C,h,w]: the rendered atlas
    maps sampled into the frame; foreground (``multiply_alpha``): every map times the NLA opacity a_N and
    the green screen plus (1 - a_N)·green, so screen = a_N(aC + (1-a)G) + (1-a_N)G.
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


# -- training -----------------------------------------------------------------------------------------


def train_video_edit_layer(clip, nla: FittedNLA, config: VideoEditConfig, *, frames: Optional[torch.Tensor] = None,
                           hooks: Optional[Hooks] = None, checkpoint_path: str | Path | None = None,
                           resume: bool = False, render: bool = True,
                           other_edit: Optional[AtlasEdit] = None, keep_checkpoint: bool = False) -> VideoEditResult:
    """Train an edit layer on ``config.layer``'s atlas of ``nla``.

    ``frames`` [T,3,H,W] (0..1 or uint8): the original video (default: the frames stored with the atlas);
    used for the foreground inputs and as the base the edit is blended over. ``render``: also return the
    edited video (streamed, one frame at a time). ``other_edit``: an AtlasEdit of the other layer to
    combine in the rendered video (foreground and background trained one after the other).
    Checkpoints follow the image rule (:func:`~t2l_core.image.training.train_edit_layer`): resumed only for the
    same atlas, frames, settings, ``iters`` and CLIP, removed when the run finishes unless ``keep_checkpoint``.
    """
    config.validate()
    hooks = hooks or Hooks()
    with torch.inference_mode(False), torch.enable_grad(), thread_scope(config.runtime.threads):
        free_cuda_memory(clip.device)
        try:
            return _train(clip, nla, config, frames, hooks, checkpoint_path, resume, render, other_edit,
                          keep_checkpoint)
        finally:
            free_cuda_memory(clip.device)


def _train(clip, nla: FittedNLA, config: VideoEditConfig, frames: Optional[torch.Tensor], hooks: Hooks,
           checkpoint_path, resume: bool, render: bool, other_edit: Optional[AtlasEdit],
           keep_checkpoint: bool = False) -> VideoEditResult:
    layer = layer_key(config.layer)
    if layer not in nla.bboxes:
        raise ValueError(f"this atlas has no {'foreground' if layer == 'fg' else 'background'} layer"
                         + (" (it was fitted without masks): edit the background instead" if layer == "fg" else ""))
    device = clip.device
    u8 = _frames_u8(nla, frames)
    fingerprint = nla_fingerprint(nla, config, clip, u8)
    runtime = EditRuntime.from_config(clip, config)  # fast path: same weights, faster passes
    clip = runtime.clip
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    notes: list[str] = []
    dataset = VideoAtlasDataset(nla.model, nla.bboxes[layer], u8, config.dataset_config(), device=device,
                                on_progress=hooks.phase_callback("sampling the atlas (texel chunks)"))
    banks = TextBanks.build(clip, config.prompt, config.screen_prompt, config.directional_source())
    gen = runtime.prepare(build_generator(config.generator, device=device, seed=config.seed))
    generate = runtime.wrap(gen)
    staged = runtime.staged_backward  # back-propagate pass by pass (less memory, same gradients)
    opt = madgrad.MADGRAD(gen.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    rng = make_generator(config.seed)
    start, history = _resume(ckpt, resume, gen, opt, rng, fingerprint, config.iters, notes)
    views, weights = config.view_config(), config.loss_weights()
    augmenter = runtime.augmenter(views)
    use_relevancy = bool(config.roi_text and config.roi_text.strip()) and config.lambda_bootstrap > 0
    boot_steps = config.bootstrap_steps if config.bootstrap_steps is not None else config.iters
    full_tokens: Optional[torch.Tensor] = None
    mid = nla.num_frames // 2

    def preview() -> torch.Tensor:
        edit = _atlas_edit(gen, dataset.atlas, dataset.bbox)
        fg, bg = (edit, other_edit) if layer == "fg" else (other_edit, edit)
        base = u8[mid].float() / 255.0
        return render_frame(nla.model, mid, base, fg, bg).permute(1, 2, 0).cpu()

    done = start  # finished steps; rng_state = the RNG at the start of step ``done`` (what a resume repeats)
    rng_state = rng.get_state()
    try:
        # cancel within a layer, not a step; on the fast path freed activations go back to the OS at once
        with cancel_inside(hooks.check_cancel, gen, clip.visual), runtime.heap_scope():
            for step in range(start, config.iters):
                hooks.cancel_point()
                sample = dataset.sample(step, rng)
                inputs, colors, alphas, comps, screens = [], [], [], [], []
                out = generate(sample.atlas_crop)
                for x, c, a, cp, sc in atlas_examples(out, sample.atlas_crop, sample.frames, layer,
                                                      config.multiply_foreground_alpha, config.authors_fg_inputs):
                    inputs.append(x), colors.append(c), alphas.append(a), comps.append(cp), screens.append(sc)
                if config.direct_pass:
                    fc = sample.frames[sample.direct]
                    o = generate(fc.image)
                    if layer == "fg" and config.multiply_foreground_alpha:
                        o = o * fc.nla_alpha
                    inputs.append(fc.image), colors.append(o[:, :3]), alphas.append(o[:, 3:])
                    comps.append(None), screens.append(None)
                src_tokens = None
                deferred: list[torch.Tensor] = []  # fast path: the whole atlas is regenerated for its backward
                if sample.full is not None:
                    o = deferred_output(generate, sample.full) if staged else generate(sample.full)
                    deferred = [o] if staged else []
                    inputs.append(sample.full), colors.append(o[:, :3]), alphas.append(o[:, 3:])
                    comps.append(None), screens.append(None)
                    if config.lambda_structure > 0:
                        if full_tokens is None:
                            with torch.no_grad():
                                full_tokens = clip.image_tokens(structure_view(sample.full, views))
                        src_tokens = [None] * (len(inputs) - 1) + [full_tokens]
                bw = bootstrap_weight(step, lambda_bootstrap=config.lambda_bootstrap, bootstrap_steps=boot_steps,
                                      schedule=config.bootstrap_schedule, min_weight=config.bootstrap_min)
                targets = None
                if use_relevancy and bw > 0:
                    targets = [_relevancy(clip, x, config, (224, 224)) for x in inputs]
                opt.zero_grad(set_to_none=True)
                total, terms = edit_objective(
                    clip, inputs, colors, alphas, banks, views, weights, rng, bootstrap_targets=targets,
                    bootstrap_weight=bw, source_tokens=src_tokens, augmenter=augmenter,
                    authors_bootstrap_bug=config.authors_bootstrap_bug, cancel_point=hooks.cancel_point,
                    composites=comps, screens=screens, staged_backward=staged, defer_report=True)
                if staged:
                    backward_deferred(generate, [sample.full] * len(deferred), deferred, hooks.cancel_point)
                else:
                    total.backward()
                terms = losses_to_floats(terms)  # the step's one device-to-host transfer, after its backward
                if not math.isfinite(terms["total"]):  # before the update: the weights stay the last good ones
                    saved = _save_if_finite(ckpt, gen, opt, done, rng_state, config, fingerprint, history[:done])
                    raise NonFiniteLoss(nonfinite_message(
                        step + 1, terms, saved, "Lower the learning rate or the loss weights."))
                hooks.cancel_point()
                opt.step()
                opt.param_groups[0]["lr"] = max(config.lr_min, config.lr_decay * opt.param_groups[0]["lr"])
                terms["lr"] = opt.param_groups[0]["lr"]
                if targets is not None:
                    terms["bootstrap_weight"] = bw
                history.append(terms)
                runtime.end_step()
                done, rng_state = step + 1, rng.get_state()
                hooks.step(step + 1, config.iters, terms, preview)
    except NonFiniteLoss:
        raise
    except BaseException:
        if ckpt is not None:
            save_checkpoint(ckpt, gen, opt, done, rng_state, config, fingerprint, history[:done])
        raise
    if ckpt is not None and keep_checkpoint:
        save_checkpoint(ckpt, gen, opt, done, rng_state, config, fingerprint, history)
    else:
        remove_run_file(ckpt)
    step = done

    info = {"prompt": as_prompt_list(config.prompt), "steps": step, "seed": config.seed,
            "working_size": list(dataset.atlas.shape[-2:]),
            "atlas": {"layer": layer, "bbox": dataset.bbox.to_dict(), "frames": nla.num_frames,
                      "height": nla.size[0], "width": nla.size[1]},
            "config": json.loads(json.dumps(config.to_dict(), default=str)), "version": __version__}
    edit_layer = EditLayer(gen.state_dict(), config.generator, info)
    edit = _atlas_edit(gen, dataset.atlas, dataset.bbox)
    video = None
    if render:
        fg, bg = (edit, other_edit) if layer == "fg" else (other_edit, edit)
        video = render_video(nla, u8, fg, bg, on_frame=hooks.phase_callback("rendering the edited video (frames)"))
    return VideoEditResult(edit_layer, edit, dataset.atlas[0].cpu(), video, history, step,
                           ckpt if keep_checkpoint else None, notes, start)


@torch.no_grad()
def render_video(nla: FittedNLA, frames_u8: torch.Tensor, fg_edit: Optional[AtlasEdit] = None,
                 bg_edit: Optional[AtlasEdit] = None, on_frame=None) -> torch.Tensor:
    """Edited video [T,3,H,W] float: atlas edits blended over ``frames_u8`` [T,3,H,W] uint8, one frame at a
    time (only the output is allocated at full size)."""
    T = frames_u8.shape[0]
    out = torch.empty(frames_u8.shape, dtype=torch.float32)
    for t in range(T):
        out[t] = render_frame(nla.model, t, frames_u8[t].float() / 255.0, fg_edit, bg_edit)
        if on_frame is not None:
            on_frame(t + 1, T)
    return out


@torch.no_grad()
def frames_baseline(layer: EditLayer, nla: FittedNLA, which: str, frames: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The paper's "frames baseline": the generator applied to every frame independently (foreground input =
    frame x NLA opacity), blended with the same layer weights as an atlas edit. Returns [T,3,H,W]."""
    key = layer_key(which)
    u8 = _frames_u8(nla, frames)
    out = torch.empty(u8.shape, dtype=torch.float32)
    for t in range(u8.shape[0]):
        img = u8[t].float() / 255.0
        an = frame_alpha(nla.model, t)
        x = img * an[None] if key == "fg" else img
        color, alpha = layer.predict(x[None])
        w = (an if key == "fg" else 1 - an)[None] * alpha[0]
        out[t] = (img + w * (color[0] - img)).clamp(0, 1)
    return out


@torch.no_grad()
def _atlas_edit(gen: torch.nn.Module, atlas: torch.Tensor, bbox: AtlasBBox) -> AtlasEdit:
    """The whole atlas [1,3,Ha,Wa] through the generator once -> AtlasEdit over ``bbox`` (CPU)."""
    out = gen(atlas).float().cpu()[0]
    return AtlasEdit(rgb=out[:3], alpha=out[3], bbox=bbox)


# -- applying a trained layer to an atlas ---------------------------------------------------------------


def layer_atlas_bbox(layer: EditLayer, nla: FittedNLA, which: Optional[str] = None) -> AtlasBBox:
    """The atlas framing an edit layer runs on: the one it was trained on (video layers), else the NLA's
    discretised atlas of ``which`` (an image-trained layer applied to an atlas: the paper's atlas baseline)."""
    if not isinstance(layer, EditLayer):
        raise ValueError("an edit layer must come from Train Edit Layer (Text2LIVE) or EditLayer.load")
    atlas_info = layer.info.get("atlas")
    if atlas_info:
        trained = atlas_info["layer"]
        if which is not None and layer_key(which) != trained:
            raise ValueError(f"this edit layer was trained on the {'foreground' if trained == 'fg' else 'background'} "
                             f"atlas; connect it to the {trained}_edit_layer input")
        if (atlas_info.get("frames"), atlas_info.get("height"), atlas_info.get("width")) != (nla.num_frames, *nla.size):
            raise ValueError(
                f"this edit layer was trained on an atlas of {atlas_info.get('frames')} frames of "
                f"{atlas_info.get('width')}x{atlas_info.get('height')}, not on this one ({nla.num_frames} frames of "
                f"{nla.size[1]}x{nla.size[0]}): use the atlas it was trained on")
        return AtlasBBox.from_dict(atlas_info["bbox"])
    if which is None:
        raise ValueError("this edit layer was trained on an image: say which atlas layer (fg or bg) to apply it to")
    key = layer_key(which)
    if key not in nla.bboxes:
        raise ValueError(f"this atlas has no {key} layer")
    return training_bbox(nla.bboxes[key], 1.0, 2 ** layer.generator_config.num_scales + 1)


def atlas_edit_from_layer(layer: EditLayer, nla: FittedNLA, which: Optional[str] = None,
                          device: torch.device | str = "cpu", memory_budget: Optional[int] = None,
                          on_progress=None, resolution: str = "working") -> AtlasEdit:
    """Run ``layer`` once on the atlas image it belongs to -> :class:`AtlasEdit` for :func:`render_edits`.

    ``on_progress(i, n)`` is called while the atlas image is sampled (progress / cancellation).
    ``resolution`` as in :meth:`EditLayer.predict`: a layer trained on this atlas runs at its training size
    either way; an image-trained layer runs at its working size and is upsampled guided by the atlas image
    (``"working"``), or at the atlas image's size (``"native"``)."""
    bbox = layer_atlas_bbox(layer, nla, which)
    atlas = discretise_atlas(nla.model, bbox, on_chunk=on_progress)[None]
    with torch.inference_mode(False):
        color, alpha = layer.predict(atlas.to(device), device=device, memory_budget=memory_budget,
                                     resolution=resolution)
    return AtlasEdit(rgb=color[0].float().cpu(), alpha=alpha[0, 0].float().cpu(), bbox=bbox)
