"""Resumable runs never give a stale result: the resume key covers the CLIP and the iteration count, a resumed
run equals the uninterrupted one bit for bit (cancel from any place, a non-finite loss), and a finished run
leaves no checkpoint unless asked to keep it. Tiny sizes, CPU."""

from __future__ import annotations

import os

import pytest
import torch


from _edit_helpers import tiny_config
from synthetic_video import make_synthetic_video

import t2l_core.edit.training_loop as training_loop
import t2l_core.nla.fit as nla_fit
from t2l_core.checkpoint import NonFiniteLoss
from t2l_core.clip.loading import build_tiny_clip
from t2l_core.nla.fit import NLAFitConfig, fit_nla
from t2l_core.nla.optical_flow import compute_video_flow, load_flow, make_flow_estimator
from t2l_core.progress import Cancelled, Hooks
from t2l_core.image.training import default_checkpoint_path, input_fingerprint
from t2l_core.api import train_edit_layer


def _edit(clip, image, hooks=None, **kw):
    extra = {k: kw.pop(k) for k in ("checkpoint_path", "resume", "keep_checkpoint") if k in kw}
    return train_edit_layer(clip, image, tiny_config(**kw), hooks=hooks, **extra)


def _same(a, b) -> None:
    """Bit-for-bit equal runs: the same losses at every step and the same output."""
    assert a.history == b.history
    assert torch.equal(a.output.composite, b.output.composite) and torch.equal(a.output.alpha, b.output.alpha)


def _step_counter():
    steps = []
    return steps, Hooks(on_step=lambda s, n, losses, prev: steps.append(s))


# ------------------------------------------------------------------------------------------------ image edits

def test_clip_swap_gives_another_key_and_retrains(tiny_clip, astronaut, tmp_path):
    other_clip = build_tiny_clip(patch_size=16, seed=1, device="cpu")  # same architecture, other weights
    cfg = tiny_config(iters=3)
    assert tiny_clip.weights_digest() != other_clip.weights_digest()
    assert input_fingerprint(astronaut, cfg, clip=tiny_clip) != input_fingerprint(astronaut, cfg, clip=other_clip)
    assert default_checkpoint_path(tmp_path, astronaut, cfg, clip=tiny_clip) != \
        default_checkpoint_path(tmp_path, astronaut, cfg, clip=other_clip)
    # same weights loaded twice: same key (the digest is of the content, computed once per loaded model)
    twin = build_tiny_clip(patch_size=16, seed=0, device="cpu")
    assert input_fingerprint(astronaut, cfg, clip=twin) == input_fingerprint(astronaut, cfg, clip=tiny_clip)
    # the precision is part of the identity
    bf16 = build_tiny_clip(patch_size=16, seed=0, device="cpu", precision="bf16")
    assert input_fingerprint(astronaut, cfg, clip=bf16) != input_fingerprint(astronaut, cfg, clip=tiny_clip)

    # even at one checkpoint path, a kept checkpoint of the other CLIP is not used: the run trains
    ckpt = tmp_path / "edit.safetensors"
    _edit(tiny_clip, astronaut, iters=3, checkpoint_path=ckpt, keep_checkpoint=True)
    assert ckpt.is_file()
    steps, hooks = _step_counter()
    swapped = _edit(other_clip, astronaut, hooks, iters=3, checkpoint_path=ckpt, resume=True)
    assert steps == [1, 2, 3] and swapped.resumed_from == 0
    assert any("not used" in n for n in swapped.notes)
    _same(swapped, _edit(other_clip, astronaut, iters=3))


def test_iterations_6_then_3_then_5_each_equal_a_fresh_run(tiny_clip, astronaut, tmp_path):
    ckpt = tmp_path / "edit.safetensors"  # one path for all three: only the key decides
    for iters in (6, 3, 5):
        steps, hooks = _step_counter()
        r = _edit(tiny_clip, astronaut, hooks, iters=iters, checkpoint_path=ckpt, resume=True, keep_checkpoint=True)
        assert steps == list(range(1, iters + 1)) and r.steps == iters
        _same(r, _edit(tiny_clip, astronaut, iters=iters))


def test_cancel_from_the_progress_callback_resumes_bit_for_bit(tiny_clip, astronaut, tmp_path):
    """ComfyUI checks for cancel inside its progress-bar update, i.e. after a step's weights changed."""
    ckpt = tmp_path / "edit.safetensors"
    full = _edit(tiny_clip, astronaut, iters=5, full_image_every=2)

    def cancel_after(k):
        def on_step(step, total, losses, preview):
            if step == k:
                raise Cancelled("user pressed cancel")
        return Hooks(on_step=on_step)

    with pytest.raises(Cancelled):
        _edit(tiny_clip, astronaut, cancel_after(2), iters=5, full_image_every=2, checkpoint_path=ckpt)
    with pytest.raises(Cancelled):  # resumed, then cancelled again
        _edit(tiny_clip, astronaut, cancel_after(4), iters=5, full_image_every=2, checkpoint_path=ckpt, resume=True)
    steps, hooks = _step_counter()
    resumed = _edit(tiny_clip, astronaut, hooks, iters=5, full_image_every=2, checkpoint_path=ckpt, resume=True)
    assert steps == [5] and resumed.resumed_from == 4
    _same(resumed, full)
    assert not ckpt.exists()


def test_non_finite_loss_stops_with_the_last_good_state(tiny_clip, astronaut, tmp_path, monkeypatch):
    ckpt = tmp_path / "edit.safetensors"
    full = _edit(tiny_clip, astronaut, iters=4)
    real = training_loop.opacity_terms
    calls = {"n": 0}

    def nan_at_third_step(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            terms = {**terms, "sparsity": terms["sparsity"] * float("nan")}
        return terms

    monkeypatch.setattr(training_loop, "opacity_terms", nan_at_third_step)
    with pytest.raises(NonFiniteLoss, match="non-finite at step 3.*last good state \\(step 2\\)"):
        _edit(tiny_clip, astronaut, iters=4, checkpoint_path=ckpt)
    monkeypatch.setattr(training_loop, "opacity_terms", real)
    resumed = _edit(tiny_clip, astronaut, iters=4, checkpoint_path=ckpt, resume=True)
    assert resumed.resumed_from == 2
    _same(resumed, full)


# ------------------------------------------------------------------------------------------------ atlas fits

@pytest.fixture(scope="module")
def clip4():
    v = make_synthetic_video(frames=4, height=32, width=40)
    est, name = make_flow_estimator(torch.device("cpu"), (), "lk")
    return v, compute_video_flow(lambda i: v.frames[i], 4, est, name)


def _equal_models(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_resumes_only_its_own_checkpoint_and_stops_on_a_non_finite_loss(clip4, tmp_path, monkeypatch):
    v, flow = clip4
    ckpt = str(tmp_path / "fit.safetensors")
    cfg12, cfg20 = NLAFitConfig(iterations=12, batch_pixels=512, seed=2), NLAFitConfig(iterations=20, batch_pixels=512, seed=2)
    ref12, ref20 = fit_nla(v.frames, None, cfg12, flow=flow), fit_nla(v.frames, None, cfg20, flow=flow)
    # a kept checkpoint of a 12-step fit is not used by a 20-step fit (it would continue another schedule)
    fit_nla(v.frames, None, cfg12, flow=flow, checkpoint_path=ckpt, keep_checkpoint=True)
    assert os.path.isfile(ckpt)
    steps, hooks = _step_counter()
    r20 = fit_nla(v.frames, None, cfg20, flow=flow, checkpoint_path=ckpt, resume=True, hooks=hooks)
    assert steps[0] == 1 and any("not used" in n for n in r20.notes) and _equal_models(r20, ref20)
    assert not os.path.exists(ckpt)

    real = nla_fit.training_step

    def nan_at_step_7(model, frames16, masks, flow_, step, *args, **kwargs):
        loss, logs = real(model, frames16, masks, flow_, step, *args, **kwargs)
        return (loss * float("nan"), logs) if step == 6 else (loss, logs)

    monkeypatch.setattr(nla_fit, "training_step", nan_at_step_7)
    with pytest.raises(NonFiniteLoss, match="non-finite at step 7.*last good state \\(step 6\\)"):
        fit_nla(v.frames, None, cfg12, flow=flow, checkpoint_path=ckpt)
    monkeypatch.setattr(nla_fit, "training_step", real)
    steps, hooks = _step_counter()
    r12 = fit_nla(v.frames, None, cfg12, flow=flow, checkpoint_path=ckpt, resume=True, hooks=hooks)
    assert steps[0] == 7 and _equal_models(r12, ref12)


def test_flow_cache_lives_only_for_the_fit(clip4, tmp_path):
    v, _ = clip4
    cfg = NLAFitConfig(iterations=6, batch_pixels=512, flow="lk")
    ckpt, cache = str(tmp_path / "ck.safetensors"), str(tmp_path / "flow.safetensors")

    def cancel_at_3(step, total, losses, preview):
        if step == 3:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        fit_nla(v.frames, None, cfg, hooks=Hooks(on_step=cancel_at_3), checkpoint_path=ckpt, flow_cache_path=cache)
    assert os.path.isfile(ckpt) and os.path.isfile(cache)  # what a resume needs
    fit_nla(v.frames, None, cfg, checkpoint_path=ckpt, flow_cache_path=cache)
    assert not os.path.exists(ckpt) and not os.path.exists(cache)
    fit_nla(v.frames, None, cfg, checkpoint_path=ckpt, flow_cache_path=cache, keep_checkpoint=True)
    assert os.path.isfile(ckpt) and os.path.isfile(cache)


def test_frames_key_sees_every_value(clip4):
    from t2l_core.nla.optical_flow import frames_fingerprint

    v, _ = clip4
    other = v.frames.clone()
    other[2, 1, 17, 23] += 1e-3  # one value of one frame
    assert frames_fingerprint(other) != frames_fingerprint(v.frames)


def test_a_cancel_during_the_flow_keeps_the_pairs_already_computed(tmp_path, monkeypatch):
    v = make_synthetic_video(frames=6, height=32, width=40)
    cfg = NLAFitConfig(iterations=3, batch_pixels=512, flow="lk")
    ckpt, cache = str(tmp_path / "ck.safetensors"), str(tmp_path / "flow.safetensors")
    estimated = []
    real = nla_fit.make_flow_estimator

    def counting_estimator(device, search_dirs=(), prefer="auto"):
        estimate, name = real(device, search_dirs, prefer)
        return (lambda a, b: estimated.append(1) or estimate(a, b)), name

    def cancel_after_3_pairs(name, done, total):
        if name.startswith("optical flow") and done == 3:
            raise Cancelled("stop")

    monkeypatch.setattr(nla_fit, "make_flow_estimator", counting_estimator)
    with pytest.raises(Cancelled):
        fit_nla(v.frames, None, cfg, hooks=Hooks(on_phase=cancel_after_3_pairs), checkpoint_path=ckpt,
                flow_cache_path=cache)
    assert len(estimated) == 2 * 3 and os.path.isfile(cache)  # three pairs, both ways, kept
    estimated.clear()
    resumed = fit_nla(v.frames, None, cfg, checkpoint_path=ckpt, flow_cache_path=cache, keep_checkpoint=True)
    assert len(estimated) == 2 * 2  # only the two pairs left
    est, name = real(torch.device("cpu"), (), "lk")
    whole = compute_video_flow(lambda i: v.frames[i], 6, est, name)
    cached = load_flow(cache)
    assert all(torch.equal(getattr(cached, k), getattr(whole, k)) for k in ("fwd", "bwd", "fwd_ok", "bwd_ok"))
    assert _equal_models(resumed, fit_nla(v.frames, None, cfg, flow=whole))
