"""Same inputs, same result: an atlas fit is bit-identical at 1, 2 and 4 threads, twice in a row, and when
cancelled and resumed; an image edit and an atlas edit are bit-identical twice in a row at 2 threads and when
resumed there. Tiny sizes, CPU, the tiny random CLIP."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from _edit_helpers import tiny_config
from synthetic_video import make_synthetic_video

from t2l_core import api
from t2l_core.nla.fit import NLAFitConfig, fit_nla
from t2l_core.progress import Cancelled, Hooks
from t2l_core.reductions import CHUNK, stable_mean, stable_sum


@contextmanager
def threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def cancel_after(step_to_stop: int) -> Hooks:
    def on_step(step, total, losses, preview):
        if step == step_to_stop:
            raise Cancelled("test: cancel")
    return Hooks(on_step=on_step)


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stable_sum_is_the_sum_at_every_thread_count():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(7 * CHUNK * CHUNK // 1000 + 13, generator=g)  # not a multiple of the chunk, two levels deep
    sums = []
    for n in (1, 2, 4):
        with threads(n):
            sums.append(stable_sum(x))
    assert all(torch.equal(s, sums[0]) for s in sums)
    assert abs(float(sums[0]) - float(x.double().sum())) <= 1e-6 * float(x.double().sum())
    assert float(stable_mean(torch.tensor([1.0, 2.0, 6.0]))) == 3.0
    w = x[:100].clone().requires_grad_()
    stable_mean(w).backward()
    assert torch.equal(w.grad, torch.full_like(w, 1 / 100))


@pytest.fixture(scope="module")
def video():
    return make_synthetic_video(frames=6, height=40, width=56)


def _fit(video, hooks=None, **kw):
    cfg = NLAFitConfig(iterations=5, seed=3, flow="lk")  # the default pixel batch
    return fit_nla(video.frames, video.masks, cfg, hooks=hooks, device="cpu", **kw)


def test_an_atlas_fit_is_the_same_at_1_2_and_4_threads_and_twice_in_a_row(video):
    runs = []
    for n in (1, 2, 4, 2):
        with threads(n):
            runs.append(_fit(video))
    first = runs[0]
    for other in runs[1:]:
        assert same_state(other.model.state_dict(), first.model.state_dict())
        assert other.psnr == first.psnr
        assert {k: b.to_dict() for k, b in other.bboxes.items()} == {k: b.to_dict() for k, b in first.bboxes.items()}


def test_a_resumed_atlas_fit_equals_the_uninterrupted_one_at_2_threads(video, tmp_path):
    ckpt = str(tmp_path / "fit.safetensors")
    with threads(2):
        whole = _fit(video)
        with pytest.raises(Cancelled):
            _fit(video, hooks=cancel_after(1), checkpoint_path=ckpt)
        resumed = _fit(video, checkpoint_path=ckpt)
    assert any("resumed" in n for n in resumed.notes)
    assert same_state(resumed.model.state_dict(), whole.model.state_dict()) and resumed.psnr == whole.psnr


def test_an_image_edit_is_the_same_twice_in_a_row_and_resumed_at_2_threads(tiny_clip, astronaut, tmp_path):
    ckpt = tmp_path / "edit.safetensors"
    config = tiny_config(iters=3)
    with threads(2):
        a = api.train_edit_layer(tiny_clip, astronaut, config)
        b = api.train_edit_layer(tiny_clip, astronaut, config)
        with pytest.raises(Cancelled):
            api.train_edit_layer(tiny_clip, astronaut, config, hooks=cancel_after(1), checkpoint_path=ckpt)
        resumed = api.train_edit_layer(tiny_clip, astronaut, config, checkpoint_path=ckpt, resume=True)
    assert resumed.resumed_from == 1
    for other in (b, resumed):
        assert same_state(other.layer.state_dict, a.layer.state_dict) and other.history[-1] == a.history[-1]


def test_an_atlas_edit_is_the_same_twice_in_a_row_at_2_threads(tiny_clip):
    v = make_synthetic_video(frames=3, height=40, width=56)
    nla = fit_nla(v.frames, None, NLAFitConfig(iterations=3, batch_pixels=1024, flow="lk"), device="cpu")
    config = api.video_edit_config(prompt="golden astronaut", layer="bg", iters=2, n_views=2, view_short_side=48,
                                   view_max_long=64, structure_max_long=80, generator=dict(num_scales=5, channels_down=16, channels_up=16))
    with threads(2):
        a = api.train_video_edit_layer(tiny_clip, nla, config, render=False)
        b = api.train_video_edit_layer(tiny_clip, nla, config, render=False)
    assert same_state(b.layer.state_dict, a.layer.state_dict) and b.history == a.history
