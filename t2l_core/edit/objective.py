"""The Text2LIVE objective for one training step over a set of (input, colour, opacity) examples.

Shared by image editing (examples = augmented crop [+ full image]) and video editing (examples = atlas
crops mapped into frames; paper section 3.2). CLIP work is batched: all output views (composites and
green-screen renders) of a step go through one ``encode_image`` call per view size with gradients, all
input views and structure targets through no-grad calls, so a step costs few CLIP forwards.

Total (paper eqs. 2-3, with L_reg = L_sparsity of eq. 7 and the bootstrap term L_init of eq. 8):
    L = λ_comp·(L_comp + L_dir) + λ_screen·L_screen + λ_struct·L_struct + L_sparsity + λ_b(t)·L_boot

A step is planned once (:func:`plan_objective`: randomness, views, targets); its terms are assembled by
:class:`ObjectivePlan` for all examples at once (:func:`clip_terms`) or pass by pass (:meth:`ObjectivePlan.passes`).
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
    protect: float = setting(1.0, "Weight of the penalty on the layer's own opacity inside the protected region "
                                  "(protect_mask, exclude_text); the composite leaves that region untouched anyway.",
                             min=0.0, max=1000.0)

    def to_dict(self) -> dict:
        """``{field: value}``."""
        return asdict(self)


@dataclass
class TextBanks:
    """Template-expanded text embeddings ``[N,D]`` (prompt-major). ``source`` None disables L_dir."""

    composition: torch.Tensor
    screen: torch.Tensor
    source: Optional[torch.Tensor] = None

    @classmethod
    def build(cls, clip, prompt: str | Sequence[str], screen_prompt: str | Sequence[str] | None = None,
              source_prompt: str | Sequence[str] | None = None,
              on_progress: Optional[Callable[[int, int], None]] = None) -> "TextBanks":
        """Encode the banks once, each prompt expanded with the templates of paper appendix A.2.

        Args:
            clip: the CLIP model (its ``text_bank``).
            prompt: the target text(s) T.
            screen_prompt: the green-screen text(s) T_screen; None or empty = ``prompt``.
            source_prompt: the source text(s) T_ROI of L_dir; None or empty = no directional loss.
            on_progress: ``(banks done, banks)`` before the first bank and after each (CLIP's text encoder
                on every prompt-template pair takes seconds on a CPU).

        Returns:
            The banks, each [N,D].

        Raises:
            ValueError: the target prompt is empty.
        """
        comp = as_prompt_list(prompt, "target prompt")
        screen = as_prompt_list(screen_prompt, "green-screen prompt") if _given(screen_prompt) else comp
        source = as_prompt_list(source_prompt, "source prompt") if _given(source_prompt) else None
        jobs = [(comp, COMPOSITION_TEMPLATES), (screen, SCREEN_TEMPLATES)] + ([(source, COMPOSITION_TEMPLATES)]
                                                                            if source else [])
        report = on_progress or (lambda done, total: None)
        banks = []
        report(0, len(jobs))
        for i, (prompts, templates) in enumerate(jobs):
            banks.append(clip.text_bank(prompts, templates))
            report(i + 1, len(jobs))
        return cls(composition=banks[0], screen=banks[1], source=banks[2] if source else None)


def _given(p) -> bool:
    """Whether a prompt (a string or a list of strings) has any text."""
    if p is None:
        return False
    if isinstance(p, str):
        return bool(p.strip())
    return any(s and s.strip() for s in p)


def encode_grouped(fn: Callable[[torch.Tensor], torch.Tensor], batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Apply ``fn`` once per distinct spatial size to the concatenation of ``batches``; split back.

    Args:
        fn: an encoder, [N,3,h,w] -> [N,...].
        batches: [V_i,3,h_i,w_i] each.

    Returns:
        ``fn``'s output per batch, [V_i,...], in the order of ``batches``.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    for i, b in enumerate(batches):
        groups.setdefault(tuple(b.shape[-2:]), []).append(i)
    out: list[Optional[torch.Tensor]] = [None] * len(batches)
    for idx in groups.values():
        res = fn(torch.cat([batches[i] for i in idx], dim=0))
        for i, part in zip(idx, res.split([batches[i].shape[0] for i in idx], dim=0)):
            out[i] = part
    return out  # type: ignore[return-value]


@dataclass
class StepExamples:
    """One step's examples, each ``[1,C,h,w]`` in 0..1: the inputs and the generator's colour and opacity.

    ``composites``/``screens``: per example a composite / green-screen render that replaces the one computed
    from the colour and opacity (None entries: computed). ``source_tokens``: cached structure targets.
    ``bootstrap_targets``: per example a ``[1,h,w]`` map in 0..1 when this step bootstraps the opacity.
    ``protect``: per example the protected region ``[1,1,h,w]`` in 0..1 (the size of its opacity), or None;
    then ``alphas`` are the protected opacities the composites use and ``trained_alphas`` the generator's own.
    """

    inputs: list[torch.Tensor]
    colors: list[torch.Tensor]
    alphas: list[torch.Tensor]
    composites: Optional[list[Optional[torch.Tensor]]] = None
    screens: Optional[list[Optional[torch.Tensor]]] = None
    source_tokens: Optional[list[Optional[torch.Tensor]]] = None
    bootstrap_targets: Optional[list[torch.Tensor]] = None
    protect: Optional[list[torch.Tensor]] = None
    trained_alphas: Optional[list[torch.Tensor]] = None


def _noop() -> None:
    """The default cancel point: does nothing."""
    pass


def edit_objective(clip, examples: StepExamples, banks: TextBanks, views: ViewConfig, weights: LossWeights,
                   generator: torch.Generator, *, bootstrap_weight: float = 0.0,
                   augmenter: Optional[ViewAugmenter] = None, authors_bootstrap_bug: bool = False,
                   cancel_point: Callable[[], None] = _noop,
                   defer_report: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss (paper eq. 2) and its weighted terms for one step's examples, with one autograd graph.

    Args:
        clip: the CLIP model.
        examples: the step's examples (inputs: a crop, the whole image, a frame crop); their composites and
            green-screen renders where given replace α·C + (1−α)·I and the render (video: maps rendered in
            the atlas and sampled into a frame); their bootstrap targets are used when ``bootstrap_weight``
            > 0, their protected regions for the spill penalty.
        banks, views, weights: the texts, the CLIP views and the loss weights.
        generator: the RNG of the step's texts and views.
        bootstrap_weight: λ_b of this step.
        augmenter: the view augmenter; None = a new one for ``views``.
        authors_bootstrap_bug: see :func:`t2l_core.edit.losses.bootstrap_loss`.
        cancel_point: called between CLIP passes; raises to cancel.
        defer_report: keep the reported terms as detached 0-dim device tensors (the caller converts them with
            :func:`t2l_core.progress.losses_to_floats` after the backward pass, one host-device wait a step).

    Returns:
        ``(total, terms)``: the total with its graph, and each weighted term plus ``"total"``.
    """
    plan = plan_objective(clip, examples, banks, views, weights, generator, augmenter=augmenter,
                          cancel_point=cancel_point)
    opacity = opacity_terms(examples.alphas, weights, examples.bootstrap_targets, bootstrap_weight,
                            authors_bootstrap_bug, examples.protect, examples.trained_alphas)
    terms = clip_terms(clip, plan, cancel_point)
    terms.update(opacity)
    total, report = total_and_report(terms, examples.alphas[0])
    return total, (report if defer_report else losses_to_floats(report))


def total_and_report(terms: dict[str, torch.Tensor],
                     like: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The total of paper eq. 2 and a report of its terms.

    Args:
        terms: each weighted term, a 0-dim tensor.
        like: the total is accumulated in its dtype and device.

    Returns:
        ``(total, report)``: the sum with its graph, and each term detached with ``"total"`` last.
    """
    total = sum(terms.values(), like.new_zeros(()))
    report = {name: v.detach() for name, v in terms.items()}
    report["total"] = total.detach()
    return total, report


@dataclass
class ClipPass:
    """One CLIP pass of one example: a view batch, which encoder reads it, and the terms of its output."""

    views: torch.Tensor  # [V,3,h,w], with the graph back to the generator
    encoder: str  # "encode_image" or "image_tokens"
    terms: Callable[[torch.Tensor], dict[str, torch.Tensor]]  # encoder output -> this example's weighted terms


@dataclass
class ObjectivePlan:
    """One step's CLIP work with its randomness drawn: view batches (with graph) and their loss targets.

    The loss terms of CLIP outputs are assembled here once, for any subset of the examples: all of them at
    once (:func:`clip_terms`) or one example's pass at a time (:meth:`passes`, for a staged backward).
    """

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

    def composition_terms(self, emb: torch.Tensor, examples: Sequence[int]) -> dict[str, torch.Tensor]:
        """L_cos and L_dir of L_comp (paper eq. 3).

        Args:
            emb: [k,V,D], the composite views' embeddings of ``examples``.
            examples: the k example indices.

        Returns:
            ``{"composition", "directional" (when on)}``, weighted.
        """
        w = self.weights
        emb = emb.float()
        terms = {"composition": L.composition_loss(emb, self.comp_text.float(), weight=w.composition)}
        if self.dir_text is not None:
            source = torch.stack([self.in_emb[e] for e in examples]).float()
            terms["directional"] = L.directional_loss(emb, source, self.dir_text[0].float(),
                                                      self.dir_text[1].float(), weight=w.composition)
        return terms

    def screen_terms(self, emb: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_screen (paper eq. 4).

        Args:
            emb: [k,V,D], the green-screen views' embeddings.

        Returns:
            ``{"screen"}``, weighted.
        """
        return {"screen": L.green_screen_loss(emb.float(), self.screen_text.float(), weight=self.weights.screen)}

    def structure_terms(self, tokens: Sequence[torch.Tensor], examples: Sequence[int]) -> dict[str, torch.Tensor]:
        """L_structure (paper eqs. 5-6).

        Args:
            tokens: the composites' tokens of ``examples``, [1,T,C] each.
            examples: the example indices.

        Returns:
            ``{"structure"}``, weighted.
        """
        return {"structure": L.structure_loss([t.float() for t in tokens],
                                              [self.src_tok[e].float() for e in examples],
                                              weight=self.weights.structure)}

    def passes(self, e: int) -> list[ClipPass]:
        """One example's CLIP passes, each with the terms of its output (weighted, not yet divided by n).

        Args:
            e: the example index, 0..n-1.

        Returns:
            The passes (composites, green screen, structure; those whose loss is on).
        """
        out = []
        if self.comp_views:
            out.append(ClipPass(self.comp_views[e], "encode_image",
                                lambda emb: self.composition_terms(emb.unsqueeze(0), [e])))
        if self.screen_views:
            out.append(ClipPass(self.screen_views[e], "encode_image", lambda emb: self.screen_terms(emb.unsqueeze(0))))
        if self.src_tok:
            out.append(ClipPass(structure_view(self.comps[e], self.views), "image_tokens",
                                lambda tok: self.structure_terms([tok], [e])))
        return out


def plan_objective(clip, examples: StepExamples, banks: TextBanks, views: ViewConfig, weights: LossWeights,
                   generator: torch.Generator, *, augmenter: Optional[ViewAugmenter] = None,
                   cancel_point: Callable[[], None] = _noop) -> ObjectivePlan:
    """Draw the step's randomness in a fixed order and build every view; encode the no-grad inputs.

    Texts are sampled first (composition, direction, screen), then the views of every composite, every
    green-screen render and every input, so a seed fixes the whole step.

    Args:
        As in :func:`edit_objective` (the examples' bootstrap targets are not read here).

    Returns:
        The plan.

    Raises:
        ValueError: the numbers of inputs, colours and opacities differ, or are 0.
    """
    inputs, colors, alphas = examples.inputs, examples.colors, examples.alphas
    n = len(inputs)
    if not (len(colors) == len(alphas) == n) or n == 0:
        raise ValueError(f"edit_objective: {n} inputs, {len(colors)} colours, {len(alphas)} alphas")
    augmenter = augmenter or ViewAugmenter(views)
    given_comp = list(examples.composites) if examples.composites is not None else [None] * n
    given_screen = list(examples.screens) if examples.screens is not None else [None] * n
    comps = [g if g is not None else composite(c, a, x.to(c)) for g, x, c, a in zip(given_comp, inputs, colors, alphas)]
    use_comp, use_screen = weights.composition > 0, weights.screen > 0
    use_dir = use_comp and banks.source is not None

    comp_text = sample_targets(banks.composition, generator) if use_comp else None
    dir_text = sample_directions(banks.composition, banks.source, generator) if use_dir else None
    screen_text = sample_targets(banks.screen, generator) if use_screen else None

    comp_views = [make_views(c, views, generator, augmenter) for c in comps] if use_comp else []
    screen_views = ([make_views(g if g is not None else on_green_screen(c, a), views, generator, augmenter)
                     for g, c, a in zip(given_screen, colors, alphas)] if use_screen else [])
    in_batches = [make_views(x, views, generator, augmenter) for x in inputs] if use_dir else []
    cancel_point()
    with torch.no_grad():
        in_emb = encode_grouped(clip.encode_image, in_batches) if in_batches else []
        src_tok = _structure_targets(clip, inputs, views, examples.source_tokens) if weights.structure > 0 else []
    cancel_point()
    return ObjectivePlan(n, comps, comp_views, screen_views, in_emb, src_tok, comp_text, dir_text, screen_text,
                         weights, views)


def _structure_targets(clip, inputs, views: ViewConfig, cached) -> list[torch.Tensor]:
    """The inputs' structure tokens: the cached ones where given, the rest encoded in one batch per size."""
    targets = list(cached) if cached is not None else [None] * len(inputs)
    todo = [i for i in range(len(inputs)) if targets[i] is None]
    fresh = encode_grouped(clip.image_tokens, [structure_view(inputs[i], views) for i in todo]) if todo else []
    for i, t in zip(todo, fresh):
        targets[i] = t
    return targets


def opacity_terms(alphas, weights: LossWeights, bootstrap_targets, bootstrap_weight: float,
                  authors_bootstrap_bug: bool, protect: Optional[Sequence[torch.Tensor]] = None,
                  trained_alphas: Optional[Sequence[torch.Tensor]] = None) -> dict[str, torch.Tensor]:
    """The terms computed on α alone: sparsity L_reg (paper eq. 7), bootstrapping L_init (eq. 8) when its
    weight is positive, and the spill penalty when a region is protected.

    Args:
        alphas: per example [1,1,h,w] in 0..1.
        weights: the loss weights.
        bootstrap_targets: None, or per example a [1,h',w'] map in 0..1.
        bootstrap_weight: λ_b of this step.
        authors_bootstrap_bug: see :func:`t2l_core.edit.losses.bootstrap_loss`.
        protect: None, or per example the protected region [1,1,h,w] in 0..1
            (:func:`t2l_core.edit.losses.protect_loss`).
        trained_alphas: the generator's own opacities the spill penalty applies to, when ``alphas`` are the
            protected ones (:func:`t2l_core.edit.protection.protected_alphas`); None = ``alphas``.

    Returns:
        ``{"sparsity", "bootstrap" (when on), "protect" (when on)}``, weighted.
    """
    terms = {"sparsity": L.sparsity_loss(list(alphas), l1_weight=weights.sparsity_l1, l0_weight=weights.sparsity_l0)}
    if bootstrap_weight > 0 and bootstrap_targets is not None:
        terms["bootstrap"] = L.bootstrap_loss(list(alphas), list(bootstrap_targets), weight=bootstrap_weight,
                                              authors_last_only=authors_bootstrap_bug)
    if protect is not None and weights.protect > 0:
        terms["protect"] = L.protect_loss(list(trained_alphas or alphas), list(protect), weight=weights.protect)
    return terms


def clip_terms(clip, plan: ObjectivePlan, cancel_point: Callable[[], None] = _noop) -> dict[str, torch.Tensor]:
    """The CLIP terms with one graph: every output view of a size in one ``encode_image`` call.

    Args:
        clip: the CLIP model.
        plan: the step's plan.
        cancel_point: called between CLIP passes; raises to cancel.

    Returns:
        Each weighted CLIP term (composition, directional, screen, structure; those that are on).
    """
    n, every = plan.n, list(range(plan.n))
    out_emb = encode_grouped(clip.encode_image, plan.comp_views + plan.screen_views)
    cancel_point()
    out_tok = (encode_grouped(clip.image_tokens, [structure_view(c, plan.views) for c in plan.comps])
               if plan.src_tok else [])
    cancel_point()
    terms: dict[str, torch.Tensor] = {}
    k = 0
    if plan.comp_views:
        terms.update(plan.composition_terms(torch.stack(out_emb[:n]), every))
        k = n
    if plan.screen_views:
        terms.update(plan.screen_terms(torch.stack(out_emb[k:k + n])))
    if plan.src_tok:
        terms.update(plan.structure_terms(out_tok, every))
    return terms
