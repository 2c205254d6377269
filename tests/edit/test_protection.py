"""Spill control: a protected region (protect mask, exclusion text) that an image edit leaves alone.

The two-object image is built in integers (two identical shaded eggs on a plain background), so every CPU
sees the same bytes.
"""

from __future__ import annotations

import pytest
import torch

from t2l_core.api import train_edit_layer
from t2l_core.edit.layer import LayerOutput
from t2l_core.edit.losses import protect_loss
from t2l_core.edit.protection import (opacity_share, protect_output, protected_alphas, protected_region,
                                      spill_report, unprotected_target)
from t2l_core.image.training import input_fingerprint
from t2l_core.video.config import VideoEditConfig

from _edit_helpers import tiny_config

H, W = 96, 160


def _eggs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An image [1,3,H,W] with two identical eggs, and each egg's mask [H,W] (bool)."""
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")

    def egg(cx: int) -> torch.Tensor:
        return (xx - cx) ** 2 * 4 + (yy - 48) ** 2 * 9 <= 3600

    left, right = egg(44), egg(116)
    img = torch.tensor([70, 110, 160], dtype=torch.int64)[:, None, None].expand(3, H, W).clone()
    shade = (230 - (yy - 30).abs() // 2).clamp(0, 255)
    for m in (left, right):
        for c, base in enumerate((240, 225, 200)):
            img[c][m] = shade[m] * base // 255
    return (img.float() / 255)[None], left, right


def test_protect_loss_is_the_mean_opacity_inside_the_region():
    a = torch.tensor([[0.2, 0.4], [0.6, 0.8]]).view(1, 1, 2, 2)
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    assert protect_loss([a], [p], weight=3.0).item() == pytest.approx(3.0 * (0.2 + 0.6) / 2)
    soft = torch.tensor([[0.5, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)  # weighted by the region: Σα·P / ΣP
    assert protect_loss([a, a], [p, soft]).item() == pytest.approx(((0.2 + 0.6) / 2 + 0.2) / 2)
    with pytest.raises(ValueError, match="region"):
        protect_loss([a], [torch.ones(1, 1, 3, 3)])


def test_protected_opacity_and_output_leave_the_region_exactly():
    g = torch.Generator().manual_seed(0)
    image, color, alpha = torch.rand(1, 3, 8, 8, generator=g), torch.rand(1, 3, 8, 8, generator=g), torch.rand(
        1, 1, 8, 8, generator=g)
    protect = torch.zeros(1, 1, 8, 8)
    protect[..., :, :3] = 1.0
    protect[..., :, 3] = 0.25
    (eff,) = protected_alphas([alpha], [protect])
    assert torch.equal(eff, alpha * (1 - protect))
    assert protected_alphas([alpha], None)[0] is alpha
    out = protect_output(LayerOutput(color, alpha, image, image), image, protect)
    assert torch.equal(out.composite[..., :3], image[..., :3])  # the input bit for bit where P = 1
    assert torch.allclose(out.composite, out.alpha * color + (1 - out.alpha) * image)
    assert torch.equal(out.alpha[..., 3], alpha[..., 3] * 0.75)
    # a bootstrap target loses the protected region, at its own size
    target = unprotected_target(torch.ones(1, 8, 8), protect)
    assert torch.equal(target[0, :, :3], torch.zeros(8, 3)) and torch.equal(target[0, :, 4:], torch.ones(8, 4))


def test_opacity_shares_by_hand():
    alpha = torch.tensor([[0.0, 1.0], [0.5, 0.5]]).view(1, 1, 2, 2)
    region = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    assert opacity_share(alpha, region) == pytest.approx(1.0 / 2.0)
    assert opacity_share(torch.zeros(1, 1, 2, 2), region) == 0.0
    report = spill_report(alpha, alpha * (1 - region), region, 1 - region)
    assert report.inside_protected == 0.0 and report.inside_protected_trained == pytest.approx(0.5)
    assert report.outside_edit_region == 0.0
    assert any("inside the protected region" in line for line in report.lines())
    both = protected_region([region, None, torch.full((1, 1, 4, 4), 0.25)], (2, 2))
    assert torch.equal(both, torch.tensor([[1.0, 1.0], [0.25, 0.25]]).view(1, 1, 2, 2))
    assert protected_region([None], (2, 2)) is None


@pytest.fixture(scope="module")
def eggs():
    return _eggs()


def test_a_protected_egg_keeps_its_opacity_below_one_percent_of_the_other(tiny_clip, eggs):
    """Both eggs are the edit region (as the relevancy of 'eggs' would be); the right one is protected."""
    image, left, right = eggs
    both = (left | right).float()[None]
    config = tiny_config(iters=30, prompt="chocolate eggs", source_prompt="eggs", bootstrap_schedule="none")
    free = train_edit_layer(tiny_clip, image, config, bootstrap_mask=both)
    kept = train_edit_layer(tiny_clip, image, config, bootstrap_mask=both, protect_mask=right.float()[None])
    a_free, a = free.output.alpha[0, 0], kept.output.alpha[0, 0]
    assert a_free[right].mean() > 0.2  # unprotected, the edit covers both eggs
    assert a[left].mean() > 0.2  # protection does not take the edit off the other egg
    assert a[right].mean() < 0.01 * a[left].mean()
    assert torch.equal(kept.output.composite[0][:, right], image[0][:, right])  # untouched there
    assert kept.spill is not None and kept.spill.inside_protected == pytest.approx(0.0, abs=1e-3)
    assert kept.spill.outside_edit_region is not None
    assert any("inside the protected region" in n for n in kept.notes)
    assert "protect" in kept.history[0] and "protect" not in free.history[0]


def test_the_penalty_keeps_the_layers_own_opacity_out_of_a_protected_band(tiny_clip, astronaut):
    band = torch.zeros(1, 96, 128)
    band[..., :40] = 1.0
    shares = [train_edit_layer(tiny_clip, astronaut, tiny_config(iters=20, lambda_protect=w),
                               protect_mask=band).spill.inside_protected_trained for w in (0.0, 1.0)]
    assert shares[1] < 0.75 * shares[0]


def test_exclude_text_protects_its_relevancy_region(tiny_clip, astronaut):
    r = train_edit_layer(tiny_clip, astronaut, tiny_config(iters=3, exclude_text="helmet"))
    assert r.spill.inside_protected < r.spill.inside_protected_trained
    assert "protect" in r.history[0]


def test_protection_enters_the_key_only_when_used(tiny_clip, astronaut):
    base = tiny_config()
    plain = input_fingerprint(astronaut, base, clip=tiny_clip)
    # without a protected region the spill settings change nothing, so keys of earlier runs stay valid
    assert input_fingerprint(astronaut, tiny_config(lambda_protect=5.0), clip=tiny_clip) == plain
    band = torch.zeros(1, 1, 96, 128)
    band[..., :10] = 1.0
    keys = {plain, input_fingerprint(astronaut, base, clip=tiny_clip, protect_mask=band),
            input_fingerprint(astronaut, tiny_config(lambda_protect=5.0), clip=tiny_clip, protect_mask=band),
            input_fingerprint(astronaut, tiny_config(exclude_text="helmet"), clip=tiny_clip)}
    assert len(keys) == 4


def test_atlas_edits_refuse_an_exclusion_text():
    with pytest.raises(ValueError, match="exclude_text"):
        VideoEditConfig.from_flat(prompt="x", exclude_text="the dog").validate()


def test_cli_protect_mask_leaves_the_input_and_names_the_flag(tiny_clip_file, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from t2l_core.cli.main import main

    image, _, right = _eggs()
    src, mask = tmp_path / "eggs.png", tmp_path / "right.png"
    Image.fromarray((image[0].permute(1, 2, 0) * 255).round().byte().numpy()).save(src)
    Image.fromarray(right.byte().numpy() * 255).save(mask)
    args = ["image", str(src), "--prompt", "chocolate eggs", "--clip", str(tiny_clip_file), "--iters", "2",
            "--size", "129", "--views", "2", "--quiet", "--out", str(tmp_path / "out")]
    assert main(args + ["--protect-mask", str(mask), "--exclude-text", "background", "--lambda-protect", "2"]) == 0
    composite = np.asarray(Image.open(tmp_path / "out" / "composite.png"))
    assert np.array_equal(composite[right.numpy()], np.asarray(Image.open(src))[right.numpy()])
    assert "inside the protected region" in capsys.readouterr().out
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
    assert main(args + ["--protect-mask", str(mask)]) == 2
    assert "--protect-mask" in capsys.readouterr().err


@pytest.mark.device
def test_protection_runs_on_the_test_device(device_clip, eggs):
    """Masks given on the CPU, the CLIP on the test device (a GPU on a lent machine): every map meets the
    working image on its device, and the protected pixels are the input's."""
    image, _, right = eggs
    r = train_edit_layer(device_clip, image, tiny_config(iters=2, exclude_text="background"),
                         protect_mask=right.float()[None])
    assert torch.equal(r.output.composite[0][:, right], image[0][:, right])
