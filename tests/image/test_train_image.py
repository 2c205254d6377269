"""Training an edit layer with the tiny CLIP on a real photograph (skimage astronaut), tiny sizes."""

import math

import pytest
import torch

from t2l_core.edit.layer import EditLayer
from t2l_core.progress import Cancelled, Hooks
from t2l_core.edit.config import EditConfig
from t2l_core.api import train_edit_layer

from _edit_helpers import tiny_config


def _run(clip, image, **kw):
    hooks = kw.pop("hooks", None)
    extra = {k: kw.pop(k) for k in ("checkpoint_path", "resume", "bootstrap_mask", "keep_checkpoint") if k in kw}
    return train_edit_layer(clip, image, tiny_config(**kw), hooks=hooks, **extra)


def test_forty_steps_loss_falls_outputs_have_input_size(tiny_clip, astronaut):
    seen = []
    hooks = Hooks(on_step=lambda s, n, losses, prev: seen.append((s, n, prev)), preview_every=20)
    r = _run(tiny_clip, astronaut, iters=40, hooks=hooks)
    totals = [h["total"] for h in r.history]
    assert len(totals) == 40 and all(math.isfinite(t) for t in totals)
    assert sum(totals[-10:]) / 10 < sum(totals[:10]) / 10
    out = r.output
    assert out.composite.shape == (1, 3, 96, 128) and out.alpha.shape == (1, 1, 96, 128)
    for t in (out.composite, out.color, out.alpha, out.greenscreen):
        assert 0.0 <= t.min() and t.max() <= 1.0
    # progress every step, a preview ([H,W,3] of the working image) every 20 steps
    assert [s for s, _, _ in seen] == list(range(1, 41))
    previews = [(s, p) for s, _, p in seen if p is not None]
    assert [s for s, _ in previews] == [20, 40] and previews[0][1].shape == (129, 172, 3)
    # lr decays by 0.99 per step from 2.5e-3
    assert r.history[9]["lr"] == pytest.approx(2.5e-3 * 0.99**10)
    assert isinstance(r.layer, EditLayer) and r.steps == 40


def test_higher_sparsity_gives_lower_mean_opacity(tiny_clip, astronaut):
    low = _run(tiny_clip, astronaut, iters=12, sparsity_l1=0.0, sparsity_l0=0.0)
    high = _run(tiny_clip, astronaut, iters=12, sparsity_l1=3.0, sparsity_l0=3.0)
    assert high.output.alpha.mean() < low.output.alpha.mean() - 0.1


def test_same_seed_same_result_other_seed_differs(tiny_clip, astronaut):
    a = _run(tiny_clip, astronaut, iters=4, seed=7, roi_text="astronaut")
    b = _run(tiny_clip, astronaut, iters=4, seed=7, roi_text="astronaut")
    c = _run(tiny_clip, astronaut, iters=4, seed=8, roi_text="astronaut")
    assert a.history == b.history
    assert torch.equal(a.output.composite, b.output.composite)
    assert not torch.equal(a.output.composite, c.output.composite)
    assert "bootstrap" in a.history[0] and a.history[0]["bootstrap_weight"] == pytest.approx(10 * (1 - 1 / 4))


def test_cancel_leaves_checkpoint_that_resumes_to_the_same_result(tiny_clip, astronaut, tmp_path):
    ckpt = tmp_path / "ckpt.safetensors"
    full = _run(tiny_clip, astronaut, iters=6)

    calls = {"armed": False, "n": 0}

    def after_step(step, total, losses, preview):
        calls["armed"] = step == 3  # the user presses cancel while step 4 runs

    def cancel_in_step_4():
        if calls["armed"]:
            calls["n"] += 1
            if calls["n"] == 5:  # cancel points sit inside the passes (every layer), not only between stages
                raise Cancelled("user pressed cancel")

    with pytest.raises(Cancelled):
        _run(tiny_clip, astronaut, iters=6, hooks=Hooks(on_step=after_step, check_cancel=cancel_in_step_4),
             checkpoint_path=ckpt)
    assert ckpt.is_file()
    from safetensors import safe_open

    with safe_open(str(ckpt), framework="pt") as f:
        done = int(f.metadata()["step"])
    assert done == 3
    resumed = _run(tiny_clip, astronaut, iters=6, checkpoint_path=ckpt, resume=True)
    assert resumed.steps == 6 and len(resumed.history) == 6
    assert resumed.history == full.history
    assert torch.equal(resumed.output.composite, full.output.composite)
    assert not ckpt.exists()  # the finished run removed its checkpoint
    # kept on request: the same run then comes back from it without training
    kept = _run(tiny_clip, astronaut, iters=6, checkpoint_path=ckpt, keep_checkpoint=True)
    assert ckpt.is_file() and kept.checkpoint_path == ckpt
    again = _run(tiny_clip, astronaut, iters=6, checkpoint_path=ckpt, resume=True, keep_checkpoint=True,
                 hooks=Hooks(on_step=lambda *a: (_ for _ in ()).throw(AssertionError("trained again"))))
    assert torch.equal(again.output.composite, full.output.composite) and again.resumed_from == 6
    # a checkpoint of other settings is not used: trained from the start, said in the notes, then replaced
    other = _run(tiny_clip, astronaut, iters=6, seed=99, checkpoint_path=ckpt, resume=True)
    fresh = _run(tiny_clip, astronaut, iters=6, seed=99)
    assert other.resumed_from == 0 and any("not used" in n for n in other.notes)
    assert torch.equal(other.output.composite, fresh.output.composite)
    assert not ckpt.exists()


def test_default_generator_runs_and_bootstrap_mask(tiny_clip, astronaut):
    from t2l_core.edit.generator import GeneratorConfig

    mask = torch.zeros(96, 128)
    mask[20:60, 40:90] = 1.0
    r = _run(tiny_clip, astronaut, iters=2, generator=GeneratorConfig(), bootstrap_mask=mask)
    assert r.history[0]["bootstrap"] > 0
    assert sum(p.numel() for p in r.layer.state_dict.values()) == 3_115_548


def test_gray_and_rgba_inputs_are_handled(tiny_clip, astronaut):
    gray = astronaut.mean(dim=1, keepdim=True)
    rgba = torch.cat([astronaut, torch.ones(1, 1, 96, 128)], dim=1)
    for img in (gray, rgba, astronaut[0]):
        r = _run(tiny_clip, img, iters=1, full_image_every=0)
        assert r.output.composite.shape == (1, 3, 96, 128)


def test_bad_inputs_fail_clearly_and_write_nothing(tiny_clip, astronaut, tmp_path):
    with pytest.raises(ValueError, match="target prompt is empty"):
        _run(tiny_clip, astronaut, prompt="  ")
    with pytest.raises(ValueError, match="at least 32 px"):
        _run(tiny_clip, torch.rand(1, 3, 20, 200))
    with pytest.raises(ValueError, match="one image"):
        _run(tiny_clip, torch.rand(2, 3, 96, 128))
    with pytest.raises(ValueError, match="mask"):
        _run(tiny_clip, astronaut, bootstrap_mask=torch.ones(1, 50, 50))
    with pytest.raises(ValueError, match="size >= 129"):
        _run(tiny_clip, astronaut, size=64)
    ckpt = tmp_path / "nan.safetensors"
    for value in (float("nan"), float("inf")):
        bad = astronaut.clone()
        bad[..., 10, 10] = value
        with pytest.raises(ValueError, match="(NaN|infinite) values in the image"):
            _run(tiny_clip, bad, iters=3, checkpoint_path=ckpt)
        mask = torch.ones(96, 128)
        mask[3, 4] = value
        with pytest.raises(ValueError, match="values in the bootstrap mask"):
            _run(tiny_clip, astronaut, iters=3, checkpoint_path=ckpt, bootstrap_mask=mask)
    assert not ckpt.exists()  # refused before any work


def test_config_roundtrip():
    cfg = tiny_config(prompt=["a", "b"], iters=3)
    assert EditConfig.from_dict(cfg.to_dict()) == cfg


def test_roi_text_is_the_directional_source_when_source_prompt_is_empty(tiny_clip, astronaut):
    """Paper eq. 3, L_dir(I_s, I_o, T_ROI, T): without a source prompt the ROI text is the source text."""
    from t2l_core.edit.config import EditConfig

    assert EditConfig.from_flat(prompt="x", source_prompt="cake", roi_text="cat").directional_source() == "cake"
    assert EditConfig.from_flat(prompt="x", source_prompt=" ", roi_text="cat").directional_source() == "cat"
    assert EditConfig.from_flat(prompt="x").directional_source() is None
    with_roi = train_edit_layer(tiny_clip, astronaut, tiny_config(iters=1, source_prompt=None, roi_text="astronaut"))
    without = train_edit_layer(tiny_clip, astronaut, tiny_config(iters=1, source_prompt=None, roi_text=None))
    assert with_roi.history[0]["directional"] > 0 and "directional" not in without.history[0]
