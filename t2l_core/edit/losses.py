"""Text2LIVE loss terms (paper eqs. 3-8), each a pure function with its weights as named parameters.

Shapes: CLIP embeddings are unnormalised ``[..., D]``; α is ``[B,1,H,W]`` in 0..1. Terms computed over
several examples (the crop, plus the full image on full-image steps) are averaged over the examples.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

# L_init compares the opacity and its target at this square size: CLIP ViT-B/32's input size, as the authors do
# (a fixed size, whatever CLIP the run uses).
BOOTSTRAP_SIDE = 224

# -- CLIP-space distances -----------------------------------------------------------------------------


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The spherical distance 2·arcsin(‖x̂−ŷ‖/2)² of the normalised embeddings (the authors' D_cos).

    Args:
        x: [...,D].
        y: [...,D], broadcast against ``x``.

    Returns:
        [...], in 0..π²/2.
    """
    x = F.normalize(x, dim=-1)
    y = F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def clip_text_loss(view_embeddings: torch.Tensor, text_embeddings: torch.Tensor, *, weight: float = 1.0) -> torch.Tensor:
    """Mean spherical distance between every view and every chosen text (L_cos of eqs. 3-4).

    Args:
        view_embeddings: [E,V,D] (E outputs × V views) or [V,D].
        text_embeddings: [T,D].
        weight: the factor of the term.

    Returns:
        A scalar.
    """
    v = view_embeddings if view_embeddings.ndim == 3 else view_embeddings.unsqueeze(0)
    d = spherical_distance(v.unsqueeze(2), text_embeddings.to(v).view(1, 1, *text_embeddings.shape))
    return weight * d.mean()


def composition_loss(view_embeddings: torch.Tensor, target_text: torch.Tensor, *, weight: float = 1.0) -> torch.Tensor:
    """L_cos(I_o, T) of L_comp (paper eq. 3): the composites' views vs sampled target texts.

    Args:
        view_embeddings: [E,V,D] or [V,D].
        target_text: [T,D].
        weight: the factor of the term.

    Returns:
        A scalar.
    """
    return clip_text_loss(view_embeddings, target_text, weight=weight)


def green_screen_loss(view_embeddings: torch.Tensor, screen_text: torch.Tensor, *, weight: float = 1.0) -> torch.Tensor:
    """L_screen (paper eq. 4): views of the edit over the green screen vs "... over a green screen." texts.

    Args:
        view_embeddings: the green-screen views' embeddings, [E,V,D] or [V,D].
        screen_text: [T,D], the sampled screen texts (raw).
        weight: λ_g of eq. 2.

    Returns:
        A scalar (a mean of spherical distances times ``weight``).
    """
    return clip_text_loss(view_embeddings, screen_text, weight=weight)


def directional_loss(output_embeddings: torch.Tensor, input_embeddings: torch.Tensor,
                     target_text: torch.Tensor, source_text: torch.Tensor, *, weight: float = 1.0) -> torch.Tensor:
    """L_dir of L_comp (paper eq. 3): mean of 1 − cos(out_e − in_e, t − s) over examples, views and text pairs.

    Args:
        output_embeddings: [E,V,D] or [V,D], the outputs' views.
        input_embeddings: the inputs' views, same shape (view k of input and output are augmented independently).
        target_text: [K,D], raw (unnormalised).
        source_text: [K,D], row k matched with ``target_text``'s.
        weight: the factor of the term.

    Returns:
        A scalar in 0..2·weight.
    """
    out = output_embeddings if output_embeddings.ndim == 3 else output_embeddings.unsqueeze(0)
    inp = input_embeddings if input_embeddings.ndim == 3 else input_embeddings.unsqueeze(0)
    image_dir = (out - inp.to(out)).unsqueeze(2)  # [E,V,1,D]
    text_dir = (target_text - source_text).to(out).view(1, 1, *target_text.shape)  # [1,1,K,D]
    cos = F.cosine_similarity(image_dir, text_dir, dim=-1)  # [E,V,K]
    return weight * (1.0 - cos).mean()


# -- structure -----------------------------------------------------------------------------------------


def self_similarity(tokens: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pairwise cosine similarity of tokens, S(I) of paper eq. 5 (as 1 − D_cos).

    Args:
        tokens: [B,T,C].
        eps: the smallest norm product.

    Returns:
        [B,T,T] in -1..1.
    """
    norms = tokens.norm(dim=-1, keepdim=True)
    return (tokens @ tokens.transpose(1, 2)) / (norms @ norms.transpose(1, 2)).clamp_min(eps)


def structure_loss(output_tokens: torch.Tensor | Sequence[torch.Tensor],
                   source_tokens: torch.Tensor | Sequence[torch.Tensor], *, weight: float = 2.0) -> torch.Tensor:
    """L_structure (paper eq. 6, squared and averaged as the authors do): MSE between the self-similarity
    matrices of output and source tokens (CLS included), mean over examples.

    Args:
        output_tokens: [B,T,C], or per-example lists of [1,T_e,C] (e.g. differently sized views).
        source_tokens: the same shapes; their similarity is a constant target (no grad).
        weight: the factor of the term.

    Returns:
        A scalar.

    Raises:
        ValueError: the two token sets do not match.
    """
    outs = [output_tokens] if torch.is_tensor(output_tokens) else list(output_tokens)
    srcs = [source_tokens] if torch.is_tensor(source_tokens) else list(source_tokens)
    if len(outs) != len(srcs):
        raise ValueError(f"structure_loss: {len(outs)} output token sets vs {len(srcs)} source sets")
    terms = []
    for o, s in zip(outs, srcs):
        if o.shape != s.shape:
            raise ValueError(f"structure_loss: token shapes differ: {tuple(o.shape)} vs {tuple(s.shape)}")
        terms.append(F.mse_loss(self_similarity(o), self_similarity(s.detach().to(o))))
    return weight * torch.stack(terms).mean()


# -- opacity terms -------------------------------------------------------------------------------------


def l0_approximation(alpha: torch.Tensor) -> torch.Tensor:
    """Ψ_0 of paper eq. 7, a differentiable L0 surrogate: mean(2·(sigmoid(5α) − 0.5)).

    Args:
        alpha: opacity, any shape, in 0..1.

    Returns:
        A scalar in 0..1 (up to 0.987 for α = 1).
    """
    return (2.0 * (torch.sigmoid(5.0 * alpha) - 0.5)).mean()


def sparsity_loss(alphas: torch.Tensor | Sequence[torch.Tensor], *, l1_weight: float = 0.06,
                  l0_weight: float = 0.06) -> torch.Tensor:
    """λ_r·L_reg (paper eq. 7): l1_weight·mean(α) + l0_weight·mean(2·sigmoid(5α) − 1), averaged over examples.

    Args:
        alphas: [B,1,H,W] in 0..1, or a list of per-example opacities.
        l1_weight: the factor of the L1 term (image default 0.06 = λ_sparsity 6 × 0.01; video 1e-3).
        l0_weight: the factor of the L0 surrogate (image default 0.06; video 5e-4).

    Returns:
        A scalar.
    """
    items = [alphas] if torch.is_tensor(alphas) else list(alphas)
    terms = [l1_weight * a.mean() + l0_weight * l0_approximation(a) for a in items]
    return torch.stack(terms).mean()


def protect_loss(alphas: Sequence[torch.Tensor], protect: Sequence[torch.Tensor], *, weight: float = 1.0) -> torch.Tensor:
    """The spill penalty: the mean opacity inside the protected region, ``Σ α·P / Σ P``, averaged over examples
    (an addition to the paper's objective; :mod:`t2l_core.edit.protection`).

    Args:
        alphas: per example [1,1,h,w] in 0..1.
        protect: per example the protected region [1,1,h,w] in 0..1 (no grad), the size of its opacity.
        weight: λ_protect, the factor of the term.

    Returns:
        A scalar in 0..weight.

    Raises:
        ValueError: no examples, the two lists differ in length, or a region's size differs from its opacity's.
    """
    if len(alphas) != len(protect) or not alphas:
        raise ValueError(f"protect_loss: {len(alphas)} alphas vs {len(protect)} protected regions")
    terms = []
    for a, p in zip(alphas, protect):
        if p.shape[-2:] != a.shape[-2:]:
            raise ValueError(f"protect_loss: region {tuple(p.shape[-2:])} vs opacity {tuple(a.shape[-2:])}")
        p = p.detach().to(a)
        terms.append((a * p).sum() / p.sum().clamp(min=1e-6))
    return weight * torch.stack(terms).mean()


def bootstrap_loss(alphas: Sequence[torch.Tensor], relevancy: Sequence[torch.Tensor], *, weight: float = 1.0,
                   size: int = BOOTSTRAP_SIDE, authors_last_only: bool = False) -> torch.Tensor:
    """L_init (paper eq. 8): MSE between α and a relevancy (or user) map, averaged over **all** examples.

    Args:
        alphas: per example [1,1,h,w] in 0..1.
        relevancy: per example [1,H',W'] or [1,1,H',W'] in 0..1 (no grad).
        weight: λ_b, the factor of the term.
        size: both are resized to size×size (bilinear, no antialias, aspect not kept) before the MSE.
        authors_last_only: reproduce the authors' bug (only the last example, divided by the count).

    Returns:
        A scalar.

    Raises:
        ValueError: no examples, or the two lists differ in length.
    """
    if len(alphas) != len(relevancy) or not alphas:
        raise ValueError(f"bootstrap_loss: {len(alphas)} alphas vs {len(relevancy)} relevancy maps")
    terms = []
    for a, r in zip(alphas, relevancy):
        r4 = r.unsqueeze(1) if r.ndim == 3 else r
        a_sized = F.interpolate(a, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        r_sized = F.interpolate(r4.to(a), size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        terms.append(F.mse_loss(a_sized, r_sized.detach()))
    if authors_last_only:
        return weight * terms[-1] / len(terms)
    return weight * torch.stack(terms).mean()


def bootstrap_weight(step: int, *, lambda_bootstrap: float, bootstrap_steps: int, schedule: str,
                     min_weight: float) -> float:
    """λ_b, the weight of L_init (paper eq. 8), at a step (the settings and their defaults:
    :class:`t2l_core.edit.config.BootstrapConfig`, :attr:`t2l_core.edit.objective.LossWeights.bootstrap`).

    Args:
        step: 0-based.
        lambda_bootstrap: λ, the weight of the first step.
        bootstrap_steps: 0 from this step on.
        schedule: linear: λ·(1 − (step+1)/bootstrap_steps); exponential: λ·0.99^(step+1); none: λ.
        min_weight: the smallest weight before ``bootstrap_steps``.

    Returns:
        The weight, >= 0.

    Raises:
        ValueError: an unknown schedule.
    """
    if lambda_bootstrap <= 0 or step >= bootstrap_steps:
        return 0.0
    if schedule == "linear":
        w = lambda_bootstrap * (1.0 - (step + 1) / bootstrap_steps)
    elif schedule == "exponential":
        w = lambda_bootstrap * 0.99 ** (step + 1)
    elif schedule == "none":
        w = lambda_bootstrap
    else:
        raise ValueError(f"bootstrap schedule must be 'linear', 'exponential' or 'none', got '{schedule}'")
    return max(min_weight, w)
