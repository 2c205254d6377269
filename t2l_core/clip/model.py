"""A frozen open_clip model with the image side Text2LIVE needs.

* image encoding at any H x W (Text2LIVE Appendix A.3), the patch position grid resampled to the image's
  (:mod:`t2l_core.clip.position_grid`; ``pos_grid="t2l-compat"`` reproduces the authors' transposed grid);
* the token sequence entering any block (the structure loss uses the tokens entering the last block,
  CLS included), and the intermediates of the image side (:meth:`ClipModel.embed_patches`,
  :meth:`ClipModel.run_blocks`, :meth:`ClipModel.run_blocks_with_attention`, :meth:`ClipModel.pool`);
* speed settings of the image side, open_clip style (:meth:`ClipModel.set_fused`,
  :meth:`ClipModel.set_autocast`, :meth:`ClipModel.set_grad_checkpointing`), on a :meth:`ClipModel.view`
  that shares the weights when the loaded model must stay as it is;
* text encoding with template banks, cached per string.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from typing import Optional, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from ..device import autocast
from .attention import residual_block, residual_block_with_probs, supports_block
from .patch_embedding import conv_patch_tokens, folded_patch_weights, is_patchify_conv, matmul_patch_tokens
from .pooling import pool, pools_cls_token
from .position_grid import interpolate_pos_grid
from .templates import as_prompt_list, expand

class ClipModel:
    """Frozen CLIP (open_clip ``CLIP``) in eval mode on a chosen device and dtype.

    Attributes: ``device``, ``dtype``, ``patch_size``, ``native_size``, ``embed_dim``, ``width`` (vision
    transformer width), ``num_blocks``, ``name``, ``pretrained``, ``config`` (open_clip model config dict), and
    the speed settings ``fused``, ``autocast_dtype``, ``grad_checkpointing`` (all off after loading; see
    :meth:`set_fused`, :meth:`set_autocast`, :meth:`set_grad_checkpointing`, :meth:`view`).
    """

    def __init__(self, model: torch.nn.Module, config: dict, name: str, pretrained: str | None,
                 tokenizer, mean: Sequence[float], std: Sequence[float], *,
                 device: torch.device, dtype: torch.dtype, source: str | None = None) -> None:
        visual = getattr(model, "visual", None)
        if visual is None or not hasattr(visual, "conv1") or not hasattr(visual, "positional_embedding"):
            raise ValueError(f"'{name}' is not a ViT CLIP: Text2LIVE needs a vision transformer (e.g. ViT-B-32).")
        if getattr(visual, "attn_pool", None) is not None:
            raise ValueError(f"'{name}' uses attentional pooling, which this pack does not support; use a plain ViT CLIP.")
        self.model = model.eval().requires_grad_(False).to(device=device, dtype=dtype)
        self.config = config
        self.name = name
        self.pretrained = pretrained
        self.source = source
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self.pos_grid = "correct"
        ps = visual.conv1.kernel_size
        self.patch_size = int(ps[0] if isinstance(ps, tuple) else ps)
        g = int(round((visual.positional_embedding.shape[0] - 1) ** 0.5))
        self.native_size = g * self.patch_size
        self.width = int(visual.conv1.out_channels)
        self.num_blocks = len(visual.transformer.resblocks)
        self.embed_dim = int(visual.proj.shape[1]) if visual.proj is not None else self.width
        self._mean = torch.tensor(mean, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device, dtype=torch.float32).view(1, 3, 1, 1)
        self._text_cache: dict[str, torch.Tensor] = {}
        self._weights_digest: str | None = None
        self._patch_matrix: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None  # weight, matrix, bias
        self.fused = False
        self.autocast_dtype: Optional[torch.dtype] = None
        self.grad_checkpointing = False

    # ------------------------------------------------------------------ identity
    def weights_digest(self) -> str:
        """SHA-256 of the loaded weights (names, dtypes, shapes, values as held on the device), computed on the
        first call and kept on this object; with :meth:`identity` it keys resumable checkpoints."""
        if getattr(self, "_weights_digest", None) is None:
            h = hashlib.sha256()
            for k, v in sorted(self.model.state_dict().items()):
                t = v.detach().to("cpu").contiguous()
                h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
                h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
            self._weights_digest = h.hexdigest()
        return self._weights_digest

    def identity(self) -> dict:
        """Everything about this CLIP that changes what a training run computes: the weights' digest, the
        weight dtype, the device class (CPU and CUDA kernels round differently), the open_clip config
        (e.g. QuickGELU), the normalisation and the position-grid mode."""
        return {"weights": self.weights_digest(), "dtype": str(self.dtype), "device": self.device.type,
                "config": self.config, "mean": self._mean.flatten().tolist(), "std": self._std.flatten().tolist(),
                "pos_grid": self.pos_grid}

    # ------------------------------------------------------------------ image side
    @property
    def visual(self) -> torch.nn.Module:
        """The open_clip vision transformer."""
        return self.model.visual

    def to(self, device: torch.device | str) -> "ClipModel":
        """Move the weights and caches to another device (in place).

        Args:
            device: the device.

        Returns:
            self.
        """
        device = torch.device(device)
        self.model.to(device)
        self._mean, self._std = self._mean.to(device), self._std.to(device)
        self._text_cache = {k: v.to(device) for k, v in self._text_cache.items()}
        self.device = device
        return self

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP's input normalisation.

        Args:
            images: [B,3,H,W] in 0..1.

        Returns:
            [B,3,H,W] normalised by the model's mean and std, in the model dtype on its device.
        """
        return ((images.to(self.device, torch.float32) - self._mean) / self._std).to(self.dtype)

    def _check_images(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"CLIP expects images [B,3,H,W] in 0..1, got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h < self.patch_size or w < self.patch_size:
            raise ValueError(f"image {h}x{w} is smaller than one CLIP patch ({self.patch_size} px)")

    def position_embedding(self, rows: int, cols: int, square: bool = True) -> torch.Tensor:
        """The position embeddings of an image's patch grid (:func:`interpolate_pos_grid`).

        Args:
            rows, cols: the patch grid (H // p, W // p).
            square: whether the image is square.

        Returns:
            [1 + rows*cols, width], CLS first.
        """
        pos = self.visual.positional_embedding
        patches = interpolate_pos_grid(pos[1:], rows, cols, self.pos_grid, square=square)
        return torch.cat([pos[:1], patches], dim=0)

    # ------------------------------------------------------------------ speed settings
    def set_fused(self, enabled: bool = True) -> None:
        """Compute the image side with fewer kernels, the same mathematics (:mod:`t2l_core.clip.attention`,
        :mod:`t2l_core.clip.patch_embedding`): the patch embedding as one matrix product, each standard block's
        attention through ``scaled_dot_product_attention`` instead of ``nn.MultiheadAttention`` (which, with
        gradients on, falls back to batched ``bmm`` projections and several layout copies), and in
        :meth:`encode_image` the last block for the CLS row only when the embedding reads nothing else
        (:attr:`cls_only_last_block`). Results equal the plain computation up to float rounding.

        Args:
            enabled: on or off.
        """
        self.fused = bool(enabled)

    def set_autocast(self, dtype: Optional[torch.dtype]) -> None:
        """Run :meth:`encode_image` and :meth:`image_tokens` under autocast (see :func:`t2l_core.device.autocast`).

        Args:
            dtype: the autocast dtype, or None for the weights' own dtype.
        """
        self.autocast_dtype = dtype

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """With gradients on, each block keeps only its input and recomputes its activations in the backward
        pass (same values, less memory, about one more forward of the blocks).

        Args:
            enable: on or off.
        """
        self.grad_checkpointing = bool(enable)

    def view(self, *, fused: bool = False, autocast_dtype: Optional[torch.dtype] = None,
             grad_checkpointing: bool = False) -> "ClipModel":
        """A second wrapper of the same weights, tokenizer and text cache with its own speed settings (this
        wrapper's are unchanged).

        Args:
            fused: :meth:`set_fused`.
            autocast_dtype: :meth:`set_autocast`.
            grad_checkpointing: :meth:`set_grad_checkpointing`.

        Returns:
            The view (all settings off by default: the plain computation).
        """
        other = copy.copy(self)
        other.set_fused(fused)
        other.set_autocast(autocast_dtype)
        other.set_grad_checkpointing(grad_checkpointing)
        return other

    @property
    def plain(self) -> bool:
        """True when every speed setting is off: the image side is open_clip's own computation."""
        return not (self.fused or self.grad_checkpointing or self.autocast_dtype is not None)

    @property
    def cls_only_last_block(self) -> bool:
        """Whether :meth:`encode_image` computes the last block for the CLS row only (its keys and values still
        from every token): fused, a standard batch-first block, and a tower whose embedding reads only the CLS
        token (:func:`t2l_core.clip.pooling.pools_cls_token`)."""
        tr = self.visual.transformer
        return (self.fused and getattr(tr, "batch_first", True) and supports_block(tr.resblocks[-1])
                and pools_cls_token(self.visual))

    # ------------------------------------------------------------------ image intermediates
    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """The token sequence entering the first block.

        Args:
            images: [B,3,H,W] in 0..1 (normalised here); leftover pixels beyond whole patches are dropped.

        Returns:
            [B, 1+rows*cols, width] after ``ln_pre``, CLS first, in the weights' dtype.
        """
        self._check_images(images)
        v = self.visual
        if self.fused and is_patchify_conv(v.conv1, self.patch_size):
            x, rows, cols = matmul_patch_tokens(images, *self._folded_patch_weights(), self.patch_size)
        else:
            x, rows, cols = conv_patch_tokens(v.conv1, self.normalize(images))
        b, _, c = x.shape
        cls = v.class_embedding.to(x.dtype).view(1, 1, c).expand(b, 1, c)
        square = images.shape[-2] == images.shape[-1]
        x = torch.cat([cls, x], dim=1) + self.position_embedding(rows, cols, square).to(x.dtype)
        return v.ln_pre(x)

    def run_blocks(self, tokens: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Apply blocks ``start..stop-1`` (fused and recomputed in the backward pass as the settings ask).

        Args:
            tokens: [B, T, width] batch-first tokens entering block ``start``.
            start, stop: block indices, 0 <= start <= stop <= :attr:`num_blocks`.

        Returns:
            [B, T, width], the tokens entering block ``stop``.
        """
        tr = self.visual.transformer
        blocks = tr.resblocks[start:stop]
        if not getattr(tr, "batch_first", True):
            x = tokens.transpose(0, 1)
            for blk in blocks:
                x = blk(x)
            return x.transpose(0, 1)
        recompute = self._recompute(tokens)
        for blk in blocks:
            fn = residual_block if self.fused and supports_block(blk) else _call_block
            tokens = checkpoint(fn, blk, tokens, use_reentrant=False) if recompute else fn(blk, tokens)
        return tokens

    def run_blocks_with_attention(self, tokens: torch.Tensor,
                                  start: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Apply blocks ``start..`` to the end with an explicit attention whose probabilities stay in the graph
        (:func:`t2l_core.clip.attention.residual_block_with_probs`; relevancy maps back-propagate to them).

        Args:
            tokens: [B, T, width] batch-first tokens entering block ``start``.
            start: the first block, 0 <= start < :attr:`num_blocks`.

        Returns:
            ``(final tokens [B, T, width], per block the attention probabilities [B, heads, T, T])``.
        """
        probs = []
        for blk in self.visual.transformer.resblocks[start:]:
            tokens, p = residual_block_with_probs(blk, tokens)
            probs.append(p)
        return tokens, probs

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """The image embeddings from the final tokens (``ln_post``, pooling, projection).

        Args:
            tokens: [B, T, width] after the last block.

        Returns:
            [B, D] unnormalised embeddings.
        """
        return pool(self.visual, tokens)

    def _block_index(self, block: int) -> int:
        idx = block if block >= 0 else self.num_blocks + block
        if not 0 <= idx < self.num_blocks:
            raise ValueError(f"block {block} is out of range for a CLIP with {self.num_blocks} blocks")
        return idx

    def _folded_patch_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`folded_patch_weights` of the frozen weights, kept until the weight (a view may be given
        another model) or its device or dtype changes."""
        w = self.visual.conv1.weight
        cached = self._patch_matrix
        if cached is None or cached[0] is not w or cached[1].device != w.device or cached[1].dtype != w.dtype:
            self._patch_matrix = (w, *folded_patch_weights(self.visual.conv1, self._mean, self._std))
        return self._patch_matrix[1], self._patch_matrix[2]

    def _recompute(self, x: torch.Tensor) -> bool:
        """Whether blocks on ``x`` recompute their activations in the backward pass."""
        return self.grad_checkpointing and torch.is_grad_enabled() and x.requires_grad

    def _run_to_pool(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Blocks ``start..`` to the end as :meth:`pool` needs them: [B, T, C] -> [B, T or 1, C]."""
        if start >= self.num_blocks or not self.cls_only_last_block:
            return self.run_blocks(x, start, self.num_blocks)
        x = self.run_blocks(x, start, self.num_blocks - 1)
        blk = self.visual.transformer.resblocks[-1]
        if self._recompute(x):
            return checkpoint(residual_block, blk, x, cls_only=True, use_reentrant=False)
        return residual_block(blk, x, cls_only=True)

    def _image_pass(self) -> contextlib.AbstractContextManager:
        """The context of :meth:`encode_image` and :meth:`image_tokens`: none on the plain computation, else
        the autocast setting (disabled when None)."""
        return contextlib.nullcontext() if self.plain else autocast(self.device, self.autocast_dtype)

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        """An image pass's result: in the weights' dtype on the plain computation, else fp32."""
        return x if self.plain else x.float()

    # ------------------------------------------------------------------ image passes
    def encode_image(self, images: torch.Tensor, *, tokens_block: int | None = None):
        """Embed images of any size.

        Args:
            images: [B,3,H,W] in 0..1 (normalised here). H and W need not be equal or multiples of the patch.
            tokens_block: if given, also return the tokens entering that block (-1 = last block).
        Returns:
            [B, D] unnormalised embeddings, or (embeddings, tokens [B, 1+N, width]); in the weights' dtype when
            every speed setting is off (:attr:`plain`), else fp32.
        """
        with self._image_pass():
            x = self.embed_patches(images)
            if tokens_block is None:
                return self._output(self.pool(self._run_to_pool(x, 0)))
            k = self._block_index(tokens_block)
            tokens = self.run_blocks(x, 0, k)
            emb = self.pool(self._run_to_pool(tokens, k))
        return self._output(emb), self._output(tokens)

    def image_tokens(self, images: torch.Tensor, block: int = -1) -> torch.Tensor:
        """The residual stream entering a block (the structure loss's tokens use the last block).

        Args:
            images: [B,3,H,W] in 0..1.
            block: the block index (-1 = last).

        Returns:
            [B, 1+rows*cols, width], CLS first; dtype as :meth:`encode_image`.
        """
        k = self._block_index(block)
        with self._image_pass():
            return self._output(self.run_blocks(self.embed_patches(images), 0, k))

    # ------------------------------------------------------------------ text side
    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed texts (no gradient), cached per string.

        Args:
            texts: N strings.

        Returns:
            [N, D] unnormalised embeddings.
        """
        texts = list(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            tokens = self.tokenizer(missing).to(self.device)
            with torch.inference_mode(False):
                emb = self.model.encode_text(tokens)
            for t, e in zip(missing, emb):
                self._text_cache[t] = e.detach().clone()
        return torch.stack([self._text_cache[t] for t in texts])

    def clear_text_cache(self) -> None:
        """Forget the cached text embeddings (each text is encoded again when next asked for)."""
        self._text_cache.clear()

    def text_bank(self, prompts: str | Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """Every prompt with every template, encoded (Text2LIVE Appendix A.2, text augmentations).

        Args:
            prompts: one prompt or several (see :func:`~t2l_core.clip.templates.as_prompt_list`).
            templates: T templates with one ``{}`` each.

        Returns:
            [P*T, D] in prompt-major order.
        """
        return self.encode_text(expand(as_prompt_list(prompts), tuple(templates)))

    def logit_scale(self) -> torch.Tensor:
        """CLIP's learnt logit scale (exp of the stored log), a scalar."""
        return self.model.logit_scale.exp()

    def describe(self) -> dict:
        """A summary for users (printed by ``clip-info``)."""
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            "architecture": self.name,
            "pretrained": self.pretrained,
            "source": self.source,
            "parameters": n_params,
            "embed_dim": self.embed_dim,
            "vision": {"patch_size": self.patch_size, "native_size": self.native_size,
                       "width": self.width, "blocks": self.num_blocks},
            "quick_gelu": bool(self.config.get("quick_gelu", False)),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
        }


def _call_block(blk: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A block called as it is (open_clip's own computation)."""
    return blk(x)
