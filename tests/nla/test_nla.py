"""Layered atlas (NLA): losses vs formulas, fitting a synthetic video with known motion, rendering,
propagation of a painted keyframe, save/load, refusal of mismatched frames, cancel + resume."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F


from synthetic_video import make_synthetic_video

from t2l_core.nla import losses as L
from t2l_core.nla.render import (AtlasEdit, frame_alpha, frame_uv, push_frame_edit, render_edits,
                                   sample_atlas)
from t2l_core.nla.config import NLAFitConfig
from t2l_core.nla.fit import fit_nla
from t2l_core.nla.fit_checkpoint import fit_checkpoint_file, fit_key, read_fit_state, resume_key
from t2l_core.nla.reconstruction import reconstruct_video
from t2l_core.nla.atlas_files import load_nla, save_nla
from t2l_core.nla.optical_flow import compute_video_flow, find_raft_weights, make_flow_estimator, pyramid_lk_flow, fb_consistency
from t2l_core.progress import Cancelled, Hooks

FIT_ITERS = 200



@pytest.fixture(scope="module")
def video():
    return make_synthetic_video(frames=8, height=48, width=64)


@pytest.fixture(scope="module")
def three_frames(video):
    """The video's first 3 frames and their LK flow (for single fit steps)."""
    est, name = make_flow_estimator(torch.device("cpu"), (), "lk")
    frames = video.frames[:3]
    return frames, compute_video_flow(lambda i: frames[i], 3, est, name)


@pytest.fixture(scope="module")
def fitted(video):
    return fit_nla(video.frames, video.masks, NLAFitConfig(iterations=FIT_ITERS, batch_pixels=4096, seed=0, flow="lk"))


# ---------------------------------------------------------------------------------------------------- losses

def _rot(theta: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s], [s, c]])


def test_rigidity_is_minimal_for_a_rotation():
    J = torch.stack([_rot(0.3), _rot(-1.2), torch.eye(2)])
    val = L.rigidity_from_jacobian(J)
    expected = math.sqrt(2) + math.sqrt(2) / 1.001  # ||I||_F + ||(1.001 I)^-1||_F ~ 2 sqrt(2)
    assert torch.allclose(val, torch.full((3,), expected), atol=1e-5)
    assert abs(expected - 2 * math.sqrt(2)) < 2e-3
    # any scaling or shear costs more
    for A in (2 * torch.eye(2), 0.5 * torch.eye(2), torch.tensor([[1.0, 0.4], [0.0, 1.0]])):
        assert float(L.rigidity_from_jacobian(A[None])) > expected + 0.05
    # hand computed for J = 2I: ||4I|| + ||(4.001 I)^-1|| = 4 sqrt2 + sqrt2 / 4.001
    assert abs(float(L.rigidity_from_jacobian(2 * torch.eye(2)[None])) - (4 * math.sqrt(2) + math.sqrt(2) / 4.001)) < 1e-5


def test_rigidity_loss_finite_differences_of_a_rotated_mapping():
    # M(p) = s R p / (L/2): finite differences in pixel units give exactly the rotation
    pixel_scale, R = 40.0, _rot(0.7)
    p = torch.rand(50, 2) * 30
    M = lambda q: (q @ R.t()) / pixel_scale  # noqa: E731
    for d in (1.0, 10.0):
        val = L.rigidity_loss(M(p), M(p - torch.tensor([d, 0.0])), M(p - torch.tensor([0.0, d])), d, pixel_scale)
        assert abs(float(val) - (math.sqrt(2) + math.sqrt(2) / 1.001)) < 1e-4


def test_flow_loss_is_zero_for_an_exact_mapping_and_pixels_otherwise():
    m = torch.rand(100, 2)
    valid = torch.rand(100) > 0.3
    w = torch.rand(100)
    assert float(L.flow_consistency_loss(m, m.clone(), valid, w, 40.0)) < 1e-4
    shifted = m + torch.tensor([0.03, 0.04])  # 0.05 mapping units = 2 px at pixel_scale 40
    expected = float((valid.float() * w * 2.0).sum() / valid.float().sum())
    assert abs(float(L.flow_consistency_loss(m, shifted, valid, w, 40.0)) - expected) < 1e-4


def test_bootstrap_matches_bce_and_other_terms():
    a = torch.rand(64) * 0.98 + 0.01
    m = (torch.rand(64) > 0.5).float()
    assert torch.allclose(L.alpha_bootstrap_loss(a, m), F.binary_cross_entropy(a, m), atol=1e-6)
    assert torch.allclose(L.alpha_flow_loss(a, a.flip(0), torch.ones(64, dtype=torch.bool)), (a - a.flip(0)).abs().mean())
    rgb = torch.rand(64, 3)
    assert torch.allclose(L.sparsity_loss(rgb, a), ((rgb * (1 - a[:, None])) ** 2).sum(-1).mean())
    assert abs(L.psnr(0.001) - 30.0) < 1e-9


def test_motion_prior_is_the_charbonnier_length_of_the_residual_in_pixels():
    m_affine = torch.rand(4, 2)
    r_px = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.3, 0.0], [-6.0, 8.0]])  # lengths 5, 0, 0.3, 10 px
    val = float(L.residual_loss(m_affine + r_px / 40.0, m_affine, 40.0))
    expected = sum(math.sqrt(r * r + 1.0) - 1.0 for r in (5.0, 0.0, 0.3, 10.0)) / 4
    assert abs(val - expected) < 1e-4
    assert float(L.residual_loss(m_affine, m_affine, 40.0)) == 0.0


def test_the_fit_step_pulls_a_background_residual_back_to_the_affine_motion(video, three_frames):
    from t2l_core.nla.atlas_model import AtlasConfig, LayeredAtlas
    from t2l_core.nla.fit_step import training_step

    frames, flow = three_frames
    model = LayeredAtlas(AtlasConfig(height=48, width=64, frames=3, has_foreground=True))
    shift = torch.tensor([0.015, -0.02])  # mapping units: 0.025 * (L/2) / uv_scale = 1 px
    with torch.no_grad():
        model.map_bg.residual.grids[0].copy_(shift.view(1, 2, 1, 1, 1).expand_as(model.map_bg.residual.grids[0]))
    cfg = NLAFitConfig(iterations=100, batch_pixels=256)
    loss, terms = training_step(model, frames.half(), video.masks[:3], flow, 60, cfg.iterations, cfg,
                                torch.Generator().manual_seed(0), torch.device("cpu"))
    assert abs(terms["residual_bg"] - (math.sqrt(2.0) - 1.0)) < 1e-4 and "residual_fg" not in terms
    # alone, the prior's gradient moves the residual towards 0
    model.zero_grad()
    cfg.weights = L.NLALossWeights(**{k: 0.0 for k in ("rgb", "gradient", "rigidity", "flow", "alpha_flow",
                                                          "sparsity", "bootstrap")})
    loss, _ = training_step(model, frames.half(), video.masks[:3], flow, 60, cfg.iterations, cfg,
                            torch.Generator().manual_seed(0), torch.device("cpu"))
    loss.backward()
    g = model.map_bg.residual.grids[0].grad.sum(dim=(0, 2, 3, 4))
    assert g[0] > 0 and g[1] < 0
    assert model.map_fg.residual.grids[0].grad is None or float(model.map_fg.residual.grids[0].grad.abs().max()) == 0.0


# ---------------------------------------------------------------------------------------------------- flow

def test_offline_flow_recovers_known_motion(video):
    errs = []
    for t in range(3):
        f = pyramid_lk_flow(video.frames[t], video.frames[t + 1])
        b = pyramid_lk_flow(video.frames[t + 1], video.frames[t])
        ok = fb_consistency(f, b, 1.0)
        assert ok.float().mean() > 0.6
        errs.append((f - video.true_flow(t)).norm(dim=0)[ok])
    assert torch.cat(errs).median() < 0.5


def test_raft_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert find_raft_weights([str(tmp_path)]) is None
    est, name = make_flow_estimator(torch.device("cpu"), [str(tmp_path)], "auto")
    assert name == "lk"
    with pytest.raises(FileNotFoundError, match="RAFT weights"):
        make_flow_estimator(torch.device("cpu"), [str(tmp_path)], "raft")


# ---------------------------------------------------------------------------------------------------- fitting

def test_reconstruction_psnr_on_synthetic_video(fitted, video):
    print(f"synthetic 8x48x64, {FIT_ITERS} iterations: reconstruction PSNR {fitted.psnr:.2f} dB")
    assert fitted.psnr >= 30.0
    rec, alpha, p = reconstruct_video(fitted.model, video.frames)
    assert abs(p - fitted.psnr) < 1e-6
    # the opacity separates the object: IoU with the true mask
    inter = ((alpha > 0.5) & (video.alpha > 0.5)).sum()
    union = ((alpha > 0.5) | (video.alpha > 0.5)).sum()
    assert float(inter) / float(union) > 0.9


def _landing_error(model, layer, x0, y0, x1, y1, t1) -> torch.Tensor:
    """Pixel distance between where an atlas point seen at (x0,y0,frame 0) lands in frame t1 and (x1,y1)."""
    t0 = torch.zeros_like(x0, dtype=torch.long)
    tt = torch.full_like(x0, t1, dtype=torch.long)
    uv_target = model.uv(layer, x0, y0, t0)
    uv_here = model.uv(layer, x1, y1, tt)
    e = 0.25
    jx = (model.uv(layer, x1 + e, y1, tt) - model.uv(layer, x1 - e, y1, tt)) / (2 * e)
    jy = (model.uv(layer, x1, y1 + e, tt) - model.uv(layer, x1, y1 - e, tt)) / (2 * e)
    J = torch.stack([jx, jy], dim=-1)  # d uv / d (x, y)
    dp = torch.linalg.solve(J, (uv_target - uv_here)[..., None])[..., 0]
    return dp.norm(dim=-1)


@torch.no_grad()
def test_atlas_points_move_with_the_known_motion(fitted, video):
    """A checkerboard texel painted on the atlas lands in every frame where the true motion puts it."""
    model = fitted.model
    T, _, H, W = video.frames.shape
    ys, xs = torch.meshgrid(torch.arange(2, H - 2, 2.0), torch.arange(2, W - 2, 2.0), indexing="ij")
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    for layer in ("bg", "fg"):
        errs = []
        for t in range(1, T):
            dx, dy = (video.bg_frame_displacement if layer == "bg" else video.fg_frame_displacement)(0, t)
            x1, y1 = xs + dx, ys + dy
            inside = (x1 >= 1) & (x1 <= W - 2) & (y1 >= 1) & (y1 <= H - 2)
            xi, yi = x1.round().long().clamp(0, W - 1), y1.round().long().clamp(0, H - 1)
            a0 = video.alpha[0][ys.long(), xs.long()]
            a1 = video.alpha[t][yi, xi]
            if layer == "bg":
                sel = inside & (a0 < 0.01) & (a1 < 0.01)
            else:
                sel = inside & (a0 > 0.99) & (a1 > 0.99)
            errs.append(_landing_error(model, layer, xs[sel], ys[sel], x1[sel], y1[sel], t))
        err = torch.cat(errs)
        print(f"{layer}: median landing error {err.median():.3f} px over {err.numel()} points (p90 {err.quantile(0.9):.3f})")
        assert err.numel() > 50
        assert float(err.median()) <= 1.0


@torch.no_grad()
def test_checkerboard_on_bg_atlas_follows_the_pan(fitted, video):
    """Render a checkerboard painted on the bg atlas; frame t equals frame 0 shifted by the camera pan."""
    box = fitted.bboxes["bg"]
    yy, xx = torch.meshgrid(torch.arange(box.height), torch.arange(box.width), indexing="ij")
    board = (((xx // 6) + (yy // 6)) % 2).float()
    board = F.avg_pool2d(board[None, None], 5, stride=1, padding=2, count_include_pad=False)[0, 0]  # soften edges
    edit = AtlasEdit(rgb=board[None].expand(3, -1, -1).clone(), alpha=torch.ones_like(board), bbox=box)
    frames = torch.zeros_like(video.frames)  # blend over black so only the board shows (alpha of fg ~ 0 in bg)
    out = render_edits(fitted.model, frames, None, edit)
    T, _, H, W = frames.shape
    t = T - 1
    dx, dy = video.bg_frame_displacement(0, t)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    # frame t at p corresponds to frame 0 at p - d
    grid = torch.stack([2 * (xs - dx) / (W - 1) - 1, 2 * (ys - dy) / (H - 1) - 1], -1)[None]
    f0_shifted = F.grid_sample(out[0:1], grid, align_corners=True)[0]
    src_ok = ((xs - dx) >= 1) & ((xs - dx) <= W - 2) & ((ys - dy) >= 1) & ((ys - dy) <= H - 2)
    dil = F.max_pool2d((video.alpha[[0, t]] > 0.01).float()[:, None], 7, stride=1, padding=3)[:, 0]
    shifted_fg0 = F.grid_sample(dil[0:1, None], grid, align_corners=True)[0, 0] > 0
    sel = src_ok & (dil[1] == 0) & ~shifted_fg0
    diff = (out[t, 0] - f0_shifted[0]).abs()[sel]
    print(f"checkerboard: mean abs diff {diff.mean():.4f} over {int(sel.sum())} px")
    assert sel.sum() > 300
    assert float(diff.mean()) < 0.08
    assert float(out[t, 0][sel].std()) > 0.2  # the board is really there


def test_transparent_edit_returns_the_original_frames_exactly(fitted):
    frames = fitted.original_frames()
    edits = {k: AtlasEdit(rgb=torch.rand(3, b.height, b.width), alpha=torch.zeros(b.height, b.width), bbox=b)
             for k, b in fitted.bboxes.items()}
    out = render_edits(fitted.model, frames, edits["fg"], edits["bg"])
    assert torch.equal(out, frames)
    assert torch.equal(render_edits(fitted.model, frames), frames)


@torch.no_grad()
def test_painted_keyframe_propagates(fitted, video):
    """Paint a red square on the background of frame 0, push it into the atlas, render: frame 0 shows it and
    frame t shows it moved by the camera pan."""
    T, _, H, W = video.frames.shape
    model = fitted.model
    opacity = torch.zeros(H, W)
    top, left, s = 34, 52, 8  # away from the foreground in frame 0 and in the last frame
    opacity[top:top + s, left:left + s] = 1.0
    red = torch.zeros(3, H, W)
    red[0] = 1.0
    assert video.alpha[0][opacity > 0].max() < 0.01
    edits = push_frame_edit(model, 0, red, opacity, fitted.bboxes)
    out = render_edits(model, fitted.original_frames(), edits.get("fg"), edits["bg"])
    inner = (slice(top + 1, top + s - 1), slice(left + 1, left + s - 1))
    assert float((out[0][0][inner] - 1).abs().mean()) < 0.1 and float(out[0][1][inner].mean()) < 0.1
    t = T - 1
    dx, dy = video.bg_frame_displacement(0, t)
    ys, xs = torch.nonzero(out[t][0] - out[t][1] > 0.5, as_tuple=True)  # where it is red now
    cx, cy = xs.float().mean(), ys.float().mean()
    ex, ey = left + (s - 1) / 2 + dx, top + (s - 1) / 2 + dy
    print(f"propagated square centre ({cx:.2f},{cy:.2f}) expected ({ex:.2f},{ey:.2f})")
    assert abs(float(cx) - ex) < 1.0 and abs(float(cy) - ey) < 1.0
    # nothing red far away from it
    assert xs.numel() < 2 * s * s


def test_atlas_images_and_uv_maps(fitted):
    imgs = fitted.atlas_images()
    for layer, img in imgs.items():
        box = fitted.bboxes[layer]
        assert img.shape == (3, box.height, box.width)
        assert 0 <= float(img.min()) and float(img.max()) <= 1
        uv = frame_uv(fitted.model, 3, layer, crop=(5, 7, 10, 12))
        full = frame_uv(fitted.model, 3, layer)
        assert uv.shape == (10, 12, 2) and torch.allclose(uv, full[5:15, 7:19])
    # sampling the discretised atlas at the frame's uvs gives back the model's own colours (bg, outside fg)
    rgb = sample_atlas(imgs["bg"], fitted.bboxes["bg"], frame_uv(fitted.model, 0, "bg"))
    a = frame_alpha(fitted.model, 0)
    rec = fitted.reconstruction[0][0]
    assert float((rgb - rec).abs()[:, a < 0.01].mean()) < 0.03
    assert (fitted.bboxes["fg"].u0 >= -0.1) and (fitted.bboxes["bg"].u1 <= 0.1)


# ---------------------------------------------------------------------------------------------------- io

def test_save_load_round_trip_is_identical(fitted, tmp_path):
    path = str(tmp_path / "a.safetensors")
    save_nla(fitted, path)
    back = load_nla(path)
    sd0, sd1 = fitted.model.state_dict(), back.model.state_dict()
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    assert torch.equal(back.frames_u8, fitted.frames_u8)
    assert back.bboxes == fitted.bboxes and back.cfg == fitted.cfg and back.psnr == fitted.psnr
    box = fitted.bboxes["bg"]
    edit = AtlasEdit(rgb=torch.rand(3, box.height, box.width), alpha=torch.rand(box.height, box.width), bbox=box)
    a = render_edits(fitted.model, fitted.original_frames(), None, edit)
    b = render_edits(back.model, back.original_frames(), None, edit)
    assert torch.equal(a, b)


def test_refuses_frames_of_another_size_or_count(fitted, tmp_path):
    frames = fitted.original_frames()
    with pytest.raises(ValueError, match=r"fitted on 8 frames of 64x48.*got 7 frames"):
        fitted.check_frames(frames[:7])
    with pytest.raises(ValueError, match=r"got 8 frames of 62x48"):
        fitted.check_frames(frames[..., :62])
    path = str(tmp_path / "a.safetensors")
    save_nla(fitted, path)
    with pytest.raises(ValueError, match="Resize/trim the frames"):
        load_nla(path, frames=F.interpolate(frames, size=(40, 64)))


def test_bad_inputs_have_clear_errors(video):
    with pytest.raises(ValueError, match="one mask per frame"):
        fit_nla(video.frames, video.masks[:5], NLAFitConfig(iterations=1))
    with pytest.raises(ValueError, match="at least 2 frames"):
        fit_nla(video.frames[:1], None, NLAFitConfig(iterations=1))
    with pytest.raises(ValueError, match="every mask is empty"):
        fit_nla(video.frames[:3], torch.zeros(3, 48, 64), NLAFitConfig(iterations=1, flow="lk"))


# ---------------------------------------------------------------------------------------------------- cancel / resume

def test_cancel_leaves_a_checkpoint_that_resumes_identically(tmp_path):
    v = make_synthetic_video(frames=4, height=32, width=40)
    est, name = make_flow_estimator(torch.device("cpu"), (), "lk")
    flow = compute_video_flow(lambda i: v.frames[i], 4, est, name)
    cfg = NLAFitConfig(iterations=30, batch_pixels=1024, seed=3)
    ref = fit_nla(v.frames, None, cfg, flow=flow)
    assert ref.cfg.has_foreground is False and ref.model.map_fg is None

    ckpt = str(tmp_path / "ck.safetensors")
    seen = []

    def cancel_at_12():
        if len(seen) == 12:
            raise Cancelled("user pressed cancel")

    hooks = Hooks(on_step=lambda s, n, losses, prev: seen.append(s), check_cancel=cancel_at_12)
    with pytest.raises(Cancelled):
        fit_nla(v.frames, None, cfg, hooks=hooks, checkpoint_path=ckpt, flow=flow)
    assert os.path.isfile(ckpt)
    notes: list = []
    state = read_fit_state(fit_checkpoint_file(ckpt, resume_key(fit_key(v.frames, None, cfg), "lk", torch.device("cpu"))),
                           notes)
    assert state is not None and state.step == 12 and not notes
    from safetensors import safe_open

    with safe_open(ckpt, framework="pt") as f:  # the shared checkpoint format, tagged as an atlas fit
        meta = f.metadata()
    assert meta["format"] == "t2l-checkpoint" and meta["job"] == "atlas-fit" and meta["step"] == "12"
    assert state.atlas_config.has_foreground is False and "rng_state" in state.tensors
    steps = []
    resumed = fit_nla(v.frames, None, cfg, hooks=Hooks(on_step=lambda s, n, l, p: steps.append(s)),
                      checkpoint_path=ckpt, resume=True, flow=flow)
    assert steps[0] == 13 and steps[-1] == 30 and resumed.steps == 30
    assert not os.path.exists(ckpt)  # removed after success
    sd0, sd1 = ref.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0)  # bit for bit
    assert resumed.notes and "resumed" in resumed.notes[0]


def test_a_file_that_is_not_an_atlas_fit_checkpoint_is_refused_by_name(tmp_path):
    from t2l_core.checkpoint import EDIT_JOB, CheckpointFile

    v = make_synthetic_video(frames=3, height=32, width=40)
    path = tmp_path / "fit.safetensors"
    CheckpointFile(path, EDIT_JOB, "0" * 16).write({"gen.w": torch.zeros(2)}, 1)
    with pytest.raises(ValueError, match="not a Text2LIVE atlas fit checkpoint"):
        fit_nla(v.frames, None, NLAFitConfig(iterations=2, batch_pixels=256, flow="lk"), checkpoint_path=str(path))
    fit_nla(v.frames, None, NLAFitConfig(iterations=2, batch_pixels=256, flow="lk"), checkpoint_path=str(path),
            resume=False)  # without resume the file is not read; the finished fit removes it
    assert not path.exists()


def test_a_fit_step_is_the_weighted_sum_of_its_scheduled_terms(video, three_frames):
    """The step's total is sum(weight * term) over the terms its schedules switch on (float64 reference)."""
    from t2l_core.nla.atlas_model import AtlasConfig, LayeredAtlas
    from t2l_core.nla.fit_step import term_weights, training_step

    frames, flow = three_frames
    model = LayeredAtlas(AtlasConfig(height=48, width=64, frames=3, has_foreground=True))
    cfg = NLAFitConfig(iterations=100, batch_pixels=256)  # warm-up until step 5, global rigidity 30, bootstrap 50
    for step, expect in ((0, {"warmup_fg", "warmup_bg", "global_rigidity", "bootstrap"}), (10, {"global_rigidity", "bootstrap"}),
                         (40, {"bootstrap"}), (60, set())):
        loss, terms = training_step(model, frames.half(), video.masks[:3], flow, step, cfg.iterations, cfg,
                                    torch.Generator().manual_seed(0), torch.device("cpu"))
        scheduled = {"warmup_fg", "warmup_bg", "bootstrap"} & set(terms)
        scheduled |= {"global_rigidity"} if terms["global_rigidity"] > 0 else set()
        assert scheduled == expect, (step, sorted(terms))
        weights = term_weights(cfg.weights)
        total = sum(weights[k] * terms[k] for k in terms if k != "psnr_batch")
        assert math.isclose(float(loss.detach()), total, rel_tol=1e-5)
        assert terms["psnr_batch"] == L.psnr(terms["rgb"] / 3.0)


def test_a_fit_that_reaches_its_target_psnr_ends_there_and_says_so(video):
    """Every eval_every steps the sampled PSNR is measured; once it reaches target_psnr that step is the last,
    and the progress reports it as the end (done == total)."""
    seen = []
    hooks = Hooks(on_step=lambda step, total, logs, preview: seen.append((step, total, "psnr_sampled" in logs)))
    fitted = fit_nla(video.frames, video.masks, NLAFitConfig(iterations=40, batch_pixels=1024, seed=0, flow="lk",
                                                             target_psnr=1.0, eval_every=6), hooks=hooks)
    assert fitted.steps == 6
    assert [s for s, _, _ in seen] == list(range(1, 7))
    assert seen[-1] == (6, 6, True) and all(total == 40 and not measured for _, total, measured in seen[:-1])
