"""The Text2LIVE objective for one training step over a set of (input, colour, opacity) examples.

Shared by image editing (examples = augmented crop [+ full image]) and video editing (examples = atlas
crops). CLIP work is batched: all output views (composites and green-screen renders) of a step go through
one ``encode_image`` call per view size with gradients, all input views and structure targets through
no-grad calls, so a step costs few CLIP forwards.

Total (method notes 1.6):
    L = λ_comp·(L_comp + L_dir) + λ_screen·L_screen + λ_struct·L_struct + L_sparsity + λ_b(t)·L_boot
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch

from . import losses as L
from .views import ViewAugmenter, ViewConfig, make_views, structure_view
from .compositing import composite, on_green_screen
from ..progress import losses_to_floats
from ..settings import setting
from ..clip.templates import COMPOSITION_TEMPLATES, SCREEN_TEMPLATES, as_prompt_list
from .text_sampling import sample_directions, sample_targets


@dataclass
class LossWeights:
    """Loss weights (image defaults; the video ones are in :class:`t2l_core.video.config.VideoEditConfig`)."""

    composition: float = setting(1.0, "Weight of the CLIP loss on the composite (+ directional loss).", min=0.0,
                                 max=100.0)
    screen: float = setting(1.0, "Weight of the green-screen CLIP loss.", min=0.0, max=100.0)
    structure: float = setting(2.0, "Weight of the structure (self-similarity) loss; higher keeps the layout.",
                               min=0.0, max=100.0)
    sparsity_l1: float = setting(0.06, "L1 opacity penalty; higher = smaller edit area.", min=0.0, max=100.0)
    sparsity_l0: float = setting(0.06, "Approximate-L0 opacity penalty; higher = smaller edit area.", min=0.0,
                                 max=100.0)
    bootstrap: float = setting(10.0, "Initial weight of the bootstrap (relevancy/mask) loss, annealed to 0.",
                               min=0.0, max=1000.0)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TextBanks:
    """Template-expanded text embeddings ``[N,D]`` (prompt-major). ``source`` None disables L_dir."""

    composition: torch.Tensor
    screen: torch.Tensor
    source: Optional[torch.Tensor] = None

    @classmethod
    def build(cls, clip, prompt: str | Sequence[str], screen_prompt: str | Sequence[str] | None = None,
              source_prompt: str | Sequence[str] | None = None) -> "TextBanks":
        """Encode the banks once. ``screen_prompt`` defaults to ``prompt``; empty ``source_prompt`` = none."""
        comp = as_prompt_list(prompt, "target prompt")
        screen = as_prompt_list(screen_prompt, "green-screen prompt") if _given(screen_prompt) else comp
        source = as_prompt_list(source_prompt, "source prompt") if _given(source_prompt) else None
        return cls(
            composition=clip.text_bank(comp, COMPOSITION_TEMPLATES),
            screen=clip.text_bank(screen, SCREEN_TEMPLATES),
            source=clip.text_bank(source, COMPOSITION_TEMPLATES) if source else None,
        )


def _given(p) -> bool:
    if p is None:
        return False
    if isinstance(p, str):
        return bool(p.strip())
    return any(s and s.strip() for s in p)


def encode_grouped(fn: Callable[[torch.Tensor], torch.Tensor], batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Apply ``fn`` once per distinct spatial size to the concatenation of ``batches``; split back."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, b in enumerate(batches):
        groups.setdefault(tuple(b.shape[-2:]), []).append(i)
    out: list[Optional[torch.Tensor]] = [None] * len(batches)
    for idx in groups.values():
        res = fn(torch.cat([batches[i] for i in idx], dim=0))
        for i, part in zip(idx, res.split([batches[i].shape[0] for i in idx], dim=0)):
            out[i] = part
    return out  # type: ignore[return-value]


def _noop() -> None:
    pass


def edit_objective(clip, inputs: Sequence[torch.Tensor], colors: Sequence[torch.Tensor],
                   alphas: Sequence[torch.Tensor], banks: TextBanks, views: ViewConfig,
                   weights: LossWeights, generator: torch.Generator, *,
                   bootstrap_targets: Optional[Sequence[torch.Tensor]] = None, bootstrap_weight: float = 0.0,
                   source_tokens: Optional[Sequence[Optional[torch.Tensor]]] = None,
                   augmenter: Optional[ViewAugmenter] = None, authors_bootstrap_bug: bool = False,
                   cancel_point: Callable[[], None] = _noop,
                   composites: Optional[Sequence[Optional[torch.Tensor]]] = None,
                   screens: Optional[Sequence[Optional[torch.Tensor]]] = None,
                   staged_backward: bool = False,
                   defer_report: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its weighted terms for examples ``inputs[e]`` ``[1,3,h,w]`` with generator outputs
    ``colors[e]`` ``[1,3,h,w]`` and ``alphas[e]`` ``[1,1,h,w]`` (all 0..1).

    ``composites[e]`` / ``screens[e]`` ``[1,3,h,w]`` optionally replace the composite α·C + (1−α)·I and the
    green-screen render of example e (video: maps rendered in the atlas and sampled into a frame); None
    entries are computed as usual.
    ``bootstrap_targets[e]`` ``[1,h',w']`` maps in 0..1 (relevancy or user mask), used when
    ``bootstrap_weight`` > 0. ``source_tokens[e]`` optionally supplies cached structure targets.

    ``staged_backward``: back-propagate here, CLIP pass by CLIP pass (see :func:`_staged_backward`): the
    gradients that ``total.backward()`` would give reach the same tensors (up to float summation order),
    while only one CLIP pass keeps activations at a time. The returned ``total`` is then detached and the
    caller must not call ``backward`` on it.
    Returns ``(total, terms)``; ``terms`` holds each weighted term and ``total`` as floats. With
    ``defer_report`` they stay detached 0-dim tensors on the device, for the caller to convert with
    :func:`t2l_core.progress.losses_to_floats` after the backward pass (no host-device wait inside the step).
    """
    plan = _plan(clip, inputs, colors, alphas, banks, views, weights, generator, source_tokens=source_tokens,
                 augmenter=augmenter, cancel_point=cancel_point, composites=composites, screens=screens)
    rest = _opacity_terms(alphas, weights, bootstrap_targets, bootstrap_weight, authors_bootstrap_bug)
    if staged_backward:
        terms = _staged_backward(clip, plan, rest, cancel_point)
    else:
        terms = _clip_terms(clip, plan, cancel_point)
        terms.update(rest)
    total = sum(terms.values(), alphas[0].new_zeros(()))
    report = {name: v.detach() for name, v in terms.items()}
    report["total"] = total.detach()
    return (total.detach() if staged_backward else total), (report if defer_report else losses_to_floats(report))


@dataclass
class _Plan:
    """One step's CLIP work, randomness already drawn: view batches (with graph) and their loss targets."""

    n: int
    comps: list[torch.Tensor]
    comp_views: list[torch.Tensor]  # per example [V,3,h,w], empty when the composition loss is off
    screen_views: list[torch.Tensor]
    in_emb: list[torch.Tensor]  # per example [V,D] (no grad), empty when the directional loss is off
    src_tok: list[torch.Tensor]  # per example structure targets, empty when the structure loss is off
    comp_text: Optional[torch.Tensor]
    dir_text: Optional[tuple[torch.Tensor, torch.Tensor]]
    screen_text: Optional[torch.Tensor]
    weights: LossWeights
    views: ViewConfig


def _plan(clip, inputs, colors, alphas, banks: TextBanks, views: ViewConfig, weights: LossWeights,
          generator: torch.Generator, *, source_tokens, augmenter, cancel_point, composites, screens) -> _Plan:
    """Draw the step's randomness in a fixed order and build every view; encode the no-grad inputs."""
    n = len(inputs)
    if not (len(colors) == len(alphas) == n) or n == 0:
        raise ValueError(f"edit_objective: {n} inputs, {len(colors)} colours, {len(alphas)} alphas")
    augmenter = augmenter or ViewAugmenter(views)
    given_comp = list(composites) if composites is not None else [None] * n
    given_screen = list(screens) if screens is not None else [None] * n
    comps = [g if g is not None else composite(c, a, x.to(c)) for g, x, c, a in zip(given_comp, inputs, colors, alphas)]
    use_comp = weights.composition > 0
    use_dir = use_comp and banks.source is not None
    use_screen = weights.screen > 0
    use_struct = weights.structure > 0

    # Text sampling first, in a fixed order (reproducibility).
    comp_text = sample_targets(banks.composition, generator) if use_comp else None
    dir_text = sample_directions(banks.composition, banks.source, generator) if use_dir else None
    screen_text = sample_targets(banks.screen, generator) if use_screen else None

    # Views of every output (with grad) and of every input (no grad).
    comp_views = [make_views(c, views, generator, augmenter) for c in comps] if use_comp else []
    screen_views = ([make_views(g if g is not None else on_green_screen(c, a), views, generator, augmenter)
                     for g, c, a in zip(given_screen, colors, alphas)] if use_screen else [])
    in_batches = [make_views(x, views, generator, augmenter) for x in inputs] if use_dir else []

    cancel_point()
    with torch.no_grad():
        in_emb = encode_grouped(clip.encode_image, in_batches) if in_batches else []
        src_tok: list[torch.Tensor] = []
        if use_struct:
            cached = list(source_tokens) if source_tokens is not None else [None] * n
            todo = [i for i in range(n) if cached[i] is None]
            fresh = encode_grouped(clip.image_tokens, [structure_view(inputs[i], views) for i in todo]) if todo else []
            for i, t in zip(todo, fresh):
                cached[i] = t
            src_tok = cached  # type: ignore[assignment]
    cancel_point()
    return _Plan(n, comps, comp_views, screen_views, in_emb, src_tok, comp_text, dir_text, screen_text, weights,
                 views)


def _opacity_terms(alphas, weights: LossWeights, bootstrap_targets, bootstrap_weight: float,
                   authors_bootstrap_bug: bool) -> dict[str, torch.Tensor]:
    """The terms computed on α alone: sparsity, and bootstrapping when its weight is positive."""
    terms = {"sparsity": L.sparsity_loss(list(alphas), l1_weight=weights.sparsity_l1, l0_weight=weights.sparsity_l0)}
    if bootstrap_weight > 0 and bootstrap_targets is not None:
        terms["bootstrap"] = L.bootstrap_loss(list(alphas), list(bootstrap_targets), weight=bootstrap_weight,
                                              authors_last_only=authors_bootstrap_bug)
    return terms


def _clip_terms(clip, plan: _Plan, cancel_point: Callable[[], None]) -> dict[str, torch.Tensor]:
    """The CLIP terms with one graph: every output view of a size in one ``encode_image`` call."""
    n, w = plan.n, plan.weights
    out_emb = encode_grouped(clip.encode_image, plan.comp_views + plan.screen_views)
    cancel_point()
    out_tok = encode_grouped(clip.image_tokens, [structure_view(c, plan.views) for c in plan.comps]) if plan.src_tok else []
    cancel_point()
    terms: dict[str, torch.Tensor] = {}
    k = 0
    if plan.comp_views:
        comp_emb = torch.stack(out_emb[:n]).float()
        k = n
        terms["composition"] = L.composition_loss(comp_emb, plan.comp_text.float(), weight=w.composition)
        if plan.dir_text is not None:
            terms["directional"] = L.directional_loss(comp_emb, torch.stack(plan.in_emb).float(),
                                                      plan.dir_text[0].float(), plan.dir_text[1].float(),
                                                      weight=w.composition)
    if plan.screen_views:
        terms["screen"] = L.green_screen_loss(torch.stack(out_emb[k:k + n]).float(), plan.screen_text.float(),
                                              weight=w.screen)
    if plan.src_tok:
        terms["structure"] = L.structure_loss([t.float() for t in out_tok], [t.float() for t in plan.src_tok],
                                              weight=w.structure)
    return terms


def _staged_backward(clip, plan: _Plan, rest: dict[str, torch.Tensor],
                     cancel_point: Callable[[], None]) -> dict[str, torch.Tensor]:
    """Back-propagate the objective one CLIP pass at a time; returns the (detached) weighted terms.

    Every CLIP term is a mean over examples of a per-example term, so example e's share is its own term
    divided by n. Each share (16 composites' views, 16 green-screen views, 1 structure view) is encoded
    from a detached copy of its views and back-propagated to that copy at once, which frees the pass's
    activations before the next one starts. One final backward then carries the view gradients and the
    opacity terms through the augmentations and composites into the caller's graph (the generator).
    """
    n, w = plan.n, plan.weights
    sums: dict[str, torch.Tensor] = {}
    roots: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []

    def run(batch: torch.Tensor, encode, loss_fn) -> None:
        cancel_point()
        leaf = batch.detach().requires_grad_(batch.requires_grad)
        parts = loss_fn(encode(leaf))
        share = sum(parts.values()) / n
        if leaf.requires_grad:
            share.backward()
            roots.append(batch)
            grads.append(leaf.grad)
        for name, v in parts.items():
            sums[name] = sums.get(name, 0.0) + v.detach() / n

    for e in range(n):
        if plan.comp_views:
            def comp_terms(emb: torch.Tensor, e: int = e) -> dict[str, torch.Tensor]:
                emb = emb.float().unsqueeze(0)
                parts = {"composition": L.composition_loss(emb, plan.comp_text.float(), weight=w.composition)}
                if plan.dir_text is not None:
                    parts["directional"] = L.directional_loss(emb, plan.in_emb[e].float().unsqueeze(0),
                                                              plan.dir_text[0].float(), plan.dir_text[1].float(),
                                                              weight=w.composition)
                return parts

            run(plan.comp_views[e], clip.encode_image, comp_terms)
        if plan.screen_views:
            run(plan.screen_views[e], clip.encode_image,
                lambda emb: {"screen": L.green_screen_loss(emb.float().unsqueeze(0), plan.screen_text.float(),
                                                            weight=w.screen)})
        if plan.src_tok:
            run(structure_view(plan.comps[e], plan.views), clip.image_tokens,
                lambda tok, e=e: {"structure": L.structure_loss([tok.float()], [plan.src_tok[e].float()],
                                                                 weight=w.structure)})
    cancel_point()
    rest_total = sum(rest.values())
    if rest_total.requires_grad:
        roots.append(rest_total)
        grads.append(torch.ones_like(rest_total))
    if roots:
        torch.autograd.backward(roots, grads)
    order = ("composition", "directional", "screen", "structure")
    terms = {name: sums[name] for name in order if name in sums}
    terms.update({name: v.detach() for name, v in rest.items()})
    return terms
