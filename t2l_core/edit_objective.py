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
from .clip_views import ViewAugmenter, ViewConfig, make_views, structure_view
from .compositing import composite, on_green_screen
from .templates import COMPOSITION_TEMPLATES, SCREEN_TEMPLATES, as_prompt_list
from .text_sampling import sample_directions, sample_targets


@dataclass
class LossWeights:
    """Loss weights (image defaults). Video: structure 3, sparsity_l1 1e-3, sparsity_l0 5e-4."""

    composition: float = 1.0
    screen: float = 1.0
    structure: float = 2.0
    sparsity_l1: float = 0.06
    sparsity_l0: float = 0.06
    bootstrap: float = 10.0

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
                   screens: Optional[Sequence[Optional[torch.Tensor]]] = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its weighted terms for examples ``inputs[e]`` ``[1,3,h,w]`` with generator outputs
    ``colors[e]`` ``[1,3,h,w]`` and ``alphas[e]`` ``[1,1,h,w]`` (all 0..1).

    ``composites[e]`` / ``screens[e]`` ``[1,3,h,w]`` optionally replace the composite α·C + (1−α)·I and the
    green-screen render of example e (video: maps rendered in the atlas and sampled into a frame); None
    entries are computed as usual.
    ``bootstrap_targets[e]`` ``[1,h',w']`` maps in 0..1 (relevancy or user mask), used when
    ``bootstrap_weight`` > 0. ``source_tokens[e]`` optionally supplies cached structure targets.
    Returns ``(total, terms)``; ``terms`` holds each weighted term and ``total`` as floats.
    """
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
    use_boot = bootstrap_weight > 0 and bootstrap_targets is not None

    # Text sampling first, in a fixed order (reproducibility).
    comp_text = sample_targets(banks.composition, generator) if use_comp else None
    dir_text = sample_directions(banks.composition, banks.source, generator) if use_dir else None
    screen_text = sample_targets(banks.screen, generator) if use_screen else None

    # Views of every output (with grad) and of every input (no grad).
    out_batches: list[torch.Tensor] = []
    if use_comp:
        out_batches += [make_views(c, views, generator, augmenter) for c in comps]
    if use_screen:
        out_batches += [make_views(g if g is not None else on_green_screen(c, a), views, generator, augmenter)
                        for g, c, a in zip(given_screen, colors, alphas)]
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
    out_emb = encode_grouped(clip.encode_image, out_batches) if out_batches else []
    cancel_point()
    out_tok = encode_grouped(clip.image_tokens, [structure_view(c, views) for c in comps]) if use_struct else []
    cancel_point()

    ref = alphas[0]
    zero = ref.new_zeros(())
    terms: dict[str, torch.Tensor] = {}
    k = 0
    if use_comp:
        comp_emb = torch.stack(out_emb[:n]).float()
        k = n
        terms["composition"] = L.composition_loss(comp_emb, comp_text.float(), weight=weights.composition)
        if use_dir:
            terms["directional"] = L.directional_loss(comp_emb, torch.stack(in_emb).float(), dir_text[0].float(),
                                                      dir_text[1].float(), weight=weights.composition)
    if use_screen:
        terms["screen"] = L.green_screen_loss(torch.stack(out_emb[k:k + n]).float(), screen_text.float(),
                                              weight=weights.screen)
    if use_struct:
        terms["structure"] = L.structure_loss([t.float() for t in out_tok], [t.float() for t in src_tok],
                                              weight=weights.structure)
    terms["sparsity"] = L.sparsity_loss(list(alphas), l1_weight=weights.sparsity_l1, l0_weight=weights.sparsity_l0)
    if use_boot:
        terms["bootstrap"] = L.bootstrap_loss(list(alphas), list(bootstrap_targets), weight=bootstrap_weight,
                                              authors_last_only=authors_bootstrap_bug)
    total = sum(terms.values(), zero)
    report = {name: float(v.detach()) for name, v in terms.items()}
    report["total"] = float(total.detach())
    return total, report
