"""Activation checkpointing (EditConfig.save_memory) computes exactly what the fast path computes.

Recomputing CLIP block and full-resolution generator activations in the backward pass repeats the same
operations on the same values, so losses and gradients must agree to float rounding (here: 1e-5 relative,
CLIP and generator in float64).
"""

from __future__ import annotations

import math

import torch

from _edit_helpers import SMALL_GENERATOR, tiny_config
from t2l_core.edit.objective import StepExamples, TextBanks, edit_objective
from t2l_core.runtime.edit_runtime import EditRuntime
from t2l_core.edit.generator import build_generator
from t2l_core.image.internal_dataset import working_image
from t2l_core.seeding import make_generator
from t2l_core.image.training import input_fingerprint

TOL = 1e-5


def _losses_and_grads(clip, image, save_memory: bool):
    config = tiny_config(roi_text="astronaut")
    rt = EditRuntime(clip, fast=True, save_memory=save_memory)
    assert rt.clip.grad_checkpointing is save_memory
    gen = rt.prepare(build_generator(SMALL_GENERATOR, seed=3).double())
    assert gen.recompute_top is save_memory
    generate = rt.forward
    x = working_image(image, config.dataset.size).double()
    crop = x[..., :, 2:131].flip(-1).contiguous()  # two examples of different sizes, as on a full-image step
    inputs = [crop, x]
    outs = [generate(i) for i in inputs]
    banks = TextBanks.build(rt.clip, config.prompt, None, config.source_prompt)
    targets = [torch.rand(1, *i.shape[-2:], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
               for i in inputs]
    examples = StepExamples(inputs, [o[:, :3] for o in outs], [o[:, 3:] for o in outs], bootstrap_targets=targets)
    total, terms = edit_objective(rt.clip, examples, banks, config.views, config.weights, make_generator(5),
                                  bootstrap_weight=5.0)
    total.backward()
    return terms, {n: p.grad.clone() for n, p in gen.named_parameters()}


def test_checkpointed_path_gives_the_same_losses_and_gradients(tiny_clip64, astronaut):
    plain_terms, plain_grads = _losses_and_grads(tiny_clip64, astronaut, save_memory=False)
    terms, grads = _losses_and_grads(tiny_clip64, astronaut, save_memory=True)
    assert set(terms) == set(plain_terms) and {"structure", "directional", "screen", "bootstrap"} <= set(terms)
    for name in plain_terms:
        assert math.isclose(terms[name], plain_terms[name], rel_tol=TOL, abs_tol=1e-7), name
    assert set(grads) == set(plain_grads)
    largest = max(float(g.abs().max()) for g in plain_grads.values())
    assert largest > 0  # the gradients are not trivially zero
    for name, g in plain_grads.items():
        assert float((grads[name] - g).abs().max()) <= TOL * largest, name


def test_no_recomputation_without_gradients_or_on_the_plain_path(tiny_clip):
    rt = EditRuntime(tiny_clip, fast=False, save_memory=True)
    assert rt.save_memory is False and rt.clip is tiny_clip  # the plain fp32 reference path stays as it is
    gen = build_generator(SMALL_GENERATOR, seed=0)
    gen.set_recompute(top=True)
    x = torch.rand(1, 3, 129, 129)
    with torch.no_grad():
        a = gen(x)
    gen.set_recompute(top=False)
    with torch.no_grad():
        b = gen(x)
    assert torch.equal(a, b)


def test_save_memory_is_not_part_of_the_checkpoint_key(astronaut):
    a, b = tiny_config(save_memory=True), tiny_config(save_memory=False)
    assert input_fingerprint(astronaut, a) == input_fingerprint(astronaut, b)


def _output_and_grads(gen, x):
    out = gen(x)
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in gen.named_parameters()}


def test_recomputed_tails_give_the_same_output_and_gradients():
    """Fast path default: the layers after each 3×3 convolution are recomputed in the backward pass."""
    x = torch.rand(1, 3, 131, 150, generator=torch.Generator().manual_seed(4))
    plain = build_generator(SMALL_GENERATOR, seed=2)
    lean = build_generator(SMALL_GENERATOR, seed=2)
    lean.set_recompute(tails=True)
    assert lean.recompute_tails and not plain.recompute_tails and len(lean.levels()) == SMALL_GENERATOR.num_scales
    ref, ref_grads = _output_and_grads(plain, x)
    out, grads = _output_and_grads(lean, x)
    assert torch.equal(out, ref)
    for name, g in ref_grads.items():
        assert torch.allclose(grads[name], g, rtol=1e-5, atol=1e-9), name


def test_which_path_recomputes_what(tiny_clip):
    """Fast: generator tails. save_memory: also the view augmentations. Plain: nothing."""
    fast, plain = EditRuntime(tiny_clip, fast=True), EditRuntime(tiny_clip, fast=False)
    lean = EditRuntime(tiny_clip, fast=True, save_memory=True)
    views = tiny_config().views
    assert lean.augmenter(views).recompute
    assert not fast.augmenter(views).recompute and not plain.augmenter(views).recompute
    assert fast.prepare(build_generator(SMALL_GENERATOR, seed=0)).recompute_tails
    assert lean.prepare(build_generator(SMALL_GENERATOR, seed=0)).recompute_tails
    assert not plain.prepare(build_generator(SMALL_GENERATOR, seed=0)).recompute_tails


def test_recomputed_view_augmentations_draw_the_same_views_and_gradients():
    """The augmentations are redone in the backward pass with the same random parameters (RNG restored)."""
    from t2l_core.edit.views import ViewAugmenter, make_views

    cfg = tiny_config().views
    image = torch.rand(1, 3, 70, 90, generator=torch.Generator().manual_seed(6))
    weight = torch.rand(cfg.n_views, 3, *make_views(image, cfg, make_generator(0)).shape[-2:])
    results = []
    for recompute in (False, True):
        x = image.clone().requires_grad_(True)
        v = make_views(x, cfg, make_generator(9), ViewAugmenter(cfg, recompute=recompute))
        (v * weight).sum().backward()
        results.append((v.detach(), x.grad))
    (v0, g0), (v1, g1) = results
    assert torch.equal(v0, v1)
    assert float(g0.abs().max()) > 0 and torch.allclose(g0, g1, rtol=1e-5, atol=1e-7)
