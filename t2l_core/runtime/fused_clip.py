"""A faster image side for a frozen ViT CLIP: the same mathematics as :class:`ClipModel`, fewer kernels.

:func:`fast_clip` returns a view of a loaded :class:`~t2l_core.clip.model.ClipModel` (sharing its weights and
text cache) whose image passes differ only in how they are computed:

* patch embedding as one matrix product over the flattened 32×32 patches instead of a stride-32
  convolution (whose input-gradient kernel is very slow on CPU), with the CLIP mean/std normalisation
  folded into that matrix and a bias (``W·((x−m)/s) = (W/s)·x − W·(m/s)``);
* attention written out as one QKV projection on ``[B·T, C]`` rows, ``scaled_dot_product_attention`` on
  batch-first heads and the output projection, instead of ``nn.MultiheadAttention`` (which, with gradients
  on, falls back to batched ``bmm`` projections and several layout copies);
* optional autocast (bf16 on CUDA by default, see :mod:`t2l_core.runtime.precision`; on CPU only when asked:
  it is slower on CPUs without AMX);
* optional activation checkpointing (``checkpoint_blocks``): with gradients on, each residual block keeps
  only its input and recomputes its activations in the backward pass (same values, less memory).
* in ``encode_image`` the last block runs on the CLS row only (its keys and values still come from every
  token): the embedding reads nothing else from it, so most of that block's work (forward and backward;
  ~80% of it for ViT-B/32, ~6.7% of the whole image pass) and activations are skipped. Only when valid: a
  plain block, batch-first, and a tower that pools the CLS token (open_clip ``pool_type == 'tok'``, no
  ``attn_pool``, per-token ``ln_post``); otherwise the full block runs. The tokens returned with
  ``tokens_block`` and by ``image_tokens`` are unchanged.

Every caller of ``encode_image`` / ``image_tokens`` / ``_embed_patches`` / ``_run_blocks`` (the edit
objective, relevancy maps) gets the fast path through the view. Results equal the plain path up to float
rounding (the fast-path tests state the tolerance; bench/RESULTS.md the speed).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..clip.model import ClipModel


def _attention_block(blk: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One open_clip ``ResidualAttentionBlock`` (no mask, no cross-attention) on batch-first tokens."""
    attn = blk.attn
    h = blk.ln_1(x)
    b, t, c = h.shape
    heads = attn.num_heads
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).view(b, t, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, T, hd]
    out = F.scaled_dot_product_attention(q, k, v)
    out = F.linear(out.transpose(1, 2).reshape(b, t, c), attn.out_proj.weight, attn.out_proj.bias)
    x = x + blk.ls_1(out)
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def _cls_attention_block(blk: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """:func:`_attention_block` restricted to its CLS output row: ``[B, T, C]`` -> ``[B, 1, C]``.

    Keys and values come from ``ln_1`` of every token, the query from the CLS token (row 0) only; the
    output projection, residual, ``ln_2`` and MLP then run on that one row.
    """
    attn = blk.attn
    h = blk.ln_1(x)
    b, t, c = h.shape
    heads = attn.num_heads
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    kv = F.linear(h, w[c:], None if bias is None else bias[c:]).view(b, t, 2, heads, c // heads)
    k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, T, hd]
    q = F.linear(h[:, :1], w[:c], None if bias is None else bias[:c]).view(b, 1, heads, c // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, 1, hd]
    out = F.linear(out.transpose(1, 2).reshape(b, 1, c), attn.out_proj.weight, attn.out_proj.bias)
    x = x[:, :1] + blk.ls_1(out)
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))


def _call_block(blk: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A block the hand-written kernels do not cover, called as it is."""
    return blk(x)


def _plain_block(blk: torch.nn.Module) -> bool:
    """True when ``blk`` is a standard self-attention block this module can compute by hand."""
    attn = getattr(blk, "attn", None)
    return (isinstance(attn, torch.nn.MultiheadAttention) and attn._qkv_same_embed_dim
            and attn.in_proj_weight is not None and not hasattr(blk, "ln_1_kv")
            and hasattr(blk, "ln_1") and hasattr(blk, "ln_2") and hasattr(blk, "mlp"))


def _pools_cls_token(visual: torch.nn.Module) -> bool:
    """True when the embedding of ``visual`` reads only the CLS token of the final tokens.

    open_clip's ``VisionTransformer._pool`` without ``attn_pool`` and with ``pool_type == 'tok'`` returns
    ``ln_post(x)[:, 0]`` (or ``ln_post(x[:, 0])`` with ``final_ln_after_pool``): the same value either way
    when ``ln_post`` works per token (a LayerNorm over the width, or the identity).
    """
    from open_clip.transformer import VisionTransformer

    return (isinstance(visual, VisionTransformer) and getattr(type(visual), "_pool", None) is VisionTransformer._pool
            and getattr(visual, "attn_pool", None) is None and getattr(visual, "pool_type", None) == "tok"
            and isinstance(getattr(visual, "ln_post", None), (torch.nn.LayerNorm, torch.nn.Identity)))


class FastClipModel(ClipModel):
    """A :class:`ClipModel` whose image passes use the fast kernels (usually made by :func:`fast_clip`).

    Args:
        base: the loaded CLIP; the view shares its weights, tokenizer and text cache (``base`` is unchanged).
        autocast_dtype: run the image passes under autocast in this dtype (None = the model's own dtype).
        checkpoint_blocks: recompute each block's activations in the backward pass (less memory).
    """

    def __init__(self, base: ClipModel, autocast_dtype: Optional[torch.dtype] = None,
                 checkpoint_blocks: bool = False) -> None:
        self.__dict__.update(base.__dict__)  # a view: the same model, tokenizer and text-cache objects
        self._patch_matrix: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.autocast_dtype = autocast_dtype
        self.checkpoint_blocks = bool(checkpoint_blocks)

    def _folded_patch_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch-embedding matrix ``[3·p·p, width]`` with the normalisation folded in, and its bias."""
        w = self.visual.conv1.weight  # [width, 3, p, p]
        if self._patch_matrix is None or self._patch_matrix[0].device != w.device or self._patch_matrix[0].dtype != w.dtype:
            w32 = w.detach().float()
            mean = self._mean.view(1, 3, 1, 1).to(w32.device)
            std = self._std.view(1, 3, 1, 1).to(w32.device)
            bias = -(w32 * (mean / std)).sum(dim=(1, 2, 3))
            if self.visual.conv1.bias is not None:
                bias = bias + self.visual.conv1.bias.detach().float()
            matrix = (w32 / std).reshape(w.shape[0], -1).t().contiguous()
            self._patch_matrix = (matrix.to(w.dtype), bias.to(w.dtype))
        return self._patch_matrix

    def _embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] (0..1) -> token sequence after ln_pre, [B, 1+rows*cols, width], by one matrix product."""
        self._check_images(images)
        v = self.visual
        p = self.patch_size
        matrix, bias = self._folded_patch_weights()
        b, _, h, w = images.shape
        rows, cols = h // p, w // p
        x = images[..., : rows * p, : cols * p].to(self.device, matrix.dtype)  # leftover pixels are dropped
        x = x.reshape(b, 3, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5).reshape(b, rows * cols, 3 * p * p)
        x = torch.addmm(bias, x.reshape(-1, 3 * p * p), matrix).view(b, rows * cols, -1)
        c = x.shape[-1]
        cls = v.class_embedding.to(x.dtype).view(1, 1, c).expand(b, 1, c)
        x = torch.cat([cls, x], dim=1) + self.position_embedding(rows, cols, h == w).to(x.dtype)
        return v.ln_pre(x)

    def _recompute(self, x: torch.Tensor) -> bool:
        """Whether the blocks on ``x`` recompute their activations in the backward pass."""
        return self.checkpoint_blocks and torch.is_grad_enabled() and x.requires_grad

    def _run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Apply resblocks[start:stop] to a batch-first token sequence, plain blocks by hand."""
        tr = self.visual.transformer
        if not getattr(tr, "batch_first", True):
            return ClipModel._run_blocks(self, x, start, stop)
        recompute = self._recompute(x)
        for blk in tr.resblocks[start:stop]:
            fn = _attention_block if _plain_block(blk) else _call_block
            x = checkpoint(fn, blk, x, use_reentrant=False) if recompute else fn(blk, x)
        return x

    def _cls_only_last_block(self) -> bool:
        """True when the last block may run on the CLS row only (see :func:`_cls_attention_block`)."""
        tr = self.visual.transformer
        return (getattr(tr, "batch_first", True) and _plain_block(tr.resblocks[-1])
                and _pools_cls_token(self.visual))

    def _run_to_head(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Blocks ``start..`` to the end, as :meth:`_head` needs them: ``[B, T, C]`` -> ``[B, T or 1, C]``."""
        if start >= self.num_blocks or not self._cls_only_last_block():
            return self._run_blocks(x, start, self.num_blocks)
        x = self._run_blocks(x, start, self.num_blocks - 1)
        blk = self.visual.transformer.resblocks[-1]
        if self._recompute(x):
            return checkpoint(_cls_attention_block, blk, x, use_reentrant=False)
        return _cls_attention_block(blk, x)

    def _autocast(self):
        """The autocast context of the image passes (disabled when ``autocast_dtype`` is None)."""
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def encode_image(self, images: torch.Tensor, *, tokens_block: int | None = None):
        """As :meth:`ClipModel.encode_image`; the last block is computed for the CLS row only when valid.

        Args:
            images: [B,3,H,W] in 0..1 (normalised here).
            tokens_block: if given, also return the tokens entering that block (-1 = last block).

        Returns:
            [B,D] fp32 unnormalised embeddings, or (embeddings, tokens [B,1+N,width] fp32).
        """
        with self._autocast():
            x = self._embed_patches(images)
            if tokens_block is None:
                emb = self._head(self._run_to_head(x, 0))
            else:
                k = self._block_index(tokens_block)
                tokens = self._run_blocks(x, 0, k)
                emb = self._head(self._run_to_head(tokens, k))
        return emb.float() if tokens_block is None else (emb.float(), tokens.float())

    def image_tokens(self, images: torch.Tensor, block: int = -1) -> torch.Tensor:
        """As :meth:`ClipModel.image_tokens`, under this view's autocast.

        Args:
            images: [B,3,H,W] in 0..1.
            block: the block index (-1 = last).

        Returns:
            [B,1+rows*cols,width] fp32, CLS first.
        """
        with self._autocast():
            return ClipModel.image_tokens(self, images, block).float()


def fast_clip(clip: ClipModel, autocast_dtype: Optional[torch.dtype] = None,
              checkpoint_blocks: bool = False) -> ClipModel:
    """A fast view of ``clip`` (shared weights and text cache; ``clip`` itself is unchanged).

    Args:
        clip: the loaded CLIP.
        autocast_dtype: run the image passes under autocast in this dtype (None = the model's own dtype).
        checkpoint_blocks: recompute each block's activations in the backward pass (less memory, ~1 extra
            forward of the blocks with gradients).

    Returns:
        The view, or ``clip`` itself when its vision tower is not a standard open_clip ViT.
    """
    if isinstance(clip, FastClipModel):
        if clip.autocast_dtype == autocast_dtype and clip.checkpoint_blocks == checkpoint_blocks:
            return clip
        return FastClipModel(clip, autocast_dtype, checkpoint_blocks)
    blocks = getattr(getattr(clip.visual, "transformer", None), "resblocks", None)
    if blocks is None or not hasattr(clip.visual.conv1, "weight") or clip.visual.conv1.stride[0] != clip.patch_size:
        return clip
    return FastClipModel(clip, autocast_dtype, checkpoint_blocks)
