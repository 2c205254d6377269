import math

import pytest
import torch

from t2l_core.edit.generator import (MIN_SIZE, GeneratorConfig, SkipGenerator, build_generator, decorrelation_matrix,
                                count_parameters)

from _edit_helpers import SMALL_GENERATOR


def test_default_parameter_count():
    assert count_parameters(SkipGenerator()) == 3_115_548


def test_default_generator_same_size_output_in_unit_range():
    g = build_generator(seed=0)
    y = g(torch.rand(1, 3, 129, 131))
    assert y.shape == (1, 4, 129, 131)
    assert 0.0 <= y.min() and y.max() <= 1.0


@pytest.mark.parametrize("size", [(129, 129), (131, 173), (200, 129), (257, 255)])
def test_odd_sizes_keep_their_size(size):
    g = build_generator(SMALL_GENERATOR, seed=0)
    assert g(torch.rand(1, 3, *size)).shape == (1, 4, *size)


def test_too_small_input_is_refused_with_a_clear_message():
    g = build_generator(SMALL_GENERATOR, seed=0)
    with pytest.raises(ValueError, match="at least 129 px"):
        g(torch.rand(1, 3, 128, 300))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        g(torch.rand(1, 4, 200, 200))
    assert MIN_SIZE == 129


def test_batchnorm_uses_batch_statistics_in_eval_mode_too():
    g = build_generator(SMALL_GENERATOR, seed=0)
    x = torch.rand(1, 3, 140, 150)
    a = g.train()(x)
    b = g.eval()(x)
    assert torch.equal(a, b)
    assert all(not m.track_running_stats for m in g.norm_layers())
    # a constant brightness shift of the input is largely normalised away by per-image statistics
    assert (g(x) - g(x * 0.5 + 0.25)).abs().mean() < (x - (x * 0.5 + 0.25)).abs().mean()


def test_head_applies_decorrelation_then_sigmoid_on_all_channels():
    g = build_generator(SMALL_GENERATOR, seed=0)
    with torch.no_grad():
        g.head.weight.zero_()
        g.head.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    y = g(torch.rand(1, 3, 130, 130))
    m = decorrelation_matrix().tolist()
    expect_rgb = [1 / (1 + math.exp(-(m[c][0] * 1 + m[c][1] * 2 + m[c][2] * 3))) for c in range(3)]
    for c in range(3):
        assert torch.allclose(y[0, c], torch.full((130, 130), expect_rgb[c]), atol=1e-6)
    assert torch.allclose(y[0, 3], torch.full((130, 130), 1 / (1 + math.exp(-4.0))), atol=1e-6)


def test_decorrelation_matrix_is_the_authors_exact_one():
    """Computed from the SVD square root as the authors do, not rounded: hand-computed float64 values."""
    base = [[0.26 / 1.6, 0.09, 0.02], [0.27 / 1.6, 0.00, -0.05], [0.27 / 1.6, -0.09, 0.03]]
    norm = max(math.sqrt(sum(base[r][c] ** 2 for r in range(3))) for c in range(3))  # largest column norm
    exact = torch.tensor([[v / norm for v in row] for row in base], dtype=torch.float64)
    m = decorrelation_matrix()
    assert m.dtype == torch.float32 and float((m.double() - exact).abs().max()) < 1e-7  # fp32 rounding only
    assert float((m.double() - exact).abs().max()) < float((exact - (exact * 1e4).round() / 1e4).abs().max())
    assert torch.equal(build_generator(SMALL_GENERATOR, seed=0).decorrelation, m)


def test_seeded_construction_is_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = build_generator(SMALL_GENERATOR, seed=3), build_generator(SMALL_GENERATOR, seed=3)
    c = build_generator(SMALL_GENERATOR, seed=4)
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_config_roundtrip():
    cfg = GeneratorConfig(channels_down=8, channels_up=8)
    assert GeneratorConfig(**cfg.to_dict()) == cfg
