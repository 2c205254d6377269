"""A staged backward pass: the same gradients as one ``total.backward()``, with less memory alive at a time.

Two measures, both of how a step is computed, never what:

* the objective is back-propagated one CLIP pass at a time (:func:`staged_objective_backward`), from the
  pass list and loss assembly of :class:`t2l_core.edit.objective.ObjectivePlan`;
* extra examples (the whole image or atlas) are generated without a graph (:func:`deferred_output`) and
  regenerated for their backward pass (:func:`backward_deferred`), so one example's generator activations
  are kept at a time.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..edit.objective import ObjectivePlan


def staged_objective_backward(clip, plan: ObjectivePlan, opacity_terms: dict[str, torch.Tensor],
                              cancel_point: Callable[[], None] = lambda: None) -> dict[str, torch.Tensor]:
    """Back-propagate the objective (paper eq. 2) one CLIP pass at a time.

    Every CLIP term is a mean over examples of a per-example term, so example e's share is its own term
    divided by n. Each share (the composites' views, the green-screen views, one structure view) is encoded
    from a detached copy of its views and back-propagated to that copy at once, which frees the pass's
    activations before the next one starts. One final backward then carries the view gradients and the
    opacity terms through the augmentations and composites into the caller's graph (the generator).

    Args:
        clip: the CLIP model.
        plan: the step's CLIP work.
        opacity_terms: the opacity terms, with their graph.
        cancel_point: called before each pass; raises to cancel.

    Returns:
        The terms in the order of :func:`t2l_core.edit.objective.clip_terms`, then ``opacity_terms``, all detached.
    """
    n = plan.n
    sums: dict[str, torch.Tensor] = {}
    roots: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    for e in range(n):
        for clip_pass in plan.passes(e):
            cancel_point()
            leaf = clip_pass.views.detach().requires_grad_(clip_pass.views.requires_grad)
            parts = clip_pass.terms(getattr(clip, clip_pass.encoder)(leaf))
            if leaf.requires_grad:
                (sum(parts.values()) / n).backward()
                roots.append(clip_pass.views)
                grads.append(leaf.grad)
            for name, v in parts.items():
                sums[name] = sums.get(name, 0.0) + v.detach() / n
    cancel_point()
    opacity_total = sum(opacity_terms.values())
    if opacity_total.requires_grad:
        roots.append(opacity_total)
        grads.append(torch.ones_like(opacity_total))
    if roots:
        torch.autograd.backward(roots, grads)
    order = ("composition", "directional", "screen", "structure")
    terms = {name: sums[name] for name in order if name in sums}
    terms.update({name: v.detach() for name, v in opacity_terms.items()})
    return terms


def deferred_output(generate: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``generate(x)`` computed without a graph, as a leaf that collects the loss gradient in ``.grad``.

    Pair with :func:`backward_deferred`, which regenerates it with a graph and back-propagates that gradient
    (one more forward pass of the example, none of its activations kept meanwhile).

    Args:
        generate: the generator's forward, [1,3,h,w] -> [1,4,h,w].
        x: [1,3,h,w] in 0..1.

    Returns:
        [1,4,h,w] in 0..1, a leaf that requires grad.
    """
    with torch.no_grad():
        out = generate(x)
    return out.requires_grad_(True)


def backward_deferred(generate: Callable[[torch.Tensor], torch.Tensor], inputs: Sequence[torch.Tensor],
                      outputs: Sequence[torch.Tensor], cancel_point: Callable[[], None] = lambda: None) -> None:
    """Back-propagate each :func:`deferred_output` leaf's ``.grad`` through a fresh ``generate(x)``, one at a time.

    The generator is deterministic for a given input (BatchNorm uses the input's own statistics), so the
    regenerated output equals the leaf and the parameter gradients equal those of a single backward pass.

    Args:
        generate: the generator's forward, as given to :func:`deferred_output`.
        inputs: the examples' inputs, [1,3,h,w] each.
        outputs: their :func:`deferred_output` leaves, in the same order.
        cancel_point: called before each example; raises to cancel.
    """
    for x, leaf in zip(inputs, outputs):
        cancel_point()
        if leaf.grad is not None:
            generate(x).backward(leaf.grad)
