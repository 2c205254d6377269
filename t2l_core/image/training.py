"""Image edits (paper section 3.1): the settings, the examples of a step, and training an edit layer.

Public API::

    config = EditConfig.from_flat(prompt="oreo cake", source_prompt="cake", iters=1000, size=512, seed=0)
    result = train_edit_layer(clip, image_1x3xHxW, config, hooks=Hooks(...),
                              checkpoint_path="ckpt.safetensors", resume=True)
    result.layer            # EditLayer: apply to other images/frames, save/load safetensors
    result.output           # LayerOutput at the input's own resolution (color, alpha, composite, greenscreen)
    result.history          # per-step loss dicts

A step's examples (:class:`ImageExamples`) are an augmented crop of the internal dataset, plus the whole
working image every ``full_image_every`` steps; the loop itself (objective, MADGRAD, checkpoints, cancel) is
:func:`t2l_core.edit.training_loop.train_generator`, shared with video edits.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from .. import __version__
from ..checkpoint import EDIT_JOB, CheckpointFile, result_hash
from ..clip.templates import as_prompt_list
from ..device import autocast_dtype
from ..edit.config import PROTECT_FIELDS, RUNTIME_FIELDS, EditConfig
from ..edit.bootstrap import relevancy_target, uses_relevancy
from ..edit.compositing import composite
from ..edit.generator import build_generator
from ..edit.layer import RESOLUTIONS, EditLayer, LayerOutput
from ..edit.objective import StepExamples, TextBanks
from ..edit.protection import (SpillReport, exclusion_map, exclusion_text, is_protected, protect_output,
                               protected_alphas, protected_region, spill_report, unprotected_target)
from ..edit.step_runner import PlainStepRunner
from ..edit.training_loop import LoopSettings, WholeInputTarget, train_generator
from ..io.input_checks import require_finite
from ..progress import PHASE_DATASET, PHASE_KEY, PHASE_RELEVANCY, PHASE_STRUCTURE, PHASE_TEXT, Hooks, startup_phase
from .internal_dataset import InternalDataset, working_image

@dataclass
class EditResult:
    """What :func:`train_edit_layer` returns."""

    layer: EditLayer
    output: LayerOutput  # rendered at the input's own resolution
    history: list[dict]
    steps: int
    checkpoint_path: Optional[Path] = None  # the kept checkpoint (keep_checkpoint), else None
    notes: list[str] = field(default_factory=list)  # what the user should know: resume, fallbacks taken
    resumed_from: int = 0  # steps taken from a checkpoint
    spill: Optional[SpillReport] = None  # where the opacity lies (a protected region or an edit region given)


def input_fingerprint(image: torch.Tensor, config: EditConfig, mask: Optional[torch.Tensor] = None,
                      clip=None, protect_mask: Optional[torch.Tensor] = None) -> str:
    """Hash of everything that determines a run's result (a checkpoint key).

    Covered: the image, the optional masks, every setting including ``iters`` (a run resumes only from a run
    with the same target), the seed and the generator settings, the CLIP's identity (weights, dtype, device
    class, config; see :meth:`ClipModel.identity`), the autocast dtype the run uses and
    :data:`~t2l_core.checkpoint.RESULT_VERSION`. Speed settings that leave the computed values unchanged
    (``RUNTIME_FIELDS``) are left out.

    Args:
        image: [1,3,H,W] in 0..1.
        config: the edit's settings.
        mask: None, or the bootstrap mask [1,1,H,W].
        clip: None, or the CLIP model the run uses.
        protect_mask: None, or the protect mask [1,1,H,W].

    Returns:
        A sha256 hex digest.
    """
    h = result_hash()
    h.update(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    if mask is not None:
        h.update(mask.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    if protect_mask is not None:
        h.update(b"protect")
        h.update(protect_mask.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    protected = is_protected(config, protect_mask)
    h.update(json.dumps(result_settings(config, clip, protected), sort_keys=True, default=str).encode())
    return h.hexdigest()


def result_settings(config: EditConfig, clip=None, protected: bool = False) -> dict:
    """The settings that change a run's result.

    Args:
        config: the edit's settings.
        clip: None, or the CLIP model the run uses.
        protected: whether the run has a protected region; without one the spill settings
            (``PROTECT_FIELDS``) change nothing and are left out.

    Returns:
        The flat config without ``RUNTIME_FIELDS``, plus the CLIP identity and the effective autocast dtype
        when ``clip`` is given.
    """
    d = config.to_dict()
    for name in RUNTIME_FIELDS + (() if protected else PROTECT_FIELDS):
        d.pop(name, None)
    if clip is not None:
        d["clip"] = clip.identity()
        amp = autocast_dtype(config.runtime.autocast, clip.device) if config.runtime.fast else None
        d["autocast_dtype"] = str(amp)
    return d


def default_checkpoint_path(folder: str | Path, image: torch.Tensor, config: EditConfig,
                            mask: Optional[torch.Tensor] = None, clip=None,
                            protect_mask: Optional[torch.Tensor] = None) -> Path:
    """``folder/edit_<fingerprint[:16]>.safetensors``; arguments as :func:`input_fingerprint`."""
    return Path(folder) / f"edit_{input_fingerprint(image, config, mask, clip, protect_mask)[:16]}.safetensors"


# -- training -----------------------------------------------------------------------------------------


def prepare_image(image: torch.Tensor) -> torch.Tensor:
    """The image an edit trains on.

    Args:
        image: [1,C,H,W] or [C,H,W], C in 1, 3, 4 (gray repeated, alpha dropped).

    Returns:
        [1,3,H,W] fp32 in 0..1 (a copy).

    Raises:
        ValueError: another shape (a batch), or non-finite values.
    """
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[0] != 1 or image.shape[1] not in (1, 3, 4):
        raise ValueError(
            f"expected one image [1,C,H,W] (or [C,H,W]) with C in 1, 3 or 4, got {tuple(image.shape)}; "
            "a batch must be edited one image at a time"
        )
    require_finite(image, "the image")
    image = image.detach().clone().float()
    if image.shape[1] == 1:
        image = image.expand(1, 3, *image.shape[-2:]).clone()
    return image[:, :3].clamp(0, 1)


def prepare_mask(mask: Optional[torch.Tensor], image: torch.Tensor, name: str = "the bootstrap mask"
                 ) -> Optional[torch.Tensor]:
    """A mask given by the user: the bootstrap target of paper eq. 8 (1 = region to edit) or the protect mask
    (1 = leave untouched).

    Args:
        mask: None, or [H,W], [1,H,W] or [1,1,H,W] of ``image``'s size.
        image: [1,3,H,W].
        name: the mask's name in error messages.

    Returns:
        None, or [1,1,H,W] in 0..1 (a copy).

    Raises:
        ValueError: another shape or size, or non-finite values.
    """
    if mask is None:
        return None
    require_finite(mask, name)
    m = mask.detach().clone().float()
    while m.ndim < 4:
        m = m.unsqueeze(0)
    if m.shape[0] != 1 or m.shape[1] != 1 or m.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)} but the image is {image.shape[-1]}x{image.shape[-2]} "
            "px; give one mask of the image's size"
        )
    return m.clamp(0, 1)


class ImageExamples:
    """The examples of an image edit (paper section 3.1): an augmented crop of the working image, plus the
    whole working image every ``full_image_every`` steps, each through the generator once (batch size 1).

    Args:
        runner_clip: the CLIP the runner computes with (relevancy targets, the fixed structure target).
        work: the working image ``[1,3,h,w]`` in 0..1 on the training device.
        mask: a bootstrap mask ``[1,1,h,w]`` of the working image, or None.
        config: the edit's settings.
        hooks: reports the start-up phases.
        protect: the protected region ``[1,1,h,w]`` of the working image, or None: it follows the crops, its
            opacity is penalised and it is taken out of the bootstrap targets (:mod:`t2l_core.edit.protection`).
    """

    def __init__(self, runner_clip, work: torch.Tensor, mask: Optional[torch.Tensor], config: EditConfig,
                 hooks: Optional[Hooks] = None, protect: Optional[torch.Tensor] = None) -> None:
        hooks = hooks or Hooks()
        self.clip, self.work, self.config = runner_clip, work, config
        self.use_relevancy = mask is None and uses_relevancy(config)
        if self.use_relevancy and config.bootstrap.relevancy_on == "once":
            with startup_phase(hooks, PHASE_RELEVANCY):
                mask = relevancy_target(runner_clip, work, config, tuple(work.shape[-2:]))[None]  # [1,1,H,W]
        self.mask, self.protect = mask, protect
        masks = [m for m in (mask, protect) if m is not None]  # channels that follow the crops
        with startup_phase(hooks, PHASE_DATASET):
            self.dataset = InternalDataset(work, config.dataset, mask=torch.cat(masks, dim=1) if masks else None)
        self.whole_target = WholeInputTarget(runner_clip, config.views, config.weights.structure)

    def prepare(self, runner, hooks: Hooks) -> None:
        """See :meth:`t2l_core.edit.training_loop.ExampleSource.prepare`: the structure target of the whole
        working image."""
        if self.whole_target.weight > 0:
            with startup_phase(hooks, PHASE_STRUCTURE):
                self.whole_target.prepare(self.work)

    def examples(self, step: int, rng: torch.Generator, runner, bootstrap_weight: float) -> StepExamples:
        """See :meth:`t2l_core.edit.training_loop.ExampleSource.examples`."""
        sample = self.dataset.sample(step, rng)
        pairs = sample.examples()
        inputs = [x for x, _ in pairs]
        protect = [m[:, -1:] for _, m in pairs] if self.protect is not None else None
        targets = None
        if bootstrap_weight > 0 and (self.mask is not None or self.use_relevancy):
            if self.mask is not None:
                targets = [m[:, 0] for _, m in pairs]
            else:  # before the generator runs: the relevancy pass and its activations come and go first
                targets = [relevancy_target(self.clip, x, self.config) for x in inputs]
            if protect is not None:
                targets = [unprotected_target(t, p) for t, p in zip(targets, protect)]
        # the whole image (2nd example) is an extra example: a runner may regenerate it for its backward pass
        outs = [runner.generate(x, deferred=i > 0) for i, x in enumerate(inputs)]
        alphas = [o[:, 3:] for o in outs]
        return StepExamples(inputs, [o[:, :3] for o in outs], protected_alphas(alphas, protect),
                            source_tokens=self.whole_target.last_of(self.work, 2) if sample.full is not None else None,
                            bootstrap_targets=targets, protect=protect,
                            trained_alphas=alphas if protect is not None else None)

    def preview(self, runner) -> torch.Tensor:
        """The composite on the working image, [h,w,3] in 0..1 on the CPU."""
        out = runner.forward(self.work)
        protect = None if self.protect is None else [self.protect]
        alpha = protected_alphas([out[:, 3:]], protect)[0]
        return composite(out[:, :3], alpha, self.work)[0].permute(1, 2, 0).cpu()


# each argument is a documented input of the public API (t2l_core.api.train_edit_layer)
def train_edit_layer(clip, image: torch.Tensor, config: EditConfig, *, hooks: Optional[Hooks] = None,  # noqa: PLR0913
                     bootstrap_mask: Optional[torch.Tensor] = None, checkpoint_path: str | Path | None = None,
                     resume: bool = False, output_size: Optional[int] = None,
                     memory_budget: Optional[int] = None, keep_checkpoint: bool = False,
                     resolution: str = "working", runner: Optional[PlainStepRunner] = None,
                     protect_mask: Optional[torch.Tensor] = None) -> EditResult:
    """Train an edit layer for ``image`` (paper section 3.1).

    Args:
        clip: the CLIP model (:class:`t2l_core.clip.model.ClipModel`).
        image: ``[1,3,H,W]`` (or ``[3,H,W]``; gray/RGBA handled) in 0..1.
        config: the edit's settings.
        hooks: progress, cancel and preview callbacks.
        bootstrap_mask: ``[H,W]``/``[1,H,W]``/``[1,1,H,W]`` in 0..1 (1 = region to edit); replaces the relevancy
            map as bootstrap target.
        checkpoint_path: where a cancel or an error leaves a resumable checkpoint; ``resume`` continues from it
            when it was made with the same inputs, settings, target ``iters`` and CLIP (another one is not
            used: the run starts over and replaces it, and ``result.notes`` says so). A finished run removes it
            unless ``keep_checkpoint``.
        output_size, memory_budget, resolution: how the final layer is rendered at the input's resolution
            (:meth:`EditLayer.render`): ``"working"`` runs the generator at the working size and upsamples the
            layer guided by the input, ``"native"`` runs it at the input's resolution (``output_size`` = shorter
            side to run it at instead), within ``memory_budget`` bytes; fallbacks taken are in ``result.notes``.
        runner: how steps are computed; None = the plain fp32 path (:func:`t2l_core.api.train_edit_layer` picks
            the runner the config's speed settings ask for).
        protect_mask: ``[H,W]``/``[1,H,W]``/``[1,1,H,W]`` in 0..1 (1 = leave untouched): with
            ``config.exclude_text`` the region the edit must leave alone (:mod:`t2l_core.edit.protection`); the
            output's composite equals the input where it is 1, and ``result.spill`` / ``result.notes`` say how
            much opacity lies there.

    Returns:
        An :class:`EditResult`: the layer, its output at the input's resolution, the loss history.

    Raises:
        ValueError: bad inputs or settings; NonFiniteLoss: the loss diverged.
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got '{resolution}'")
    config.validate()
    hooks = hooks or Hooks()
    runner = runner or PlainStepRunner(clip, config.runtime.threads)
    with torch.inference_mode(False), torch.enable_grad(), runner.run_scope():
        image = prepare_image(image)
        mask = prepare_mask(bootstrap_mask, image)
        protect = prepare_mask(protect_mask, image, "the protect mask")
        with startup_phase(hooks, PHASE_KEY):  # hashes the CLIP's weights once per loaded CLIP
            file = CheckpointFile(checkpoint_path, EDIT_JOB, input_fingerprint(image, config, mask, clip, protect))
        work = working_image(image, config.dataset.size).to(clip.device)
        work_mask = None if mask is None else F.interpolate(mask.to(clip.device), size=work.shape[-2:],
                                                            mode="bilinear", align_corners=False, antialias=True)
        excluded = None
        if exclusion_text(config) is not None:
            with startup_phase(hooks, PHASE_RELEVANCY):
                excluded = exclusion_map(runner.clip, work, config)
        given_protect = None if protect is None else protect.to(clip.device)
        work_protect = protected_region([given_protect, excluded], tuple(work.shape[-2:]))
        source = ImageExamples(runner.clip, work, work_mask, config, hooks, protect=work_protect)
        banks = TextBanks.build(runner.clip, config.prompt, config.screen_prompt, config.directional_source(),
                                on_progress=hooks.phase_callback(PHASE_TEXT))
        gen = runner.prepare(build_generator(config.generator, device=clip.device, seed=config.seed))
        run = train_generator(gen, source, LoopSettings.from_config(config, banks), runner, hooks, file,
                              resume, keep_checkpoint)
        layer = EditLayer(gen.state_dict(), config.generator, _layer_info(config, run.steps, work, image))
        output = layer.render(image.to(clip.device), size=output_size, memory_budget=memory_budget,
                              resolution=resolution)
        trained_alpha = output.alpha
        full_protect = protected_region([given_protect, excluded], tuple(image.shape[-2:]))
        if full_protect is not None:
            output = protect_output(output, image.to(clip.device), full_protect)
        spill = _spill(runner.clip, source, config, mask, trained_alpha, output.alpha, full_protect)
    output = LayerOutput(*(t.cpu() for t in (output.color, output.alpha, output.composite, output.greenscreen)))
    return EditResult(layer=layer, output=output, history=run.history, steps=run.steps,
                      checkpoint_path=file.path if keep_checkpoint else None,
                      notes=run.notes + layer.notes + (spill.lines() if spill else []), resumed_from=run.resumed_from,
                      spill=spill)


def _spill(clip, source: ImageExamples, config: EditConfig, mask: Optional[torch.Tensor], trained_alpha: torch.Tensor,
           alpha: torch.Tensor, protect: Optional[torch.Tensor]) -> Optional[SpillReport]:
    """Where the edit's opacity lies, when the run has a protected region or an edit region (the bootstrap
    mask, else the relevancy map of ``roi_text`` on the working image); None when it has neither."""
    region = mask
    if region is None and source.use_relevancy:
        region = source.mask if source.mask is not None else relevancy_target(
            clip, source.work, config, tuple(source.work.shape[-2:]))[None]
    if protect is None and region is None:
        return None
    return spill_report(trained_alpha, alpha, protect, region)


def _layer_info(config: EditConfig, steps: int, work: torch.Tensor, image: torch.Tensor) -> dict:
    """What a saved layer records about its training."""
    return {"prompt": as_prompt_list(config.prompt), "steps": steps, "seed": config.seed, "size": config.dataset.size,
            "working_size": list(work.shape[-2:]), "input_size": list(image.shape[-2:]),
            "config": json.loads(json.dumps(config.to_dict(), default=str)), "version": __version__}
