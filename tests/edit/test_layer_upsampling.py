"""The default output resolution: the generator at the working size, the layer upsampled guided by the input.

Checked: opacity 0 stays exactly 0 and the composite equals the input bit for bit there; the upsampled
opacity follows an edge of the full-resolution image better than bilinear upsampling; ``predict`` runs the
generator at the layer's working size by default and at the image's own size with ``resolution="native"``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _edit_helpers import SMALL_GENERATOR
from t2l_core.edit.compositing import composite
from t2l_core.edit.layer import EditLayer
from t2l_core.edit.generator import build_generator
from t2l_core.edit.layer_upsampling import guided_upsample


def _step_scene(h: int = 256, w: int = 256, edge: int = 101):
    """A textured image whose right part (x >= edge) is an object brighter than the background, the ideal
    opacity of an edit of that object, and that opacity at a quarter of the resolution (area average)."""
    g = torch.Generator().manual_seed(0)
    image = 0.25 + 0.05 * torch.rand(1, 3, h, w, generator=g)
    image[..., edge:] += 0.5
    ideal = torch.zeros(1, 1, h, w)
    ideal[..., edge:] = 1.0
    low = F.interpolate(ideal, size=(h // 4, w // 4), mode="area")
    return image, ideal, low


def test_opacity_zero_stays_zero_and_the_composite_keeps_those_pixels_bit_for_bit():
    image, _, low = _step_scene()
    color = torch.rand(1, 3, *low.shape[-2:], generator=torch.Generator().manual_seed(1))
    c, a = guided_upsample(color, low, image)
    assert c.shape == (1, 3, 256, 256) and a.shape == (1, 1, 256, 256)
    assert 0 <= float(a.min()) and float(a.max()) <= 1 and 0 <= float(c.min()) and float(c.max()) <= 1
    zero = a == 0
    bilinear = F.interpolate(low, size=(256, 256), mode="bilinear", align_corners=False)
    assert bool(zero[bilinear == 0].all())  # wherever no working-size pixel nearby has opacity
    assert zero.float().mean() > 0.3
    out = composite(c, a, image)
    assert torch.equal(out[zero.expand_as(out)], image[zero.expand_as(image)])


def test_upsampled_opacity_follows_the_image_edge_better_than_bilinear():
    image, ideal, low = _step_scene()
    _, guided = guided_upsample(torch.zeros(1, 3, *low.shape[-2:]), low, image)
    bilinear = F.interpolate(low, size=ideal.shape[-2:], mode="bilinear", align_corners=False)
    err_guided = float((guided - ideal).abs().mean())
    err_bilinear = float((bilinear - ideal).abs().mean())
    assert err_guided < 0.5 * err_bilinear, (err_guided, err_bilinear)
    soft = lambda a: int(((a > 0.1) & (a < 0.9)).sum())  # noqa: E731  pixels of the transition
    assert soft(guided) < 0.5 * soft(bilinear)


@pytest.fixture(scope="module")
def trained_like():
    """A layer that says it was trained at a 129x172 working size."""
    g = build_generator(SMALL_GENERATOR, seed=1)
    return EditLayer(g.state_dict(), SMALL_GENERATOR, {"working_size": [129, 172], "size": 129}), g


def test_predict_runs_the_generator_at_the_working_size_by_default(trained_like, astronaut):
    layer, g = trained_like
    image = F.interpolate(astronaut, size=(387, 516), mode="bilinear", antialias=True, align_corners=False)
    color, alpha = layer.predict(image)
    assert color.shape == (1, 3, 387, 516) and alpha.shape == (1, 1, 387, 516)
    small = F.interpolate(image, size=(129, 172), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        y = g(small)
    ref_c, ref_a = guided_upsample(y[:, :3], y[:, 3:], image)
    assert torch.allclose(color, ref_c, atol=1e-4) and torch.allclose(alpha, ref_a, atol=1e-4)
    native_c, native_a = layer.predict(image, resolution="native")
    with torch.no_grad():
        direct = g(image)
    # channels-last inference: equal up to float summation order; 1e-3 is a quarter of an 8-bit level
    assert torch.allclose(torch.cat([native_c, native_a], 1), direct, atol=1e-3)
    assert float((native_a - alpha).abs().mean()) > 1e-3  # the two options differ
    # an image no larger than the working size runs at its own size in both modes
    c1, a1 = layer.predict(small)
    c2, a2 = layer.predict(small, resolution="native")
    assert torch.equal(c1, c2) and torch.equal(a1, a2)
    with pytest.raises(ValueError, match="resolution"):
        layer.predict(image, resolution="full")
    from t2l_core.cli.edit_commands import RESOLUTIONS as CLI_RESOLUTIONS
    from t2l_core.edit.layer import RESOLUTIONS

    assert CLI_RESOLUTIONS == RESOLUTIONS


def test_a_fully_transparent_layer_leaves_the_input_bit_for_bit(astronaut):
    g = build_generator(SMALL_GENERATOR, seed=1)
    with torch.no_grad():  # opacity logit -200 everywhere: sigmoid gives exactly 0 in fp32
        g.head.weight[3].zero_()
        g.head.bias[3] = -200.0
    layer = EditLayer(g.state_dict(), SMALL_GENERATOR, {"working_size": [129, 172]})
    image = F.interpolate(astronaut, size=(540, 720), mode="bilinear", antialias=True, align_corners=False)
    out = layer.render(image)
    assert out.composite.shape == image.shape and float(out.alpha.max()) == 0.0
    assert torch.equal(out.composite, image)
