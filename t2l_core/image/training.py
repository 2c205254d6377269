"""Train an edit layer on one image (paper section 3.1; method notes 1.1-1.8).

Public API::

    config = EditConfig.from_flat(prompt="oreo cake", source_prompt="cake", iters=1000, size=512, seed=0)
    result = train_edit_layer(clip, image_1x3xHxW, config, hooks=Hooks(...),
                              checkpoint_path="ckpt.safetensors", resume=True)
    result.layer            # EditLayer: apply to other images/frames, save/load safetensors
    result.output           # LayerOutput at the input's own resolution (color, alpha, composite, greenscreen)
    result.history          # per-step loss dicts

Each step: sample the internal dataset (an augmented crop, plus the whole working image every 75 steps),
run the generator once per example (batch size 1), compute :func:`edit_objective`, MADGRAD step, then
lr ← max(lr_min, lr_decay·lr). All randomness comes from a local generator seeded with ``seed``.
Cancellation (``hooks.check_cancel`` raising, also between the stages of a step) or an error saves a
resumable safetensors checkpoint, then re-raises; a non-finite loss stops the run with the last good state
saved. A finished run removes its checkpoint (``keep_checkpoint`` keeps it); see :mod:`.checkpoint_files`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import madgrad
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

from .. import __version__
from ..checkpoint import (NonFiniteLoss, all_finite, nonfinite_message, optimizer_tensors, remove_run_file,
                               resumed_note, stale_note)
from ..edit.config import RUNTIME_FIELDS, EditConfig
from ..edit.views import structure_view
from ..edit.compositing import composite
from ..edit.layer import RESOLUTIONS, EditLayer, LayerOutput
from ..edit.objective import TextBanks, edit_objective
from ..runtime.fast_path import (EditRuntime, autocast_dtype, backward_deferred, deferred_output,
                        free_cuda_memory, thread_scope)
from ..edit.generator import build_generator
from .internal_dataset import InternalDataset, working_image
from ..edit.losses import bootstrap_weight
from ..io.input_checks import require_finite
from ..progress import Hooks, cancel_inside, losses_to_floats
from ..seeding import make_generator
from ..clip.templates import as_prompt_list

CHECKPOINT_FORMAT = "t2l_edit_checkpoint/1"


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


def lr_at(step: int, lr: float = 2.5e-3, decay: float = 0.99, lr_min: float = 1e-5) -> float:
    """Learning rate used for 0-based ``step`` (after ``step`` decays)."""
    return max(lr_min, lr * decay**step)


def input_fingerprint(image: torch.Tensor, config: EditConfig, mask: Optional[torch.Tensor] = None,
                      clip=None) -> str:
    """Hash of everything that determines a run's result (a checkpoint key): the image, the optional mask,
    every setting including ``iters`` (a run resumes only from a run with the same target), the seed and
    the generator settings, the CLIP's identity (weights, dtype, device class, config; see
    :meth:`ClipModel.identity`) and the autocast dtype the run uses. Speed settings that leave the
    computed values unchanged (``RUNTIME_FIELDS``) are left out."""
    h = hashlib.sha256()
    h.update(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    if mask is not None:
        h.update(mask.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(json.dumps(result_settings(config, clip), sort_keys=True, default=str).encode())
    h.update(__version__.encode())
    return h.hexdigest()


def result_settings(config: EditConfig, clip=None) -> dict:
    """The settings that change a run's result: the config without ``RUNTIME_FIELDS``, plus the CLIP identity
    and the effective autocast dtype when ``clip`` is given."""
    d = config.to_dict()
    for name in RUNTIME_FIELDS:
        d.pop(name, None)
    if clip is not None:
        d["clip"] = clip.identity()
        amp = autocast_dtype(config.runtime.autocast, clip.device) if config.runtime.fast else None
        d["autocast_dtype"] = str(amp)
    return d


def default_checkpoint_path(folder: str | Path, image: torch.Tensor, config: EditConfig,
                            mask: Optional[torch.Tensor] = None, clip=None) -> Path:
    return Path(folder) / f"edit_{input_fingerprint(image, config, mask, clip)[:16]}.safetensors"


# -- checkpoints --------------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, generator: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    rng_state: torch.Tensor, config: EditConfig, fingerprint: str, history: Sequence[dict]) -> Path:
    """Write a resumable checkpoint (safetensors): weights, MADGRAD state, RNG state, step, lr, config."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"gen.{k}": v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    params = list(generator.parameters())
    index = {id(q): i for i, q in enumerate(params)}
    for q, st in optimizer.state.items():
        if isinstance(q, torch.Tensor):
            for name, t in st.items():
                tensors[f"opt.{index[id(q)]}.{name}"] = t.detach().cpu().contiguous()
        elif q == "k":
            tensors["opt.k"] = st.detach().cpu().reshape(-1)
    tensors["rng_state"] = rng_state.cpu()
    meta = {
        "format": CHECKPOINT_FORMAT, "step": str(step), "lr": repr(optimizer.param_groups[0]["lr"]),
        "config": json.dumps(config.to_dict(), default=str), "fingerprint": fingerprint,
        "history": json.dumps(list(history)), "version": __version__,
    }
    tmp = p.with_name(p.name + ".part")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(p)
    return p


def _load_checkpoint(path: Path, generator: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     fingerprint: str) -> Optional[tuple[int, torch.Tensor, list[dict]]]:
    """Restore generator, MADGRAD state and lr from ``path``; returns (step, rng state, history), or None when
    the checkpoint was made for other inputs or settings (it is then not used)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a Text2LIVE edit checkpoint; delete it or turn resume off")
        if meta.get("fingerprint") != fingerprint:
            return None
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    dev = next(generator.parameters()).device
    generator.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("gen.")})
    params = list(generator.parameters())
    for k, v in tensors.items():
        if k.startswith("opt.") and k != "opt.k":
            _, i, name = k.split(".", 2)
            q = params[int(i)]
            # same memory format as the parameter (channels-last on the fast path): bit-identical resumes
            optimizer.state[q][name] = torch.empty_like(q).copy_(v) if v.shape == q.shape else v.to(dev)
    if "opt.k" in tensors:
        optimizer.state["k"] = tensors["opt.k"].to(torch.long)
    optimizer.param_groups[0]["lr"] = float(meta["lr"])
    return int(meta["step"]), tensors["rng_state"], json.loads(meta.get("history", "[]"))


# -- training -----------------------------------------------------------------------------------------


def _prepare_image(image: torch.Tensor) -> torch.Tensor:
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


def _prepare_mask(mask: Optional[torch.Tensor], image: torch.Tensor) -> Optional[torch.Tensor]:
    if mask is None:
        return None
    require_finite(mask, "the bootstrap mask")
    m = mask.detach().clone().float()
    while m.ndim < 4:
        m = m.unsqueeze(0)
    if m.shape[0] != 1 or m.shape[1] != 1 or m.shape[-2:] != image.shape[-2:]:
        raise ValueError(
            f"the bootstrap mask has shape {tuple(mask.shape)} but the image is {image.shape[-1]}x{image.shape[-2]} "
            "px; give one mask of the image's size"
        )
    return m.clamp(0, 1)


def train_edit_layer(clip, image: torch.Tensor, config: EditConfig, *, hooks: Optional[Hooks] = None,
                     bootstrap_mask: Optional[torch.Tensor] = None, checkpoint_path: str | Path | None = None,
                     resume: bool = False, output_size: Optional[int] = None,
                     memory_budget: Optional[int] = None, keep_checkpoint: bool = False,
                     resolution: str = "working") -> EditResult:
    """Train an edit layer for ``image`` ``[1,3,H,W]`` (or ``[3,H,W]``; gray/RGBA handled) in 0..1.

    ``bootstrap_mask`` ``[H,W]``/``[1,H,W]``/``[1,1,H,W]`` in 0..1 (1 = region to edit) replaces the relevancy
    map as bootstrap target. ``checkpoint_path``: where a cancel or an error leaves a resumable checkpoint;
    ``resume`` continues from it when it was made with the same inputs, settings, target ``iters`` and CLIP
    (another one is not used: the run starts over and replaces it; ``result.notes`` says so). A finished run
    removes it unless ``keep_checkpoint``. The final layer is rendered at the input's own resolution within
    ``memory_budget`` bytes: ``resolution="working"`` runs the generator at the working size (what the training
    previews show) and upsamples the layer guided by the input, ``"native"`` runs it at the input's resolution
    (:meth:`EditLayer.predict`; ``output_size`` = shorter side to run it at instead); fallbacks taken there are
    in ``result.notes`` too.
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got '{resolution}'")
    config.validate()
    hooks = hooks or Hooks()
    with torch.inference_mode(False), torch.enable_grad(), thread_scope(config.runtime.threads):
        free_cuda_memory(clip.device)
        try:
            return _train(clip, image, config, hooks, bootstrap_mask, checkpoint_path, resume, output_size,
                          memory_budget, keep_checkpoint, resolution)
        finally:
            free_cuda_memory(clip.device)


def _train(clip, image: torch.Tensor, config: EditConfig, hooks: Hooks, bootstrap_mask: Optional[torch.Tensor],
           checkpoint_path: str | Path | None, resume: bool, output_size: Optional[int],
           memory_budget: Optional[int], keep_checkpoint: bool = False, resolution: str = "working") -> EditResult:
    image = _prepare_image(image)
    mask = _prepare_mask(bootstrap_mask, image)
    device = clip.device
    runtime = EditRuntime.from_config(clip, config)
    run_clip = runtime.clip  # same weights and text cache; fused image kernels on the fast path
    fingerprint = input_fingerprint(image, config, mask, clip)
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    notes: list[str] = []

    work = working_image(image, config.size).to(device)
    work_mask = None
    if mask is not None:
        work_mask = F.interpolate(mask.to(device), size=work.shape[-2:], mode="bilinear", align_corners=False,
                                  antialias=True)
    use_relevancy = mask is None and bool(config.roi_text and config.roi_text.strip()) and config.lambda_bootstrap > 0
    if use_relevancy and config.relevancy_on == "once":
        work_mask = _relevancy(run_clip, work, config, tuple(work.shape[-2:]))[None]  # [1,1,H,W]
    banks = TextBanks.build(run_clip, config.prompt, config.screen_prompt, config.directional_source())
    gen = runtime.prepare(build_generator(config.generator, device=device, seed=config.seed))
    generate = runtime.wrap(gen)  # channels-last input, autocast where it pays, fp32 output
    staged = runtime.staged_backward  # fast path: back-propagate pass by pass (less memory, same gradients)
    opt = madgrad.MADGRAD(gen.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    rng = make_generator(config.seed)
    start, history = _resume(ckpt, resume, gen, opt, rng, fingerprint, config.iters, notes)
    dataset = InternalDataset(work, config.dataset_config(), mask=work_mask)
    views, weights = config.view_config(), config.loss_weights()
    augmenter = runtime.augmenter(views)
    boot_steps = config.bootstrap_steps if config.bootstrap_steps is not None else config.iters
    full_tokens: Optional[torch.Tensor] = None  # structure target of the whole working image (fixed)

    def preview() -> torch.Tensor:
        out = generate(work)
        return composite(out[:, :3], out[:, 3:], work)[0].permute(1, 2, 0).cpu()

    done = start  # finished steps; rng_state = the RNG at the start of step ``done`` (what a resume repeats)
    rng_state = rng.get_state()
    try:
        # cancel within a layer, not a step; on the fast path freed activations go back to the OS at once
        with cancel_inside(hooks.check_cancel, gen, run_clip.visual), runtime.heap_scope():
            for step in range(start, config.iters):
                hooks.cancel_point()
                sample = dataset.sample(step, rng)
                examples = sample.examples()
                inputs = [x for x, _ in examples]
                bw = bootstrap_weight(step, lambda_bootstrap=config.lambda_bootstrap, bootstrap_steps=boot_steps,
                                      schedule=config.bootstrap_schedule, min_weight=config.bootstrap_min)
                targets = None
                if bw > 0 and (work_mask is not None or use_relevancy):
                    if work_mask is not None:
                        targets = [m[:, 0] for _, m in examples]
                    else:  # before the generator runs: the relevancy pass and its activations come and go first
                        targets = [_relevancy(run_clip, x, config, (224, 224)) for x in inputs]
                # fast path: the whole image (2nd example) is generated without a graph here and again with one
                # after the objective's staged backward, so one example's activations are kept at a time
                outs = [generate(x) if i == 0 or not staged else deferred_output(generate, x)
                        for i, x in enumerate(inputs)]
                src_tokens = None
                if config.lambda_structure > 0 and sample.full is not None:
                    if full_tokens is None:
                        with torch.no_grad():
                            full_tokens = run_clip.image_tokens(structure_view(work, views))
                    src_tokens = [None, full_tokens]
                opt.zero_grad(set_to_none=True)
                total, terms = edit_objective(
                    run_clip, inputs, [o[:, :3] for o in outs], [o[:, 3:] for o in outs], banks, views, weights, rng,
                    bootstrap_targets=targets, bootstrap_weight=bw, source_tokens=src_tokens, augmenter=augmenter,
                    authors_bootstrap_bug=config.authors_bootstrap_bug, cancel_point=hooks.cancel_point,
                    staged_backward=staged, defer_report=True)
                if staged:
                    backward_deferred(generate, inputs[1:], outs[1:], hooks.cancel_point)
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
                # a cancel raised by the progress callback (ComfyUI checks it there) comes after this step's update
                done, rng_state = step + 1, rng.get_state()
                hooks.step(step + 1, config.iters, terms, preview)
    except NonFiniteLoss:
        raise
    except BaseException:
        if ckpt is not None:
            save_checkpoint(ckpt, gen, opt, done, rng_state, config, fingerprint, history[:done])
        raise
    step = done
    if ckpt is not None and keep_checkpoint:
        save_checkpoint(ckpt, gen, opt, step, rng_state, config, fingerprint, history)
    else:
        remove_run_file(ckpt)

    info = {"prompt": as_prompt_list(config.prompt), "steps": step, "seed": config.seed, "size": config.size,
            "working_size": list(work.shape[-2:]), "input_size": list(image.shape[-2:]),
            "config": json.loads(json.dumps(config.to_dict(), default=str)), "version": __version__}
    layer = EditLayer(gen.state_dict(), config.generator, info)
    output = layer.render(image.to(device), size=output_size, memory_budget=memory_budget, resolution=resolution)
    output = LayerOutput(*(t.cpu() for t in (output.color, output.alpha, output.composite, output.greenscreen)))
    notes += layer.notes
    return EditResult(layer=layer, output=output, history=history, steps=step,
                      checkpoint_path=ckpt if keep_checkpoint else None, notes=notes, resumed_from=start)


def _resume(ckpt: Optional[Path], resume: bool, gen: torch.nn.Module, opt: torch.optim.Optimizer,
            rng: torch.Generator, fingerprint: str, iters: int, notes: list[str]) -> tuple[int, list[dict]]:
    """(first step, history) from the checkpoint when it belongs to this run; (0, []) otherwise (with a note
    when a checkpoint of another run was found there)."""
    if not (resume and ckpt is not None and ckpt.is_file()):
        return 0, []
    loaded = _load_checkpoint(ckpt, gen, opt, fingerprint)
    if loaded is None:
        notes.append(stale_note(ckpt))
        return 0, []
    start, rng_state, history = loaded
    rng.set_state(rng_state)
    if start > 0:
        notes.append(resumed_note(ckpt, start, iters))
    return start, history


def _save_if_finite(ckpt: Optional[Path], gen: torch.nn.Module, opt: torch.optim.Optimizer, step: int,
                    rng_state: torch.Tensor, config: EditConfig, fingerprint: str,
                    history: Sequence[dict]) -> Optional[Path]:
    """Save the state at the start of ``step`` when it is finite (the last good state); None otherwise."""
    if ckpt is None or not all_finite(gen.parameters(), gen.buffers(), optimizer_tensors(opt)):
        return None
    return save_checkpoint(ckpt, gen, opt, step, rng_state, config, fingerprint, history)


def _relevancy(clip, images: torch.Tensor, config: EditConfig, size: tuple[int, int]) -> torch.Tensor:
    """Relevancy of ``config.roi_text`` on ``images`` ``[1,3,h,w]`` -> ``[1,*size]`` in 0..1 (no grad)."""
    from ..clip.relevancy import relevancy_map

    r = relevancy_map(clip, images.detach(), config.roi_text, num_layers=config.bootstrap.relevancy_layers,
                      size=size, check_size=False)
    return r.detach()
