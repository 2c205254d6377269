"""Text sampling, CLIP views and the internal dataset."""

import pytest
import torch

from t2l_core.edit.views import ViewConfig, make_views, resized_shape, structure_view
from t2l_core.image.internal_dataset import DatasetConfig, InternalDataset, working_image
from t2l_core.seeding import make_generator
from t2l_core.edit.text_sampling import sample_directions, sample_targets


def test_random_size_subsets_with_replacement():
    bank = torch.arange(14.0).view(14, 1)
    g = make_generator(0)
    sizes, seen = set(), set()
    for _ in range(300):
        s = sample_targets(bank, g)
        sizes.add(s.shape[0])
        seen.update(int(v) for v in s[:, 0])
        assert 1 <= s.shape[0] <= 14
    assert min(sizes) == 1 and max(sizes) == 14 and len(seen) == 14
    # with replacement: some draw repeats an index
    g = make_generator(1)
    assert any(len(set(sample_targets(bank, g)[:, 0].tolist())) < sample_targets(bank, make_generator(1)).shape[0]
               for _ in range(50))


def test_directional_pairs_use_the_same_index():
    tgt = torch.arange(28.0).view(28, 1)  # 2 prompts x 14 templates
    src = torch.arange(14.0).view(14, 1) + 100
    g = make_generator(0)
    for _ in range(100):
        t, s = sample_directions(tgt, src, g)
        assert t.shape == s.shape and 1 <= t.shape[0] <= 14
        assert torch.equal(s - 100, t)  # same row index, drawn from the first min(N_t, N_s) rows


def test_view_shapes_follow_torchvision_resize():
    assert resized_shape(512, 768, 224, 320) == (213, 320)
    assert resized_shape(512, 768, 224, 380) == (224, 336)
    assert resized_shape(768, 512, 224, 320) == (320, 213)
    assert resized_shape(300, 300, 224, 320) == (224, 224)
    cfg = ViewConfig(n_views=5, short_side=48, max_long=64, structure_max_long=80)
    v = make_views(torch.rand(1, 3, 130, 260), cfg, make_generator(0))
    assert v.shape == (5, 3, 32, 64)
    assert structure_view(torch.rand(1, 3, 130, 260), cfg).shape == (1, 3, 40, 80)


def test_views_are_differentiable_seeded_and_filled():
    cfg = ViewConfig(n_views=8, short_side=48, max_long=64, jitter_p=0.0, grayscale_p=0.0, affine_p=1.0)
    x = torch.zeros(1, 3, 130, 130, requires_grad=True)
    state = torch.get_rng_state()
    v1 = make_views(x, cfg, make_generator(5))
    v2 = make_views(x, cfg, make_generator(5))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(v1, v2)
    v1.sum().backward()
    assert x.grad.abs().sum() > 0
    # black image + rotated/translated views: the corners filled from outside are white (images)
    assert (v1.amax(dim=(1, 2, 3)) > 0.99).all()
    black = make_views(torch.ones(1, 3, 130, 130), ViewConfig(n_views=8, short_side=48, max_long=64, fill=0.0,
                                                               affine_p=1.0, jitter_p=0.0), make_generator(5))
    assert (black.amin(dim=(1, 2, 3)) < 0.01).all()  # video fill is black


def test_working_image_and_errors():
    img = torch.rand(1, 3, 96, 128)
    w = working_image(img, 129)
    assert w.shape == (1, 3, 129, 172)
    with pytest.raises(ValueError, match="at least 32 px"):
        working_image(torch.rand(1, 3, 20, 300), 512)
    with pytest.raises(ValueError, match="size >= 129"):
        working_image(img, 100)


def test_dataset_crops_full_image_steps_and_mask_geometry():
    img = torch.rand(1, 3, 200, 260)
    mask = img[:, :1].clone()  # a mask equal to the red channel must stay aligned with the crop
    ds = InternalDataset(img, DatasetConfig(jitter_p=0.0), mask=mask)
    g = make_generator(0)
    for step in range(0, 151, 25):
        s = ds.sample(step, g)
        h, w = s.crop.shape[-2:]
        assert 129 <= h <= int(200 * 1.2) and 129 <= w <= int(260 * 1.2)
        assert torch.allclose(s.crop_mask, s.crop[:, :1], atol=1e-5)
        assert (s.full is not None) == (step % 75 == 0)
        assert len(s.examples()) == (2 if step % 75 == 0 else 1)
    with pytest.raises(ValueError, match="mask size"):
        InternalDataset(img, mask=torch.rand(1, 1, 10, 10))


def test_working_image_long_side_is_truncated_like_torchvision_resize():
    from t2l_core.image.internal_dataset import short_side_size

    assert short_side_size(300, 451, 512) == (512, 769)  # 512 * 451 / 300 = 769.7 -> 769 (not 770)
    assert short_side_size(451, 300, 512) == (769, 512)
    assert short_side_size(300, 300, 512) == (512, 512)
    assert working_image(torch.rand(1, 3, 300, 451), 512).shape == (1, 3, 512, 769)


def test_colour_jitter_sees_the_whole_image_before_flip_scale_and_crop():
    """The jitter here subtracts the mean of what it is given (as contrast jitter blends with the mean): the
    crop must be shifted by the WHOLE image's mean, not by the crop's own."""
    g = torch.Generator().manual_seed(0)
    img = 0.35 + 0.1 * torch.rand(1, 3, 140, 300, generator=g)
    img[..., 150:] += 0.2  # the right half is brighter: a crop's mean differs from the image's
    cfg = DatasetConfig(jitter_p=1.0, flip_p=0.5, crop_min=0.6)
    seen = []

    def mean_shift(x):
        seen.append(tuple(x.shape))
        return x - x.mean() + 0.5

    plain = InternalDataset(img, cfg)
    plain.jitter = lambda x: x
    shifted = InternalDataset(img, cfg)
    shifted.jitter = mean_shift
    offsets = []
    for step in range(1, 6):
        a, b = plain.sample(step, make_generator(step)), shifted.sample(step, make_generator(step))
        assert a.crop.shape == b.crop.shape
        assert torch.allclose(b.crop, a.crop - img.mean() + 0.5, atol=1e-5)
        offsets.append(float((a.crop.mean() - img.mean()).abs()))
    assert max(offsets) > 5e-3  # a crop's own mean differs: jittering crops would shift them differently
    assert set(seen) == {(1, 3, 140, 300)}
