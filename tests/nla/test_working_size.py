"""Long videos: an atlas fitted at a working size (NLAFitConfig.working_size) answers at full size through its
continuous coordinates, reconstructs the full-size frames about as well as a fit at the small size does, streams
its PSNR, and the memory estimate follows the setting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from synthetic_video import make_synthetic_video

from t2l_core.nla.atlas_files import load_nla, save_nla
from t2l_core.nla.atlas_model import AtlasConfig, LayeredAtlas
from t2l_core.nla.config import NLAFitConfig
from t2l_core.nla.fit import fit_nla
from t2l_core.nla.fit_inputs import estimate_fit_memory
from t2l_core.nla.frame_maps import frame_alpha, frame_uv
from t2l_core.nla.reconstruction import reconstruct_video
from t2l_core.nla.working_size import at_frame_size, working_shape

FIT = dict(iterations=120, batch_pixels=2048, flow="lk")


def _random_atlas(h: int, w: int, frames: int = 3) -> LayeredAtlas:
    torch.manual_seed(0)
    model = LayeredAtlas(AtlasConfig(height=h, width=w, frames=frames, colour_max_res=32))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_the_full_size_atlas_is_the_working_one_at_the_same_picture_points():
    # a working pixel centre x is the full-size position 2x + 0.5 (pixel centres scaled about the frame centre)
    small = _random_atlas(12, 20)
    big = at_frame_size(small, 24, 40)
    assert (big.cfg.height, big.cfg.width, big.cfg.grid_size()) == (24, 40, (12, 20))
    ys, xs = torch.meshgrid(torch.arange(12.0), torch.arange(20.0), indexing="ij")
    x, y, t = xs.reshape(-1), ys.reshape(-1), torch.full((240,), 1, dtype=torch.long)
    with torch.no_grad():
        a, b = small(x, y, t), big(2 * x + 0.5, 2 * y + 0.5, t)
    for k in ("rgb", "alpha", "m_fg", "m_bg"):
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0)
    # the same size gives the model itself; the grids keep their layout through a second resize
    assert at_frame_size(small, 12, 20) is small
    assert at_frame_size(big, 36, 60).cfg.grid_size() == (12, 20)


def test_working_shape():
    assert working_shape(1080, 1920, 768) == (432, 768)
    assert working_shape(1920, 1080, 768) == (768, 432)
    assert working_shape(1080, 1920, 0) == working_shape(1080, 1920, 1920) == working_shape(1080, 1920, 4000) == (1080, 1920)


@pytest.fixture(scope="module")
def small_and_upscaled():
    """A synthetic 48x64 video and its 2x bilinear upscale (the same picture with no more detail)."""
    v = make_synthetic_video(frames=5, height=48, width=64)
    big = F.interpolate(v.frames, scale_factor=2, mode="bilinear", align_corners=False).clamp(0, 1)
    big_masks = F.interpolate(v.masks[:, None], scale_factor=2, mode="nearest")[:, 0]
    return v.frames, v.masks, big, big_masks


@pytest.fixture(scope="module")
def working_fit(small_and_upscaled):
    _, _, big, big_masks = small_and_upscaled
    return fit_nla(big, big_masks, NLAFitConfig(working_size=64, **FIT))


def test_a_working_size_fit_reconstructs_the_full_size_video_like_a_native_fit(small_and_upscaled, working_fit):
    # the native fit of the small video, drawn at the upscaled size, is the reference: the upscale's own
    # interpolation is what neither atlas holds (measured: working fit 36.5 dB, native fit 34.9 dB at full size,
    # 44.9 dB on its own small frames)
    small, masks, big, _ = small_and_upscaled
    native = fit_nla(small, masks, NLAFitConfig(**FIT))
    native_full = reconstruct_video(at_frame_size(native.model, 96, 128), big)[2]
    nla = working_fit
    assert nla.size == (96, 128) and nla.model.cfg.grid_size() == (48, 64)
    rgb, alpha = nla.reconstruction
    assert rgb.dtype == alpha.dtype == torch.uint8 and tuple(rgb.shape) == (5, 3, 96, 128)
    assert torch.equal(nla.frames_u8, (big * 255).round().to(torch.uint8))
    assert nla.psnr > 32 and nla.psnr > native_full - 1.0, (nla.psnr, native_full, native.psnr)
    # every frame's maps at full size: as many as the frame's pixels, the fg opacity following the masks
    assert tuple(frame_uv(nla.model, 2, "bg").shape) == (96, 128, 2)
    a = frame_alpha(nla.model, 2)
    assert float((a > 0.5).float().eq(small_and_upscaled[3][2]).float().mean()) > 0.9


def test_streamed_psnr_of_uint8_reconstruction_equals_the_in_memory_one(working_fit, small_and_upscaled):
    model, u8 = working_fit.model, working_fit.frames_u8
    rgb_f, alpha_f, p_f = reconstruct_video(model, u8.float() / 255)
    rgb_u, alpha_u, p_u = reconstruct_video(model, u8, out_dtype=torch.uint8)
    assert abs(p_f - p_u) < 1e-9
    # the fit's PSNR is against the frames it was given (float here)
    assert abs(reconstruct_video(model, small_and_upscaled[2], out_dtype=torch.uint8)[2] - working_fit.psnr) < 1e-9
    assert torch.equal(rgb_u, (rgb_f * 255).round().to(torch.uint8))
    assert torch.equal(alpha_u, (alpha_f * 255).round().to(torch.uint8))


def test_a_working_size_atlas_saves_and_loads_at_full_size(working_fit, tmp_path):
    path = str(tmp_path / "a.safetensors")
    save_nla(working_fit, path)
    back = load_nla(path)
    assert back.size == (96, 128) and back.model.cfg.grid_size() == (48, 64)
    assert back.fit_config["working_size"] == 64
    torch.testing.assert_close(frame_uv(back.model, 3, "fg"), frame_uv(working_fit.model, 3, "fg"))
    # a native atlas's config stores no grid size (its files stay as they were)
    assert "grid_height" not in AtlasConfig(10, 20, 3).to_dict()
    assert AtlasConfig.from_dict(AtlasConfig(10, 20, 3).to_dict()).grid_size() == (10, 20)


def test_uint8_frames_are_kept_without_a_copy():
    v = make_synthetic_video(frames=3, height=32, width=32)
    u8 = (v.frames * 255).round().to(torch.uint8)
    nla = fit_nla(u8, v.masks.bool(), NLAFitConfig(iterations=10, batch_pixels=1024, flow="lk"),
                  reconstruction="psnr")
    assert nla.frames_u8.data_ptr() == u8.data_ptr() and torch.equal(nla.frames_u8, u8) and nla.size == (32, 32)
    # no reconstruction kept; its PSNR is the streamed one
    assert nla.reconstruction is None
    assert abs(nla.psnr - reconstruct_video(nla.model, u8, keep=False)[2]) < 1e-9


def test_memory_estimate_follows_the_working_size():
    gib = 2 ** 30
    native = estimate_fit_memory(300, 1080, 1920, True)
    work = estimate_fit_memory(300, 1080, 1920, True, working_size=768)
    work_u8 = estimate_fit_memory(300, 1080, 1920, True, working_size=768, frame_bytes=1)
    assert native > 30 * gib > work > work_u8 and work_u8 < 8 * gib
    # 0 and sizes at or above the video's keep the native estimate
    assert estimate_fit_memory(300, 1080, 1920, True, working_size=1920) == native
    assert estimate_fit_memory(50, 432, 768, False) == estimate_fit_memory(50, 432, 768, False, working_size=0)
    # a fit that keeps no reconstruction needs less
    kept_none = estimate_fit_memory(300, 1080, 1920, True, working_size=768, frame_bytes=1, keep_reconstruction=False)
    assert kept_none < work_u8 - 2 * gib
    # frames and masks streamed from their files: the 300 x 1080p x 4 uint8 values are not held
    assert kept_none - estimate_fit_memory(300, 1080, 1920, True, working_size=768, frame_bytes=0,
                                           keep_reconstruction=False) == 300 * 1080 * 1920 * 4
    # a smaller working size needs less
    assert estimate_fit_memory(300, 1080, 1920, True, working_size=384, frame_bytes=1) < work_u8
