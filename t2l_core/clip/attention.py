"""Multi-head self-attention of an open_clip ViT block, written out once.

Two ways to compute the same attention, side by side:

* :func:`attention`: torch's ``scaled_dot_product_attention`` (fused kernels, the probabilities are never
  materialised);
* :func:`attention_with_probs`: the explicit ``softmax(q k^T / sqrt(d)) v``, which also returns the
  probabilities (relevancy maps back-propagate through them).

:func:`residual_block` applies one open_clip ``ResidualAttentionBlock`` (pre-norm attention and MLP, layer
scales) with either: in full, for the CLS output row only (keys and values still from every token), or with
the attention probabilities. :func:`supports_block` says which blocks it covers.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention (no mask, no dropout) through torch's fused kernels.

    Args:
        q: [B, heads, Tq, hd] queries.
        k, v: [B, heads, T, hd] keys and values.

    Returns:
        [B, heads, Tq, hd].
    """
    return F.scaled_dot_product_attention(q, k, v)


def attention_with_probs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention written out, keeping the probabilities in the autograd graph.

    Args:
        q: [B, heads, Tq, hd] queries.
        k, v: [B, heads, T, hd] keys and values.

    Returns:
        ``(out [B, heads, Tq, hd], probs [B, heads, Tq, T])``, each row of ``probs`` summing to 1.
    """
    probs = torch.softmax((q * (q.shape[-1] ** -0.5)) @ k.transpose(-2, -1), dim=-1)
    return probs @ v, probs


def supports_block(blk: torch.nn.Module) -> bool:
    """Whether :func:`residual_block` computes ``blk``: a standard open_clip self-attention block.

    Args:
        blk: a block of the vision transformer.

    Returns:
        True for a ``ResidualAttentionBlock`` with ``nn.MultiheadAttention`` over one packed QKV projection
        (no cross-attention).
    """
    attn = getattr(blk, "attn", None)
    return (isinstance(attn, torch.nn.MultiheadAttention) and attn.in_proj_weight is not None
            and attn.kdim == attn.vdim == attn.embed_dim and not hasattr(blk, "ln_1_kv")
            and hasattr(blk, "ln_1") and hasattr(blk, "ln_2") and hasattr(blk, "mlp"))


def _heads(x: torch.Tensor, parts: int, heads: int) -> tuple[torch.Tensor, ...]:
    """[B, T, parts*C] projections -> ``parts`` tensors [B, heads, T, C/heads]."""
    b, t, width = x.shape
    c = width // parts
    return tuple(x.view(b, t, parts, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0))


def _qkv(attn: torch.nn.MultiheadAttention, h: torch.Tensor,
         cls_only: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values [B, heads, T, hd] of the normalised tokens ``h`` [B, T, C]; with ``cls_only``
    the queries of the CLS row only ([B, heads, 1, hd])."""
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    if not cls_only:
        return _heads(F.linear(h, w, bias), 3, attn.num_heads)
    c = h.shape[-1]
    k, v = _heads(F.linear(h, w[c:], None if bias is None else bias[c:]), 2, attn.num_heads)
    (q,) = _heads(F.linear(h[:, :1], w[:c], None if bias is None else bias[:c]), 1, attn.num_heads)
    return q, k, v


def _block(blk: torch.nn.Module, x: torch.Tensor, cls_only: bool,
           with_probs: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One residual block on batch-first tokens; see :func:`residual_block`."""
    attn = blk.attn
    q, k, v = _qkv(attn, blk.ln_1(x), cls_only)
    out, probs = attention_with_probs(q, k, v) if with_probs else (attention(q, k, v), None)
    b, _, rows, _ = out.shape
    out = F.linear(out.transpose(1, 2).reshape(b, rows, -1), attn.out_proj.weight, attn.out_proj.bias)
    x = (x[:, :1] if cls_only else x) + blk.ls_1(out)
    return x + blk.ls_2(blk.mlp(blk.ln_2(x))), probs


def residual_block(blk: torch.nn.Module, x: torch.Tensor, *, cls_only: bool = False) -> torch.Tensor:
    """One open_clip ``ResidualAttentionBlock`` (:func:`supports_block`) through :func:`attention`.

    Args:
        blk: the block.
        x: [B, T, C] batch-first tokens, CLS first.
        cls_only: compute the CLS output row only: keys and values come from every token, the query, output
            projection, residual and MLP from row 0.

    Returns:
        [B, T, C], or [B, 1, C] with ``cls_only``.
    """
    return _block(blk, x, cls_only, with_probs=False)[0]


def residual_block_with_probs(blk: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One open_clip ``ResidualAttentionBlock`` through :func:`attention_with_probs`.

    Args:
        blk: the block (:func:`supports_block`).
        x: [B, T, C] batch-first tokens.

    Returns:
        ``(tokens [B, T, C], attention probabilities [B, heads, T, T])``.
    """
    out, probs = _block(blk, x, cls_only=False, with_probs=True)
    return out, probs
