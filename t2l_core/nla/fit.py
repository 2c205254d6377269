"""Fitting a layered atlas to a video (NLA, Kasten et al. 2021): the optimisation loop and its result.

Entry point: :func:`fit_nla`. Frames are kept once in fp16 ([T,3,H,W], 2 bytes per value), flow in fp16
(:mod:`t2l_core.nla.optical_flow`); each step gathers only the sampled pixels (:mod:`t2l_core.nla.fit_step`),
so memory does not grow with per-pixel features. Adam on four parameter groups, learning rates decayed
exponentially. Cancellation (``hooks.check_cancel`` raising) or an error saves a resumable checkpoint first
and re-raises; ``resume=True`` continues from it when it belongs to the same run. A non-finite loss stops the
fit before its backward pass, with the last good state saved. A finished fit removes its checkpoint and flow
cache unless ``keep_checkpoint`` (:mod:`t2l_core.checkpoint`, :mod:`t2l_core.nla.fit_checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import torch

from ..checkpoint import (CheckpointFile, NonFiniteLoss, all_finite, nonfinite_message, optimizer_tensors,
                          remove_run_file, resumed_note)
from ..device import resolve_device
from ..io.frame_sources import StreamedVideo
from ..io.input_checks import require_finite
from ..progress import Hooks
from ..step_loop import StepReport, run_steps
from .affine_init import affine_motion_init
from .atlas_model import AtlasConfig, LayeredAtlas
from .config import NLAFitConfig
from .fit_checkpoint import (fit_checkpoint_file, fit_key, fit_run_files, read_fit_state, restore_fit_state,
                             resume_key, write_fit_state)
from .fit_inputs import check_fit_memory, estimate_fit_memory, validate_inputs
from .fit_step import step_logs, training_step
from .fitted import FittedNLA
from .initialisation import init_alpha_from_masks, init_colour_from_frames, motion_init
from .optical_flow import (VideoFlow, compute_video_flow, empty_video_flow, frames_fingerprint, load_flow_progress,
                           make_flow_estimator, save_flow)
from .reconstruction import reconstruct_frame, reconstruct_video, sampled_psnr
from .working_size import at_frame_size, to_uint8, working_inputs, working_shape

# the fit, and the names of the modules above that its callers import from here
__all__ = ["FittedNLA", "NLAFitConfig", "estimate_fit_memory", "fit_key", "fit_nla", "fit_optimizer", "fit_run_files",
           "training_step"]

EVAL_SEED = 12345  # the fixed pixel sample of the sampled PSNR
# each NLAFitConfig.motion_init choice -> (flow, masks, height, width) -> (bg_init, fg_init, uv_scale)
MOTION_INITS = {"affine": affine_motion_init, "translation": motion_init}
#: fit_nla's ``reconstruction`` choices
RECONSTRUCTIONS = ("keep", "psnr", "working_psnr")


def fit_nla(frames: torch.Tensor, masks: Optional[torch.Tensor] = None, config: Optional[NLAFitConfig] = None,
            hooks: Optional[Hooks] = None, device: str | torch.device = "auto",
            checkpoint_path: Optional[str] = None, resume: bool = True, flow: Optional[VideoFlow] = None,
            flow_search_dirs: Sequence[str] = (), flow_cache_path: Optional[str] = None,
            keep_checkpoint: bool = False, reconstruction: str = "keep") -> FittedNLA:
    """Fit a layered atlas to a video; without masks the atlas has only a background layer.

    Flow is computed once (or taken from ``flow`` / ``flow_cache_path``, where it is kept while the fit may
    be resumed).

    Args:
        frames: [T,3,H,W] in 0..1, T >= 2; or uint8 0..255 (kept as the result's ``frames_u8``, no float copy);
            or a :class:`~t2l_core.io.frame_sources.StreamedVideo` (a video too long to hold: read twice, in
            order, and kept as the result's ``frames_u8``).
        masks: None, or [T,H,W] in 0..1 (1 = foreground; uint8 0..255 or bool also, or a streamed video).
        config: the fit's settings (default :class:`NLAFitConfig`).
        hooks: progress, previews and cancellation.
        device: "auto", "cpu", "cuda[:N]" or a device.
        checkpoint_path: where a resumable checkpoint is written on cancel/error (and every
            ``config.checkpoint_every`` steps); None keeps none.
        resume: continue a checkpoint of the same inputs, settings, flow estimator and device class (another
            one is not used and is replaced; the result's ``notes`` say so).
        flow: a precomputed flow of these frames.
        flow_search_dirs: folders searched for RAFT weights.
        flow_cache_path: where the flow is cached while the fit may be resumed.
        keep_checkpoint: keep the checkpoint (with the final state) and the flow cache after the fit.
        reconstruction: what is done with the fit's reconstruction of the video, which gives its PSNR and
            the atlas bounding boxes: ``"keep"`` every full-size frame (the result's ``reconstruction``);
            ``"psnr"`` measure frame by frame and keep none (what a long video needs when nobody looks at
            it); ``"working_psnr"`` measure on the working-size frames instead of reconstructing every
            full-size one, which for a long video takes longer than the fit (the result's ``notes`` say so).

    Returns:
        The :class:`FittedNLA` with its reconstruction PSNR (dB) and atlas bounding boxes. With
        ``config.working_size`` (or uint8 frames) the fit runs on resized fp16 copies of the frames and masks
        (:mod:`t2l_core.nla.working_size`), the atlas answers at the frames' full size, and the reconstruction
        is kept as uint8.
    """
    cfg = config or NLAFitConfig()
    hooks = hooks or Hooks()
    if reconstruction not in RECONSTRUCTIONS:
        raise ValueError(f"reconstruction must be one of {', '.join(RECONSTRUCTIONS)}, got {reconstruction!r}")
    validate_inputs(frames, masks)
    cfg.validate()
    T, _, H, W = frames.shape
    check_fit_memory(T, H, W, masks is not None, cfg.batch_pixels, cfg.working_size,
                     0 if isinstance(frames, StreamedVideo) else frames.element_size(), reconstruction == "keep")
    size = working_shape(H, W, int(cfg.working_size))
    if size != (H, W) or frames.dtype == torch.uint8:
        with torch.inference_mode(False), torch.enable_grad():
            frames16, small_masks = working_inputs(frames.detach(), None if masks is None else masks.detach(), size,
                                                   on_frames=hooks.phase_callback("working-size frames"))
            return _fit(frames16, small_masks, cfg, hooks, resolve_device(device), checkpoint_path, resume,
                        _FlowSource(flow, flow_search_dirs, flow_cache_path), keep_checkpoint, full=frames.detach(),
                        reconstruction=reconstruction)
    with torch.inference_mode(False), torch.enable_grad():
        # frames are only read (an fp16 copy is made inside); masks are small enough to copy
        return _fit(frames.detach(), None if masks is None else masks.detach().clone().float(), cfg, hooks,
                    resolve_device(device), checkpoint_path, resume,
                    _FlowSource(flow, flow_search_dirs, flow_cache_path), keep_checkpoint,
                    reconstruction=reconstruction)


def fit_optimizer(model: LayeredAtlas, cfg: NLAFitConfig) -> torch.optim.Adam:
    """The fit's Adam (betas 0.9, 0.99): one parameter group and learning rate each for the colour pyramid,
    the per-frame affine motion, the mapping residual grids and the opacity grids.

    Args:
        model: the atlas.
        cfg: the learning rates.

    Returns:
        The optimizer (fused kernels).
    """
    groups = [{"params": list(model.colour.parameters()), "lr": cfg.lr_colour}]
    maps = [model.map_bg] + ([model.map_fg] if model.map_fg is not None else [])
    groups.append({"params": [m.affine for m in maps], "lr": cfg.lr_affine})
    groups.append({"params": [p for m in maps for p in m.residual.parameters()], "lr": cfg.lr_mapping})
    if model.alpha_grid is not None:
        groups.append({"params": list(model.alpha_grid.parameters()), "lr": cfg.lr_alpha})
    return torch.optim.Adam(groups, betas=(0.9, 0.99), fused=True)


@dataclass
class _Run:
    """The state of a running fit."""

    model: LayeredAtlas
    opt: torch.optim.Adam
    gen: torch.Generator
    ckpt: CheckpointFile
    cfg: NLAFitConfig
    step: int
    total: int
    notes: list
    base_lrs: list
    eval_idx: Optional[tuple]

    def save(self, gen: Optional[torch.Generator] = None) -> None:
        """Write the checkpoint at the current step (with ``gen``'s state instead of the fit's generator's)."""
        write_fit_state(self.ckpt, self.model, self.opt, self.step, self.gen if gen is None else gen, self.cfg)


class _FlowSource(NamedTuple):
    """Where a fit's optical flow comes from: given, else the cache file, else computed (RAFT weights searched
    in ``search_dirs``)."""

    given: Optional[VideoFlow]
    search_dirs: Sequence[str]
    cache_path: Optional[str]


def _fit(frames, masks, cfg, hooks, device, checkpoint_path, resume, flow_source: _FlowSource,
         keep_checkpoint=False, full=None, reconstruction="keep") -> FittedNLA:
    """The fit on ``frames`` (the working frames when ``full``, the full-size input, is given)."""
    frames16 = frames.to(torch.float16)
    flow_cache_path = flow_source.cache_path
    flow = _video_flow(frames, cfg, hooks, device, flow_source.given, flow_source.search_dirs, flow_cache_path)
    run = _start(frames, frames16, masks, flow, cfg, hooks, device, checkpoint_path or None, resume)
    _run_steps(run, frames16, masks, flow, hooks, device)
    run.ckpt.finish(keep_checkpoint, run.save)
    if flow_cache_path and not keep_checkpoint:
        remove_run_file(flow_cache_path)
    if full is not None and reconstruction == "working_psnr" and frames.shape[-2:] != full.shape[-2:]:
        return _result(run, frames, flow, hooks, False, full=full)
    return _result(run, frames if full is None else full, flow, hooks, reconstruction == "keep")


def _video_flow(frames, cfg, hooks, device, flow, search_dirs, cache_path) -> VideoFlow:
    """The given flow, else the cached one, else computed (and cached); refused when it does not fit.

    A cancel or an error while the flow is computed caches the pairs done so far, and the next fit of these
    frames continues from them.
    """
    T, _, H, W = frames.shape
    if flow is None:
        flow = _computed_flow(frames, cfg, hooks, device, search_dirs, cache_path)
    if flow.frames != T or tuple(flow.fwd.shape[-2:]) != (H, W):
        raise ValueError("the given optical flow does not match the frames (count or size); recompute it")
    require_finite(flow.fwd, "the optical flow", "Check the frames, or use the built-in estimator (flow 'lk').")
    require_finite(flow.bwd, "the optical flow", "Check the frames, or use the built-in estimator (flow 'lk').")
    return flow


def _computed_flow(frames, cfg, hooks, device, search_dirs, cache_path) -> VideoFlow:
    """The frames' flow from the cache, completing a partly computed one, or computed from the start."""
    T, _, H, W = frames.shape
    fp = f"{frames_fingerprint(frames)}:{cfg.flow}"
    found = load_flow_progress(cache_path, key=fp) if cache_path else None
    if found is not None and found[1] == T - 1:
        return found[0]
    estimator, name = make_flow_estimator(device, search_dirs, cfg.flow)
    if found is None or found[0].estimator != name or found[0].frames != T or tuple(found[0].fwd.shape[-2:]) != (H, W):
        found = (empty_video_flow(T, H, W, name), 0)
    flow, done = found
    report = hooks.phase_callback("optical flow (frame pairs)")
    progress = [done]

    def on_pair(pairs: int, total: int) -> None:
        progress[0] = pairs
        report(pairs, total)

    try:
        compute_video_flow(lambda i: frames[i].float(), T, estimator, name, on_pair=on_pair, into=flow, start=done)
    except BaseException:
        if cache_path and progress[0] > done:
            save_flow(flow, cache_path, key=fp, pairs=progress[0])
        raise
    if cache_path:
        save_flow(flow, cache_path, key=fp)
    return flow


def _start(frames, frames16, masks, flow, cfg, hooks, device, checkpoint_path, resume) -> _Run:
    """A fit at step 0 (motion, opacity and colour initialised) or restored from its checkpoint."""
    T, _, H, W = frames.shape
    ckpt = fit_checkpoint_file(checkpoint_path, resume_key(fit_key(frames, masks, cfg), flow.estimator, device))
    notes: list = []
    bg_init, fg_init, scale = MOTION_INITS[cfg.motion_init](flow, masks, H, W)
    acfg = AtlasConfig(height=H, width=W, frames=T, has_foreground=masks is not None, uv_scale=scale,
                       fg_init=fg_init, bg_init=bg_init)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    state = read_fit_state(ckpt, notes) if resume else None
    if state is not None:
        acfg = state.atlas_config
        if state.step > 0:
            notes.append(resumed_note(checkpoint_path, state.step, cfg.iterations))
    model = LayeredAtlas(acfg).to(device)
    opt = fit_optimizer(model, cfg)
    if state is None:
        if masks is not None:
            init_alpha_from_masks(model, masks)
        if cfg.init_colour:
            init_colour_from_frames(model, frames16, masks, on_frame=hooks.phase_callback("atlas colour init (frames)"))
    else:
        restore_fit_state(state, model, opt, gen)
    return _Run(model, opt, gen, ckpt, cfg, state.step if state is not None else 0, int(cfg.iterations), notes,
                [g["lr"] for g in opt.param_groups], _eval_sample(cfg, T, H, W))


def _eval_sample(cfg: NLAFitConfig, T: int, H: int, W: int) -> Optional[tuple]:
    """The fixed pixel sample (t, y, x) of the sampled PSNR, when the fit stops at a target PSNR."""
    if cfg.target_psnr <= 0:
        return None
    eg = torch.Generator().manual_seed(EVAL_SEED)
    n = int(cfg.eval_pixels)
    return (torch.randint(0, T, (n,), generator=eg), torch.randint(0, H, (n,), generator=eg),
            torch.randint(0, W, (n,), generator=eg))


def _run_steps(run: _Run, frames16, masks, flow, hooks: Hooks, device) -> None:
    """Step until the last iteration (or the target PSNR); on cancel or error save the checkpoint and re-raise."""
    T = frames16.shape[0]

    def one_step(_: int) -> StepReport:
        logs = _step(run, frames16, masks, flow, device)
        return StepReport(logs, last=_after_step(run, logs, frames16, device))

    def preview() -> torch.Tensor:
        return reconstruct_frame(run.model, (run.step // max(hooks.preview_every, 1)) % T)[0].permute(1, 2, 0)

    run_steps(run.step, run.total, one_step, hooks, run.save, preview=preview)


def _step(run: _Run, frames16, masks, flow, device) -> dict:
    """One optimisation step (learning rates, loss, backward, Adam); returns its logs. A non-finite loss
    raises :class:`NonFiniteLoss` before the backward pass, after saving the state at the step's start."""
    cfg = run.cfg
    for g, base in zip(run.opt.param_groups, run.base_lrs):  # stateless decay to lr_final_ratio (resume-safe)
        g["lr"] = base * cfg.lr_final_ratio ** (run.step / max(run.total, 1))
    run.opt.zero_grad(set_to_none=True)
    gen_state = run.gen.get_state()  # the RNG at the start of this step, for the last-good-state checkpoint
    loss, pending = training_step(run.model, frames16, masks, flow, run.step, run.total, cfg, run.gen, device,
                                  defer_logs=True)
    if not bool(torch.isfinite(loss.detach())):  # before backward: NaN sample positions must not get there
        _stop_non_finite(run, gen_state, pending)
    loss.backward()
    run.opt.step()
    logs = step_logs(pending)  # after the step: the host never waits for the device inside it
    run.step += 1
    return logs


def _stop_non_finite(run: _Run, gen_state: torch.Tensor, pending: dict) -> None:
    saved = None
    if run.ckpt.path is not None and all_finite(run.model.parameters(), optimizer_tensors(run.opt)):
        at_start = torch.Generator()
        at_start.set_state(gen_state)
        run.save(at_start)
        saved = run.ckpt.path
    raise NonFiniteLoss(nonfinite_message(
        run.step + 1, {k: round(v, 6) for k, v in step_logs(pending).items()}, saved,
        "Lower the learning rates, or check the frames and masks."))


def _after_step(run: _Run, logs: dict, frames16, device) -> bool:
    """The periodic checkpoint, and the sampled PSNR; True when the fit reached the target PSNR (it ends)."""
    cfg = run.cfg
    if cfg.checkpoint_every and run.ckpt.path is not None and run.step % cfg.checkpoint_every == 0:
        run.save()
    if run.eval_idx is not None and (run.step % cfg.eval_every == 0 or run.step == run.total):
        logs["psnr_sampled"] = sampled_psnr(run.model, frames16, run.eval_idx, device)
        return logs["psnr_sampled"] >= cfg.target_psnr
    return False


def _result(run: _Run, frames, flow: VideoFlow, hooks: Hooks, keep: bool = True, full=None) -> FittedNLA:
    """The fitted atlas, frozen, with its reconstruction, PSNR and atlas bounding boxes (at the size of
    ``frames``; a working-size fit's reconstruction is uint8). With ``full`` (the full-size input) they are
    measured on ``frames``, the working-size frames, and the atlas answers at ``full``'s size."""
    from .atlas_images import bbox_from_extent

    model = run.model
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    extents: dict = {}
    on_frame = hooks.phase_callback("reconstruction (frames)")
    if full is not None:
        rec_rgb, rec_alpha, p = reconstruct_video(model, frames, extents, on_frame=on_frame, keep=False)
        run.notes.append(f"the reconstruction PSNR ({p:.2f} dB) was measured on the frames at the working size "
                         f"{frames.shape[3]}x{frames.shape[2]}, not at full size")
        frames = full
    if (model.cfg.height, model.cfg.width) != tuple(frames.shape[-2:]) or frames.dtype == torch.uint8:
        model = at_frame_size(model, frames.shape[2], frames.shape[3])
        if full is None:
            rec_rgb, rec_alpha, p = reconstruct_video(model, frames, extents, on_frame=on_frame,
                                                      out_dtype=torch.uint8, keep=keep)
    else:
        rec_rgb, rec_alpha, p = reconstruct_video(model, frames, extents, on_frame=on_frame, keep=keep)
    u8 = to_uint8(frames)
    bboxes = {layer: bbox_from_extent(model, layer, extents[layer], run.cfg.atlas_resolution) for layer in model.layers()}
    return FittedNLA(model=model, frames_u8=u8, fit_config=run.cfg.to_dict(), psnr=p, steps=run.step,
                     flow_estimator=flow.estimator, bboxes=bboxes,
                     reconstruction=(rec_rgb, rec_alpha) if keep else None, notes=run.notes)
