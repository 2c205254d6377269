"""How far a precision setting moves the generator's gradients from the fp32 ones.

A faster precision is only worth having if training follows the same path: the gradient of the edit
objective with respect to the generator's weights must point the same way as in fp32. Two measures on one
step (same weights, input, views and seed):

* ``cosine``: cosine between the whole flattened gradients;
* ``min_tensor_cosine``: the smallest cosine over the weight tensors whose fp32 gradient is not negligible
  (norm at least ``1e-4`` of the largest tensor's). The biases of convolutions that feed a BatchNorm have a
  zero true gradient (the normalisation removes them), so their computed gradient is rounding noise in any
  precision and is left out.

:data:`AGREEMENT_BOUND` is what a default must reach. For scale: in fp32, another draw of the CLIP views
(a different seed) gives a whole-gradient cosine of about 0.2-0.8, so a setting at 0.99 changes the
direction by much less than the sampling of a step does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..edit.generator import GeneratorConfig, build_generator
from ..edit.objective import StepExamples, TextBanks, edit_objective
from ..seeding import make_generator
from .edit_runtime import EditRuntime

AGREEMENT_BOUND = {"cosine": 0.99, "min_tensor_cosine": 0.95}
NEGLIGIBLE = 1e-4  # tensors with a gradient norm below this share of the largest are rounding noise


@dataclass
class Agreement:
    """How far one precision's gradients are from the fp32 ones (cosines in -1..1)."""

    mode: str
    cosine: float
    min_tensor_cosine: float

    def passes(self) -> bool:
        """Whether both cosines reach :data:`AGREEMENT_BOUND`."""
        return (self.cosine >= AGREEMENT_BOUND["cosine"]
                and self.min_tensor_cosine >= AGREEMENT_BOUND["min_tensor_cosine"])


def generator_gradients(clip, image: torch.Tensor, config, mode: str, generator: GeneratorConfig,
                        weights_seed: int = 0, views_seed: int = 0) -> dict[str, torch.Tensor]:
    """Gradients of one step of the edit objective w.r.t. a freshly initialised generator's weights.

    Args:
        clip: the loaded CLIP.
        image: [1,3,H,W] in 0..1, both sides at least 129 px.
        config: an :class:`~t2l_core.edit.config.EditConfig` (prompts, views, weights).
        mode: one of :data:`t2l_core.device.AUTOCAST_MODES` (fast path).
        generator: the generator's architecture.
        weights_seed: seed of the generator's initial weights.
        views_seed: seed of the step's texts and views.

    Returns:
        ``{parameter name: gradient}``, fp32 on the CPU.
    """
    rt = EditRuntime(clip, fast=True, autocast_mode=mode)
    gen = rt.prepare(build_generator(generator, device=clip.device, seed=weights_seed))
    x = image.to(clip.device)
    with rt.loop_scope():
        out = rt.forward(x)
        banks = TextBanks.build(rt.clip, config.prompt, config.screen_prompt, config.directional_source())
        total, _ = edit_objective(rt.clip, StepExamples([x], [out[:, :3]], [out[:, 3:]]), banks, config.views,
                                  config.weights, make_generator(views_seed))
        total.backward()
    return {n: p.grad.detach().float().cpu().clone() for n, p in gen.named_parameters()}


def agreement(mode: str, grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> Agreement:
    """Compare gradients with the fp32 ones.

    Args:
        mode: the precision the gradients come from.
        grads: ``{parameter name: gradient}``.
        ref: the fp32 gradients, same names.

    Returns:
        The whole-gradient cosine and the smallest per-tensor cosine.
    """
    flat = torch.cat([grads[n].flatten() for n in ref]).double()  # float64: no rounding above 1 on 3M entries
    flat_ref = torch.cat([ref[n].flatten() for n in ref]).double()
    largest = max(float(g.norm()) for g in ref.values())
    tensor_cos = [F.cosine_similarity(grads[n].flatten().double(), g.flatten().double(), dim=0).item()
                  for n, g in ref.items() if float(g.norm()) >= NEGLIGIBLE * largest]
    return Agreement(mode, F.cosine_similarity(flat, flat_ref, dim=0).item(), min(tensor_cos))
