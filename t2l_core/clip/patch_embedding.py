"""The patch embedding of a ViT CLIP's image side, two ways that give the same tokens.

* :func:`conv_patch_tokens`: open_clip's stride-p convolution on the normalised image;
* :func:`matmul_patch_tokens`: one matrix product over the flattened p×p patches, with CLIP's mean/std
  normalisation folded into the matrix and a bias (``W·((x−m)/s) = (W/s)·x − W·(m/s)``). The convolution's
  input-gradient kernel is very slow on CPU; the matrix product's is not.
"""

from __future__ import annotations

import torch


def conv_patch_tokens(conv: torch.nn.Conv2d, normalized: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Patch tokens by the convolution.

    Args:
        conv: the tower's ``conv1`` ([width, 3, p, p], stride p).
        normalized: [B,3,H,W], already normalised, in the weights' dtype.

    Returns:
        ``(tokens [B, rows*cols, width], rows, cols)``, row-major; leftover pixels are dropped.
    """
    x = conv(normalized)  # [B, width, rows, cols]
    b, c, rows, cols = x.shape
    return x.reshape(b, c, rows * cols).permute(0, 2, 1), rows, cols


def is_patchify_conv(conv: torch.nn.Module, patch_size: int) -> bool:
    """Whether ``conv`` cuts the image into disjoint ``patch_size`` squares (what :func:`matmul_patch_tokens`
    reproduces).

    Args:
        conv: the tower's ``conv1``.
        patch_size: p.

    Returns:
        True for a convolution with a weight and stride p.
    """
    return isinstance(getattr(conv, "weight", None), torch.Tensor) and conv.stride[0] == patch_size


def folded_patch_weights(conv: torch.nn.Conv2d, mean: torch.Tensor,
                         std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The convolution as a matrix over flattened 0..1 patches, normalisation folded in.

    Args:
        conv: the tower's ``conv1`` ([width, 3, p, p]).
        mean, std: [1,3,1,1] CLIP's normalisation.

    Returns:
        ``(matrix [3·p·p, width], bias [width])`` in the weights' dtype.
    """
    w = conv.weight
    w32 = w.detach().float()
    mean = mean.view(1, 3, 1, 1).to(w32.device)
    std = std.view(1, 3, 1, 1).to(w32.device)
    bias = -(w32 * (mean / std)).sum(dim=(1, 2, 3))
    if conv.bias is not None:
        bias = bias + conv.bias.detach().float()
    matrix = (w32 / std).reshape(w.shape[0], -1).t().contiguous()
    return matrix.to(w.dtype), bias.to(w.dtype)


def matmul_patch_tokens(images: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor,
                        patch_size: int) -> tuple[torch.Tensor, int, int]:
    """Patch tokens by one matrix product (:func:`folded_patch_weights`).

    Args:
        images: [B,3,H,W] in 0..1 (not normalised).
        matrix, bias: from :func:`folded_patch_weights`.
        patch_size: p.

    Returns:
        ``(tokens [B, rows*cols, width], rows, cols)``, row-major; leftover pixels are dropped.
    """
    p = patch_size
    b, _, h, w = images.shape
    rows, cols = h // p, w // p
    x = images[..., : rows * p, : cols * p].to(matrix.device, matrix.dtype)
    x = x.reshape(b, 3, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5).reshape(b, rows * cols, 3 * p * p)
    return torch.addmm(bias, x.reshape(-1, 3 * p * p), matrix).view(b, rows * cols, -1), rows, cols
