"""Text-image relevancy maps (Chefer et al. 2021) on the loaded ViT CLIP, for the bootstrapping loss that
initialises the edit's opacity (Text2LIVE Sec. 3.1, "Bootstrapping").

open_clip exposes no attention probabilities, so the last ``num_layers`` blocks run with an explicit
attention (q k^T / sqrt(d), softmax; :meth:`ClipModel.run_blocks_with_attention`) whose probabilities stay
in the graph. The score is the sum of the diagonal image-text logits (image i with text i, logit scale
included, before any softmax); for each of those blocks, in order, ``cam = mean_heads(clamp(grad * attn, 0))`` and ``R <- R + cam @ R`` starting from the
identity. The CLS row over the patch tokens is reshaped to the patch grid, upsampled bilinearly and min-max
normalised per map.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .model import ClipModel
from ..io.input_checks import MIN_INPUT_SIDE, require_finite
from .templates import as_prompt_list


def min_relevancy_side(clip: ClipModel) -> int:
    """The shortest image side a relevancy map is computed for.

    Args:
        clip: the CLIP.

    Returns:
        Pixels: the side Train Edit Layer accepts (:data:`~t2l_core.io.input_checks.MIN_INPUT_SIDE`),
        and at least one CLIP patch.
    """
    return max(MIN_INPUT_SIDE, clip.patch_size)


def relevancy_map(clip: ClipModel, images: torch.Tensor, text: str | Sequence[str], *, num_layers: int = 1,
                  size: tuple[int, int] | None = None, input_size: int | tuple[int, int] | None = None,
                  check_size: bool = True) -> torch.Tensor:
    """Relevancy of each pixel to ``text`` (Text2LIVE Sec. 3.1, "Bootstrapping"; Chefer et al. 2021).

    Args:
        clip: a loaded ViT CLIP.
        images: [B,3,H,W] in 0..1.
        text: one prompt (used for every image) or one per image. Used raw, without templates (as the authors).
        num_layers: how many of the last blocks contribute (1 = last block only, the authors' setting).
        size: output (H', W'); defaults to the images' own size.
        input_size: the square (or (h, w)) size the images are resized to for CLIP; defaults to the model's
            native size (224 for ViT-B/32), as the authors do.
        check_size: refuse images below :func:`min_relevancy_side` (user input); training passes its own
            crops with False.
    Returns:
        [B, H', W'] in 0..1 (each map min-max normalised).
    """
    _check_images(clip, images, check_size)
    texts = _texts_per_image(text, images.shape[0])
    if not 1 <= num_layers <= clip.num_blocks:
        raise ValueError(f"num_layers must be in 1..{clip.num_blocks}, got {num_layers}")
    out_size = tuple(size) if size is not None else tuple(images.shape[-2:])
    in_size = input_size or clip.native_size
    in_size = (in_size, in_size) if isinstance(in_size, int) else tuple(in_size)
    probs, grads = _attention_and_gradients(clip, images, texts, num_layers, in_size)
    rel = _propagate_relevancy(probs, grads)
    rows, cols = in_size[0] // clip.patch_size, in_size[1] // clip.patch_size
    patch_rel = rel[:, 0, 1:].reshape(rel.shape[0], 1, rows, cols).detach()  # the CLS row over the patches
    up = F.interpolate(patch_rel, size=out_size, mode="bilinear", align_corners=False)[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    return ((up - lo) / (hi - lo).clamp(min=1e-8)).to(images.dtype)


def _check_images(clip: ClipModel, images: torch.Tensor, check_size: bool) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"relevancy expects images [B,3,H,W], got {tuple(images.shape)}")
    require_finite(images, "the image")
    least = min_relevancy_side(clip)
    if check_size and min(images.shape[-2:]) < least:
        raise ValueError(f"the image is {images.shape[-1]}x{images.shape[-2]} px; a relevancy map needs at least "
                         f"{least} px on the shorter side (it is resized to CLIP's {clip.native_size} px input). "
                         "Use a larger image.")


def _texts_per_image(text: str | Sequence[str], b: int) -> list[str]:
    """One text per image: a single string (several ``|``/newline-separated parts are joined by spaces) is
    repeated, a sequence must have one text per image."""
    texts = as_prompt_list(text, "relevancy text") if isinstance(text, str) else [t.strip() for t in text]
    if isinstance(text, str):
        texts = [" ".join(texts)] if len(texts) > 1 else texts
    if not texts or not all(texts):
        raise ValueError("the relevancy text is empty: name the object to edit (e.g. 'horse').")
    if len(texts) == 1:
        texts = texts * b
    if len(texts) != b:
        raise ValueError(f"got {len(texts)} texts for {b} images: give one text, or one per image")
    return texts


def _attention_and_gradients(clip: ClipModel, images: torch.Tensor, texts: list[str], num_layers: int,
                             in_size: tuple[int, int]) -> tuple[list, tuple]:
    """The attention probabilities [B,h,T,T] of the last ``num_layers`` blocks and the gradients of the summed
    diagonal image-text logits (logit scale included, before any softmax) with respect to them."""
    with torch.inference_mode(False), torch.enable_grad():
        x = F.interpolate(images.detach().clone().float(), size=in_size, mode="bilinear", align_corners=False)
        x.requires_grad_(True)  # the weights are frozen: give autograd a leaf so the attention gets a graph
        text_emb = clip.encode_text(texts).float()
        start = clip.num_blocks - num_layers
        tokens = clip.run_blocks(clip.embed_patches(x), 0, start)
        tokens, probs = clip.run_blocks_with_attention(tokens, start)
        img_emb = clip.pool(tokens).float()
        logits = clip.logit_scale().float() * F.cosine_similarity(img_emb, text_emb, dim=-1)
        grads = torch.autograd.grad(logits.sum(), probs)
    return probs, grads


def _propagate_relevancy(probs: list, grads: tuple) -> torch.Tensor:
    """Chefer et al.'s rule from the identity: per block, in order, ``R <- R + mean_heads(clamp(grad * attn,
    0)) @ R``. Returns R [B,T,T]."""
    b, _, t, _ = probs[0].shape
    rel = torch.eye(t, device=probs[0].device).expand(b, t, t).clone()
    for p, g in zip(probs, grads):
        cam = (g * p).clamp(min=0).mean(dim=1).float()  # [B, T, T], averaged over heads
        rel = rel + cam @ rel
    return rel


def heatmap(rel: torch.Tensor) -> torch.Tensor:
    """A colour heat map of relevancy maps (blue = low, red = high).

    Args:
        rel: [B,H,W] in 0..1.

    Returns:
        [B,3,H,W] in 0..1.
    """
    r = rel.clamp(0, 1)
    red = (1.5 - (4 * r - 3).abs()).clamp(0, 1)
    green = (1.5 - (4 * r - 2).abs()).clamp(0, 1)
    blue = (1.5 - (4 * r - 1).abs()).clamp(0, 1)
    return torch.stack([red, green, blue], dim=1)
