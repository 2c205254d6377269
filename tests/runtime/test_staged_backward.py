"""Staged backward (fast path): the same gradients as one backward pass, fewer activations alive.

``EditRuntime.backward`` back-propagates each CLIP pass as soon as it is computed, and regenerates the
whole-image example for its own backward pass (``deferred_output`` / ``backward_deferred``). Only summation order differs from ``total.backward()``, so losses and parameter
gradients agree to float rounding (1e-5 relative here, with CLIP and the generator in float64 so the
rounding does not depend on the CPU), while the largest amount of saved activations
alive at one time is lower.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from _edit_helpers import SMALL_GENERATOR, tiny_config
from t2l_core.edit.objective import StepExamples, TextBanks, opacity_terms, plan_objective
from t2l_core.progress import losses_to_floats
from t2l_core.runtime.edit_runtime import EditRuntime
from t2l_core.runtime.measures import default_measures
from t2l_core.runtime.staged_backward import backward_deferred, deferred_output
from t2l_core.edit.generator import build_generator
from t2l_core.image.internal_dataset import working_image
from t2l_core.seeding import make_generator

TOL = 1e-5


class SavedBytes:
    """Bytes of tensors saved for backward that are still alive; ``peak`` = the most at one time."""

    def __init__(self) -> None:
        self.alive = 0
        self.peak = 0

    def pack(self, t: torch.Tensor):
        tracker = self

        class Held:
            def __init__(self) -> None:
                self.t, self.n = t, t.untyped_storage().nbytes()
                tracker.alive += self.n
                tracker.peak = max(tracker.peak, tracker.alive)

            def __del__(self) -> None:
                tracker.alive -= self.n

        return Held()

    @staticmethod
    def unpack(held) -> torch.Tensor:
        return held.t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


def _step(clip, image, staged: bool, tracker: SavedBytes | None = None):
    """One full-image step (crop + whole image) of the fast path, with or without the staged backward;
    returns its loss terms and gradients."""
    config = tiny_config(roi_text="astronaut")
    measures = dataclasses.replace(default_measures(torch.device("cpu")), staged_backward=staged)
    rt = EditRuntime(clip, fast=True, measures=measures)
    gen = rt.prepare(build_generator(SMALL_GENERATOR, seed=3).double())
    x = working_image(image, config.dataset.size).double()
    inputs = [x[..., :, 2:131].flip(-1).contiguous(), x]  # two examples of different sizes
    banks = TextBanks.build(rt.clip, config.prompt, None, config.source_prompt)
    targets = [torch.rand(1, *i.shape[-2:], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
               for i in inputs]
    with tracker.hooks() if tracker else torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        outs = [rt.generate(x, deferred=i > 0) for i, x in enumerate(inputs)]
        if staged:
            assert not outs[1].requires_grad or outs[1].grad_fn is None  # the whole image: no graph kept
        colors, alphas = [o[:, :3] for o in outs], [o[:, 3:] for o in outs]
        plan = plan_objective(rt.clip, StepExamples(inputs, colors, alphas), banks, config.views, config.weights,
                              make_generator(5))
        rest = opacity_terms(alphas, config.weights, targets, 5.0, False)
        terms = losses_to_floats(rt.backward(plan, rest, alphas[0], lambda: None))
    return terms, {n: p.grad.clone() for n, p in gen.named_parameters()}


def test_staged_backward_gives_the_gradients_of_one_backward_pass(tiny_clip64, astronaut):
    ref_terms, ref_grads = _step(tiny_clip64, astronaut, staged=False)
    terms, grads = _step(tiny_clip64, astronaut, staged=True)
    assert list(terms) == list(ref_terms)  # same terms, same order
    assert {"composition", "directional", "screen", "structure", "sparsity", "bootstrap"} <= set(terms)
    for name in ref_terms:
        assert math.isclose(terms[name], ref_terms[name], rel_tol=TOL, abs_tol=1e-7), name
    largest = max(float(g.abs().max()) for g in ref_grads.values())
    assert largest > 0
    for name, g in ref_grads.items():
        assert float((grads[name] - g).abs().max()) <= TOL * largest, name


def test_staged_backward_keeps_fewer_activations_alive(tiny_clip, astronaut):
    one_pass, staged = SavedBytes(), SavedBytes()
    _step(tiny_clip, astronaut, staged=False, tracker=one_pass)
    _step(tiny_clip, astronaut, staged=True, tracker=staged)
    assert one_pass.alive == 0 and staged.alive == 0  # every saved tensor was released
    # both examples' generator activations and every CLIP pass at once, vs one example and one pass
    assert staged.peak < 0.75 * one_pass.peak, (staged.peak, one_pass.peak)


def test_deferred_output_regenerates_the_same_values():
    gen = build_generator(SMALL_GENERATOR, seed=0)
    x = torch.rand(1, 3, 130, 140, generator=torch.Generator().manual_seed(2))
    leaf = deferred_output(gen, x)
    assert leaf.is_leaf and leaf.requires_grad and leaf.grad_fn is None
    assert torch.equal(leaf.detach(), gen(x).detach())  # BatchNorm uses the input's own statistics
    leaf.sum().backward()
    backward_deferred(gen, [x], [leaf])
    direct = build_generator(SMALL_GENERATOR, seed=0)
    direct(x).sum().backward()
    for (name, p), q in zip(gen.named_parameters(), direct.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-8), name


def test_a_leaf_without_gradient_is_skipped():
    gen = build_generator(SMALL_GENERATOR, seed=0)
    x = torch.rand(1, 3, 130, 130)
    leaf = deferred_output(gen, x)  # the loss did not use it: .grad stays None
    backward_deferred(gen, [x], [leaf])
    assert all(p.grad is None for p in gen.parameters())
