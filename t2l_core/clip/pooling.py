"""The image embedding from a ViT CLIP's final tokens: open_clip's own pooling, and whether it reads only CLS.

open_clip runs its pooling step (``ln_post`` and the CLS token or the token mean, in the order the tower's
config asks for) only inside ``VisionTransformer.forward``, as the non-public ``_pool``; this module is the
one place that calls it, so the embedding is open_clip's for every tower it builds.
"""

from __future__ import annotations

import torch


def pool(visual: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The tower's image embedding from its final tokens.

    Args:
        visual: the open_clip vision transformer.
        tokens: [B, T, width] after the last block (T = 1 is enough when :func:`pools_cls_token`).

    Returns:
        [B, D] unnormalised embeddings (pooled, then projected when the tower has a projection).
    """
    pooled, _ = visual._pool(tokens)  # noqa: SLF001 - open_clip exposes its pooling step only as _pool
    return pooled @ visual.proj if visual.proj is not None else pooled


def pools_cls_token(visual: torch.nn.Module) -> bool:
    """Whether :func:`pool` of ``visual`` reads only the CLS token of the final tokens.

    open_clip's ``VisionTransformer`` pooling without ``attn_pool`` and with ``pool_type == 'tok'`` returns
    ``ln_post(x)[:, 0]`` (or ``ln_post(x[:, 0])`` with ``final_ln_after_pool``): the same value either way
    when ``ln_post`` works per token (a LayerNorm over the width, or the identity).

    Args:
        visual: the open_clip vision transformer.

    Returns:
        True when the embedding depends on the CLS row only.
    """
    from open_clip.transformer import VisionTransformer

    if not isinstance(visual, VisionTransformer):
        return False
    stock_pooling = type(visual)._pool is VisionTransformer._pool  # noqa: SLF001 - no subclass overrides it
    return (stock_pooling and getattr(visual, "attn_pool", None) is None and getattr(visual, "pool_type", None) == "tok"
            and isinstance(getattr(visual, "ln_post", None), (torch.nn.LayerNorm, torch.nn.Identity)))
