"""Each loss term against values computed by hand on small tensors."""

import math

import pytest
import torch

from t2l_core.edit import losses as L
from t2l_core.edit.compositing import GREEN, composite, on_green_screen, parse_hex_color
from t2l_core.edit.config import OptimConfig


def test_spherical_distance_by_hand():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([[0.0, 1.0], [2.0, 0.0], [-1.0, -1.0]])
    d = L.spherical_distance(x, y)
    # orthogonal: |x̂-ŷ| = √2 -> 2·asin(√2/2)² = 2·(π/4)²; parallel -> 0; opposite: 2·asin(1)² = 2·(π/2)²
    assert torch.allclose(d, torch.tensor([2 * (math.pi / 4) ** 2, 0.0, 2 * (math.pi / 2) ** 2]), atol=5e-3)  # asin is ill-conditioned at 1


def test_composition_and_screen_losses_average_views_and_texts():
    views = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # E=1, V=2
    texts = torch.tensor([[1.0, 0.0], [0.0, -1.0]])  # T=2
    # pairs: (v0,t0)=0, (v0,t1)=orthogonal, (v1,t0)=orthogonal, (v1,t1)=opposite
    o, p = 2 * (math.pi / 4) ** 2, 2 * (math.pi / 2) ** 2
    expect = (0 + o + o + p) / 4
    assert L.composition_loss(views, texts).item() == pytest.approx(expect, rel=1e-5)
    assert L.green_screen_loss(views, texts, weight=3.0).item() == pytest.approx(3 * expect, rel=1e-5)


def test_directional_loss_by_hand():
    inp = torch.zeros(1, 1, 2)
    out = torch.tensor([[[1.0, 0.0]]])
    src = torch.zeros(3, 2)
    tgt = torch.tensor([[5.0, 0.0], [0.0, 1.0], [-2.0, 0.0]])  # cos = 1, 0, -1 -> 1 - cos = 0, 1, 2
    assert L.directional_loss(out, inp, tgt, src).item() == pytest.approx(1.0, abs=1e-6)
    assert L.directional_loss(out, inp, tgt[:1], src[:1]).item() == pytest.approx(0.0, abs=1e-6)
    # text direction is target - source on raw embeddings
    assert L.directional_loss(out, inp, torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 1.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_self_similarity_and_structure_loss_by_hand():
    t = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    s = L.self_similarity(t)
    r = 1 / math.sqrt(2)
    expect = torch.tensor([[[1, 0, r], [0, 1, r], [r, r, 1]]])
    assert torch.allclose(s, expect, atol=1e-6)
    assert L.structure_loss(t, t.clone()).item() == 0.0
    t2 = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]]])  # S = [[1,1,r],[1,1,r],[r,r,1]]
    # squared differences: two entries (0,1),(1,0) differ by 1, (1,2),(2,1) equal -> 2/9; weight 2
    assert L.structure_loss(t2, t).item() == pytest.approx(2 * 2 / 9, rel=1e-5)
    # list form (differently sized token sets) averages examples
    assert L.structure_loss([t2, t], [t, t], weight=1.0).item() == pytest.approx((2 / 9 + 0) / 2, rel=1e-5)


def test_structure_source_is_a_constant_target():
    a = torch.randn(1, 5, 4, requires_grad=True)
    b = torch.randn(1, 5, 4, requires_grad=True)
    L.structure_loss(a, b).backward()
    assert a.grad is not None and b.grad is None


def test_sparsity_by_hand():
    a0 = torch.zeros(1, 1, 4, 4)
    a1 = torch.ones(1, 1, 4, 4)
    assert L.sparsity_loss(a0).item() == 0.0
    l0 = 2 * (1 / (1 + math.exp(-5)) - 0.5)
    assert L.sparsity_loss(a1).item() == pytest.approx(0.06 + 0.06 * l0, rel=1e-6)
    half = torch.full((1, 1, 2, 2), 0.5)
    expect = 0.01 * 0.5 + 0.02 * 2 * (1 / (1 + math.exp(-2.5)) - 0.5)
    assert L.sparsity_loss(half, l1_weight=0.01, l0_weight=0.02).item() == pytest.approx(expect, rel=1e-6)
    assert L.sparsity_loss([a0, a1]).item() == pytest.approx((0.06 + 0.06 * l0) / 2, rel=1e-6)


def test_bootstrap_loss_counts_every_example():
    a1 = torch.full((1, 1, 10, 12), 0.2)
    a2 = torch.full((1, 1, 30, 20), 0.9)
    r1 = torch.full((1, 50, 50), 0.6)  # (0.2-0.6)^2 = 0.16
    r2 = torch.full((1, 7, 7), 0.4)  # (0.9-0.4)^2 = 0.25
    both = L.bootstrap_loss([a1, a2], [r1, r2], weight=2.0)
    assert both.item() == pytest.approx(2.0 * (0.16 + 0.25) / 2, rel=1e-5)
    bug = L.bootstrap_loss([a1, a2], [r1, r2], weight=2.0, authors_last_only=True)
    assert bug.item() == pytest.approx(2.0 * 0.25 / 2, rel=1e-5)


def test_bootstrap_weight_schedules():
    def weight(step, schedule="linear", min_weight=0.0):
        return L.bootstrap_weight(step, lambda_bootstrap=10.0, bootstrap_steps=1000, schedule=schedule,
                                  min_weight=min_weight)

    assert weight(0) == pytest.approx(9.99)
    assert weight(499) == pytest.approx(5.0)
    assert weight(999) == 0.0
    assert weight(1500) == 0.0
    assert weight(9, schedule="exponential") == pytest.approx(10 * 0.99**10)
    assert weight(9, schedule="none") == 10.0
    assert weight(998, min_weight=0.5) == 0.5
    with pytest.raises(ValueError, match="schedule"):
        weight(0, schedule="cosine")


def test_lr_reaches_floor_at_expected_step():
    # 2.5e-3 · 0.99^n <= 1e-5  <=>  n >= ln(250)/-ln(0.99) = 549.4
    n = math.ceil(math.log(250) / -math.log(0.99))
    assert n == 550
    optim = OptimConfig()  # the paper's schedule: 2.5e-3, x0.99 a step, floor 1e-5
    assert optim.lr_at(n - 1) > 1e-5
    assert optim.lr_at(n) == 1e-5 and optim.lr_at(999) == 1e-5


def test_composite_formula_and_green_screen():
    c = torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    i = torch.tensor([1.0, 0.0, 0.5]).view(1, 3, 1, 1).expand(2, 3, 2, 2)  # batch of 2 broadcasts with 1
    a = torch.tensor([[0.0, 0.25], [0.5, 1.0]]).view(1, 1, 2, 2)
    out = composite(c, a, i)
    assert out.shape == (2, 3, 2, 2)
    assert torch.allclose(out[1, :, 0, 1], 0.25 * torch.tensor([0.2, 0.4, 0.6]) + 0.75 * torch.tensor([1.0, 0.0, 0.5]))
    g = on_green_screen(c, a)
    assert torch.allclose(g[0, :, 0, 0], torch.tensor(GREEN))
    assert GREEN == pytest.approx((0.0, 177 / 255, 64 / 255))
    with pytest.raises(ValueError, match="same height and width"):
        composite(c, a, torch.zeros(1, 3, 3, 3))
    assert parse_hex_color("#00B140") == pytest.approx(GREEN)
    with pytest.raises(ValueError, match="RRGGBB"):
        parse_hex_color("green")
