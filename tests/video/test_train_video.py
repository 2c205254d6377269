"""Text-driven video edits through the atlas: example geometry, training on a fitted NLA of a
synthetic video with KNOWN (integer) motion, temporal consistency vs the frames baseline, cancel/resume.

Tiny sizes: 10 frames of 64x48, a 5-scale 16-channel generator (minimum input 33 px), the tiny CLIP."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch


from _video_flicker import background_flicker, foreground_flicker
from synthetic_video import make_synthetic_video

from t2l_core.nla.render import AtlasBBox, render_edits
from t2l_core.edit.generator import GeneratorConfig
from t2l_core.nla.fit import NLAFitConfig, fit_nla
from t2l_core.progress import Cancelled, Hooks
from t2l_core.api import train_video_edit_layer
from t2l_core.video.atlas_apply import atlas_edit_from_layer, frames_baseline
from t2l_core.video.config import VideoEditConfig
from t2l_core.video.training import atlas_examples
from t2l_core.video.atlas_dataset import (VideoAtlasDataset, VideoDatasetConfig, mask_boxes, training_bbox,
                                          video_crops)

GEN = GeneratorConfig(num_scales=5, channels_down=16, channels_up=16)  # min input 33 px



@pytest.fixture(scope="module")
def video():
    # integer velocities: warping by the true motion is exact, so the original video has zero flicker
    return make_synthetic_video(frames=10, height=48, width=64, bg_velocity=(2.0, 1.0), fg_velocity=(-2.0, 1.0))


@pytest.fixture(scope="module")
def nla(video):
    return fit_nla(video.frames, video.masks, NLAFitConfig(iterations=60, batch_pixels=4096, seed=0, flow="lk"),
                   device="cpu")


def video_config(**kw) -> VideoEditConfig:
    base = dict(prompt="golden astronaut", source_prompt="astronaut", layer="bg", iters=6, n_views=4,
                view_short_side=48, view_max_long=64, structure_max_long=80, full_image_every=10, generator=GEN)
    base.update(kw)
    return VideoEditConfig.from_flat(**base)


# ------------------------------------------------------------------------------------------------ defaults

def test_video_defaults_are_the_papers():
    c = VideoEditConfig.from_flat(prompt="x")
    assert (c.views.n_views, c.views.fill, c.weights.structure, c.weights.sparsity_l1, c.weights.sparsity_l0) == \
        (6, 0.0, 3.0, 1e-3, 5e-4)
    assert (c.optim.lr_decay, c.iters, c.optim.lr, c.dataset.full_image_every, c.atlas.frame_offset) == \
        (0.999, 3000, 2.5e-3, 75, 2)
    assert (c.dataset.crop_min, c.atlas.mask_threshold, c.atlas.mask_border, c.atlas.bg_full_downscale,
            c.dataset.flip_p, c.dataset.jitter_p) == (0.95, 0.95, 30, 3.0, 0.5, 0.1)
    assert c.bootstrap.schedule == "none"  # constant lambda when bootstrapping is enabled
    flat = c.to_flat()  # the same defaults under the public flat names
    assert (flat["n_views"], flat["view_fill"], flat["lambda_structure"], flat["lr_decay"], flat["crop_min"]) == \
        (6, 0.0, 3.0, 0.999, 0.95)
    with pytest.raises(ValueError, match="layer"):
        VideoEditConfig.from_flat(prompt="x", layer="middle").validate()


# ------------------------------------------------------------------------------------------------ examples

def test_examples_geometry_and_atlas_sampling_reproduces_the_frame_crops(nla):
    """Sampling the atlas crop with a frame crop's grid gives that crop's background reconstruction, also
    for flipped examples; crops lie inside the mask boxes and cover >= 95 % of them."""
    model, T = nla.model, nla.num_frames
    cfg = VideoDatasetConfig(layer="bg", min_size=33, crops=dataclasses.replace(video_crops(), jitter_p=0.0,
                                                                                full_image_every=3))
    ds = VideoAtlasDataset(model, nla.bboxes["bg"], nla.frames_u8, cfg)
    g = torch.Generator().manual_seed(1)
    flips = set()
    for step in range(6):
        s = ds.sample(step, g)
        flips.add(s.flipped)
        ts = [fc.t for fc in s.frames]
        assert ts[1] - ts[0] == 2 and ts[2] - ts[1] == 2 and 0 <= ts[0] and ts[2] < T
        assert len({fc.box for fc in s.frames}) == 1  # background: one window for the three frames
        top, left, h, w = s.frames[0].box
        assert h >= round(0.95 * 48) and w >= round(0.95 * 64) and top + h <= 48 and left + w <= 64
        assert min(s.atlas_crop.shape[-2:]) >= 33
        assert (s.full is not None) == ((step + 1) % 3 == 0)
        for fc in s.frames:
            resampled = torch.nn.functional.grid_sample(s.atlas_crop, fc.grid, mode="bilinear", align_corners=False)
            inner = (fc.grid.abs() < 0.97).all(-1)[0]  # away from the crop border (zero padding there)
            err = (resampled[0] - fc.image[0]).abs().mean(0)[inner]
            assert float(err.mean()) < 0.02, (step, s.flipped, float(err.mean()))
    assert flips == {True, False}
    # the whole background atlas is downscaled by 3 (not below the generator minimum)
    Ha, Wa = ds.atlas.shape[-2:]
    full = ds.full_atlas()
    assert tuple(full.shape[-2:]) == (max(33, round(Ha * max(1 / 3, 33 / min(Ha, Wa)))),
                                      max(33, round(Wa * max(1 / 3, 33 / min(Ha, Wa)))))

    # foreground: per-frame crops inside each frame's mask box (opacity >= 0.95 grown by 30 px)
    fg = VideoAtlasDataset(model, nla.bboxes["fg"], nla.frames_u8, VideoDatasetConfig(layer="fg", min_size=33))
    boxes = mask_boxes(model, 0.95, 30, 33)
    for step in range(4):
        s = fg.sample(step, g)
        for fc in s.frames:
            by, bx, bh, bw = boxes[fc.t]
            top, left, h, w = fc.box
            assert by <= top and top + h <= by + bh and bx <= left and left + w <= bx + bw
            assert h >= min(bh, max(33, round(0.95 * bh))) and w >= min(bw, max(33, round(0.95 * bw)))
            assert tuple(fc.nla_alpha.shape[-2:]) == (h, w) and float(fc.nla_alpha.max()) > 0.9


def test_foreground_maps_are_multiplied_by_the_nla_opacity():
    """screen = a_N (a C + (1 - a) G) + (1 - a_N) G, composite = a_N (a C + (1 - a) I): checked by hand."""
    from t2l_core.edit.compositing import GREEN
    from t2l_core.video.atlas_dataset import FrameCrop

    g = torch.Generator().manual_seed(0)
    out = torch.rand(1, 4, 5, 6, generator=g)
    crop = torch.rand(1, 3, 5, 6, generator=g)
    ys, xs = torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij")
    grid = torch.stack([(2 * xs + 1) / 6 - 1, (2 * ys + 1) / 5 - 1], -1)[None]  # texel centres: identity
    an = torch.rand(1, 1, 5, 6, generator=g)
    (x, c, a, cp, sc), = atlas_examples(out, crop, [FrameCrop(0, (0, 0, 5, 6), grid, an, crop)], "fg")
    C, A = out[:, :3], out[:, 3:]
    G = torch.tensor(GREEN).view(1, 3, 1, 1)
    assert torch.allclose(sc, an * (A * C + (1 - A) * G) + (1 - an) * G, atol=1e-5)
    assert torch.allclose(cp, an * (A * C + (1 - A) * crop), atol=1e-5)
    assert torch.allclose(a, an * A, atol=1e-5) and torch.allclose(x, an * crop, atol=1e-5)
    (x2, *_), = atlas_examples(out, crop, [FrameCrop(0, (0, 0, 5, 6), grid, an, crop)], "fg", authors_inputs=True)
    assert torch.allclose(x2, crop, atol=1e-5)


# ------------------------------------------------------------------------------------------------ training

@pytest.fixture(scope="module")
def bg_run(tiny_clip, nla):
    seen = []
    hooks = Hooks(on_step=lambda s, n, losses, prev: seen.append((s, prev)), preview_every=15)
    r = train_video_edit_layer(tiny_clip, nla, video_config(layer="bg", iters=30), hooks=hooks)
    return r, seen


def test_background_training_runs_losses_fall_and_edit_is_consistent(bg_run, video, nla):
    r, seen = bg_run
    totals = [h["total"] for h in r.history]
    assert len(totals) == 30 and all(math.isfinite(t) for t in totals)
    assert sum(totals[-8:]) / 8 < sum(totals[:8]) / 8
    assert r.history[9]["lr"] == pytest.approx(2.5e-3 * 0.999**10)
    assert [s for s, _ in seen] == list(range(1, 31))
    previews = [p for _, p in seen if p is not None]
    assert len(previews) == 2 and previews[0].shape == (48, 64, 3)
    assert r.frames.shape == (10, 3, 48, 64) and 0 <= float(r.frames.min()) and float(r.frames.max()) <= 1
    orig = nla.original_frames()
    edit_size = float((r.frames - orig).abs().mean())
    assert edit_size > 0.02  # a visible edit

    base = frames_baseline(r.layer, nla, "bg")
    assert float((base - orig).abs().mean()) > 0.5 * edit_size  # the baseline edits as strongly
    f_orig, f_atlas, f_base = (background_flicker(video, x) for x in (orig, r.frames, base))
    print(f"\nbackground flicker (mean |E_t - warp(E_t+1)|): original {f_orig:.5f}, atlas edit {f_atlas:.5f}, "
          f"frames baseline {f_base:.5f}")
    assert f_orig < 1e-4
    assert f_atlas < 0.25 * f_base

    # the layer, applied to the same atlas again, gives the same atlas edit and the same video
    edit = atlas_edit_from_layer(r.layer, nla, "bg")
    assert edit.bbox == r.atlas_edit.bbox
    assert torch.allclose(edit.rgb, r.atlas_edit.rgb, atol=1e-5) and torch.allclose(edit.alpha, r.atlas_edit.alpha, atol=1e-5)
    assert torch.allclose(render_edits(nla.model, orig, None, edit), r.frames, atol=1e-4)
    with pytest.raises(ValueError, match="background"):
        atlas_edit_from_layer(r.layer, nla, "fg")


def test_foreground_edit_is_consistent_and_combines_with_the_background(tiny_clip, bg_run, video, nla):
    r = train_video_edit_layer(tiny_clip, nla, video_config(layer="fg", iters=8), other_edit=bg_run[0].atlas_edit)
    assert len(r.history) == 8 and r.atlas_edit.bbox.layer == "fg"
    orig = nla.original_frames()
    fg_only = render_edits(nla.model, orig, r.atlas_edit, None)
    bg_only = bg_run[0].frames
    assert float((fg_only - orig).abs().mean()) > 1e-3
    # combined video = both edits: fg edit inside the object, bg edit outside
    assert torch.allclose(r.frames, render_edits(nla.model, orig, r.atlas_edit, bg_run[0].atlas_edit), atol=1e-5)
    assert not torch.allclose(r.frames, fg_only) and not torch.allclose(r.frames, bg_only)
    base = frames_baseline(r.layer, nla, "fg")
    f_atlas, f_base = foreground_flicker(video, fg_only), foreground_flicker(video, base)
    print(f"\nforeground flicker: atlas edit {f_atlas:.5f}, frames baseline {f_base:.5f}")
    assert f_atlas < 0.25 * f_base


def test_cancel_leaves_a_checkpoint_that_resumes_to_the_same_result(tiny_clip, nla, tmp_path):
    ckpt = tmp_path / "video.safetensors"
    cfg = video_config(layer="bg", iters=4, full_image_every=3)
    full = train_video_edit_layer(tiny_clip, nla, cfg, render=False)

    def cancel_at_3(step, total, losses, preview):
        if step == 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        train_video_edit_layer(tiny_clip, nla, cfg, hooks=Hooks(on_step=cancel_at_3), checkpoint_path=ckpt, resume=True)
    assert ckpt.is_file()
    resumed = train_video_edit_layer(tiny_clip, nla, cfg, checkpoint_path=ckpt, resume=True, render=False)
    assert resumed.resumed_from == 2
    assert resumed.history == full.history  # bit for bit
    assert torch.equal(resumed.atlas_edit.rgb, full.atlas_edit.rgb) and torch.equal(resumed.atlas_edit.alpha,
                                                                                    full.atlas_edit.alpha)
    assert not ckpt.exists()  # a finished run removes its checkpoint
    # a checkpoint of other settings (or another CLIP, or other iterations) is not used: trained from the start
    train_video_edit_layer(tiny_clip, nla, cfg, checkpoint_path=ckpt, render=False, keep_checkpoint=True)
    other = train_video_edit_layer(tiny_clip, nla, video_config(layer="bg", iters=3, full_image_every=3),
                                   checkpoint_path=ckpt, resume=True, render=False)
    assert other.resumed_from == 0 and any("not used" in n for n in other.notes)


def test_bad_input_gives_clear_errors(tiny_clip, nla):
    with pytest.raises(ValueError, match="frames"):
        train_video_edit_layer(tiny_clip, nla, video_config(iters=1), frames=torch.rand(3, 3, 48, 64))
    bad = nla.original_frames()
    bad[4, 0, 5, 6] = float("nan")
    with pytest.raises(ValueError, match="NaN values in the frames"):
        train_video_edit_layer(tiny_clip, nla, video_config(iters=1), frames=bad)
    with pytest.raises(ValueError, match="at least 129"):
        train_video_edit_layer(tiny_clip, nla, video_config(iters=1, generator=GeneratorConfig()))
    box = training_bbox(AtlasBBox("bg", -1, -1, 0, -0.5, 40, 20), 1.0, 33)
    assert (box.width, box.height) == (66, 33)  # scaled up so both sides reach the generator minimum


def test_non_finite_loss_stops_with_the_last_good_state(tiny_clip, nla, tmp_path, monkeypatch):
    import t2l_core.edit.training_loop as training_loop
    from t2l_core.checkpoint import NonFiniteLoss

    ckpt = tmp_path / "video.safetensors"
    cfg = video_config(layer="bg", iters=3, full_image_every=2)
    full = train_video_edit_layer(tiny_clip, nla, cfg, render=False)
    real, calls = training_loop.opacity_terms, {"n": 0}

    def inf_at_second_step(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls["n"] += 1
        return {**terms, "sparsity": terms["sparsity"] * float("inf")} if calls["n"] == 2 else terms

    monkeypatch.setattr(training_loop, "opacity_terms", inf_at_second_step)
    with pytest.raises(NonFiniteLoss, match="non-finite at step 2.*last good state \\(step 1\\)"):
        train_video_edit_layer(tiny_clip, nla, cfg, checkpoint_path=ckpt, render=False)
    monkeypatch.setattr(training_loop, "opacity_terms", real)
    resumed = train_video_edit_layer(tiny_clip, nla, cfg, checkpoint_path=ckpt, resume=True, render=False)
    assert resumed.resumed_from == 1 and resumed.history == full.history
    assert torch.equal(resumed.atlas_edit.rgb, full.atlas_edit.rgb)


def test_an_image_edits_settings_become_the_papers_video_settings():
    from t2l_core.video.config import VIDEO_DEFAULT_SETTINGS, video_config_from_image_settings

    image = dict(prompt="x", iters=1000, n_views=16, lambda_structure=2.0, sparsity_l1=0.06, sparsity_l0=0.06)
    config, notes = video_config_from_image_settings(image, "foreground")
    video = VideoEditConfig.from_flat(prompt="x")
    assert config.iters == video.iters == 3000 and len(notes) == 1 and "3000" in notes[0]
    assert all(config.to_flat()[n] == video.to_flat()[n] for n in VIDEO_DEFAULT_SETTINGS)
    assert config.layer == "foreground"
    kept, notes = video_config_from_image_settings({**image, "iters": 1200}, "bg")
    assert kept.iters == 1200 and notes == []
    widgets, notes = video_config_from_image_settings(image, "bg", video_defaults=False)
    assert widgets.iters == 1000 and widgets.views.n_views == 16 and notes == []
