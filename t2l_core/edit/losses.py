"""Text2LIVE loss terms (paper eqs. 3-8), each a pure function with its weights as named parameters.

Shapes: CLIP embeddings are unnormalised ``[..., D]``; α is ``[B,1,H,W]`` in 0..1. Terms computed over
several examples (the crop, plus the full image on full-image steps) are averaged over the examples.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

# -- CLIP-space distances -----------------------------------------------------------------------------


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """2·arcsin(‖x̂−ŷ‖/2)² for normalised x, y (broadcast over leading dims) -> ``[...]``."""
    x = F.normalize(x, dim=-1)
    y = F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def clip_text_loss(view_embeddings: torch.Tensor, text_embeddings: torch.Tensor, *, weight: float = 1.0) -> torch.Tensor:
    """Mean spherical distance between every view and every chosen text.

    ``view_embeddings`` ``[E,V,D]`` (E outputs × V views) or ``[V,D]``; ``text_embeddings`` ``[T,D]``.
    Used for the composition loss (composites vs target texts) and the green-screen loss.
    """
    v = view_embeddings if view_embeddings.ndim == 3 else view_embeddings.unsqueeze(0)
    d = spherical_distance(v.unsqueeze(2), text_embeddings.to(v).view(1, 1, *text_embeddings.shape))
    return weight * d.mean()


def composition_loss(view_embeddings: torch.Tensor, target_text: torch.Tensor, *, weight: float = 1.0) -> torch.Tensor:
    """L_comp (cosine term): composites' views vs sampled composition texts (spherical distance)."""
    return clip_text_loss(view_embeddings, target_text, weight=weight)


def green_screen_loss(view_embeddings: torch.Tensor, screen_text: torch.Tensor, *, weight: float = 1.0) -> torch.Tensor:
    """L_screen: views of the edit over the green screen vs sampled "... over a green screen." texts."""
    return clip_text_loss(view_embeddings, screen_text, weight=weight)


def directional_loss(output_embeddings: torch.Tensor, input_embeddings: torch.Tensor,
                     target_text: torch.Tensor, source_text: torch.Tensor, *, weight: float = 1.0) -> torch.Tensor:
    """Mean of 1 − cos(out_e − in_e, t − s) over examples, views and sampled text pairs.

    ``output_embeddings``/``input_embeddings`` ``[E,V,D]`` (view k of input and output are augmented
    independently); ``target_text``/``source_text`` ``[K,D]`` matched rows (raw, unnormalised).
    """
    out = output_embeddings if output_embeddings.ndim == 3 else output_embeddings.unsqueeze(0)
    inp = input_embeddings if input_embeddings.ndim == 3 else input_embeddings.unsqueeze(0)
    image_dir = (out - inp.to(out)).unsqueeze(2)  # [E,V,1,D]
    text_dir = (target_text - source_text).to(out).view(1, 1, *target_text.shape)  # [1,1,K,D]
    cos = F.cosine_similarity(image_dir, text_dir, dim=-1)  # [E,V,K]
    return weight * (1.0 - cos).mean()


# -- structure -----------------------------------------------------------------------------------------


def self_similarity(tokens: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pairwise cosine similarity of tokens ``[B,T,C]`` -> ``[B,T,T]`` (norm product clamped at ``eps``)."""
    norms = tokens.norm(dim=-1, keepdim=True)
    return (tokens @ tokens.transpose(1, 2)) / (norms @ norms.transpose(1, 2)).clamp_min(eps)


def structure_loss(output_tokens: torch.Tensor | Sequence[torch.Tensor],
                   source_tokens: torch.Tensor | Sequence[torch.Tensor], *, weight: float = 2.0) -> torch.Tensor:
    """MSE between self-similarity matrices of output and source tokens (CLS included), mean over examples.

    Tokens ``[B,T,C]`` (or per-example lists of ``[1,T_e,C]``, e.g. differently sized views); the source
    similarity is treated as a constant target.
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
    """Differentiable L0 surrogate: mean(2·(sigmoid(5α) − 0.5))."""
    return (2.0 * (torch.sigmoid(5.0 * alpha) - 0.5)).mean()


def sparsity_loss(alphas: torch.Tensor | Sequence[torch.Tensor], *, l1_weight: float = 0.06,
                  l0_weight: float = 0.06) -> torch.Tensor:
    """l1_weight·mean(α) + l0_weight·mean(2·sigmoid(5α) − 1), averaged over examples.

    Image defaults 0.06/0.06 (λ_sparsity 6 × 0.01); video 1e-3/5e-4.
    """
    items = [alphas] if torch.is_tensor(alphas) else list(alphas)
    terms = [l1_weight * a.mean() + l0_weight * l0_approximation(a) for a in items]
    return torch.stack(terms).mean()


def bootstrap_loss(alphas: Sequence[torch.Tensor], relevancy: Sequence[torch.Tensor], *, weight: float = 1.0,
                   size: int = 224, authors_last_only: bool = False) -> torch.Tensor:
    """Bootstrapping MSE between α and a relevancy (or user) map, averaged over **all** examples.

    ``alphas``: per example ``[1,1,h,w]``; ``relevancy``: per example ``[1,H',W']`` or ``[1,1,H',W']`` in 0..1.
    Both are resized to ``size``×``size`` (bilinear, no antialias, aspect not kept) before the MSE.
    ``authors_last_only`` reproduces the authors' bug (only the last example, divided by the count).
    """
    if len(alphas) != len(relevancy) or not alphas:
        raise ValueError(f"bootstrap_loss: {len(alphas)} alphas vs {len(relevancy)} relevancy maps")
    terms = []
    for a, r in zip(alphas, relevancy):
        r4 = r.unsqueeze(1) if r.ndim == 3 else r
        a224 = F.interpolate(a, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        r224 = F.interpolate(r4.to(a), size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        terms.append(F.mse_loss(a224, r224.detach()))
    if authors_last_only:
        return weight * terms[-1] / len(terms)
    return weight * torch.stack(terms).mean()


def bootstrap_weight(step: int, *, lambda_bootstrap: float = 10.0, bootstrap_steps: int = 1000,
                     schedule: str = "linear", min_weight: float = 0.0) -> float:
    """λ_b at 0-based ``step``: 0 once ``step >= bootstrap_steps``.

    linear: λ·(1 − (step+1)/bootstrap_steps); exponential: λ·0.99^(step+1); none: λ. Clipped at ``min_weight``.
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
