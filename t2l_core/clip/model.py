"""A frozen open_clip model with the image side Text2LIVE needs.

* image encoding at any H x W (Text2LIVE Appendix A.3): the patch position grid is interpolated bicubically to
  (H/p rows x W/p columns), DINO style (scale factors (rows+0.1)/g and (cols+0.1)/g), for every input
  that is not square (as the authors do), and the stock embedding is used untouched for square inputs with
  the native g x g grid;
* the token sequence entering any block (the structure loss uses the tokens entering the last block,
  CLS included);
* text encoding with template banks, cached per string.

The authors' code transposes the interpolated grid for non-square inputs; that is a bug
and the correct mapping is the default. ``pos_grid="t2l-compat"`` reproduces it for comparisons.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
import torch.nn.functional as F

from .templates import as_prompt_list, expand

POS_GRID_MODES = ("correct", "t2l-compat")


def interpolate_pos_grid(pos_patches: torch.Tensor, rows: int, cols: int, mode: str = "correct",
                         square: bool = True) -> torch.Tensor:
    """Resample a square grid of patch position embeddings.

    Args:
        pos_patches: [g*g, C] embeddings of a g x g grid, row-major.
        rows, cols: the patch grid of the image (H // p, W // p).
        mode: ``correct`` returns the grid resampled to rows x cols; ``t2l-compat`` reproduces the authors'
            transposed interpolation (a cols x rows grid flattened and read as rows x cols).
        square: whether the image is square (H == W). As in the authors' code, the stock grid is used
            untouched only for a square image with a g x g grid; a non-square image whose grid is still
            g x g (e.g. 224x250 at patch 32) is resampled with the same scale factors as any other size.
    Returns:
        [rows*cols, C], row-major over (rows, cols).
    """
    n, dim = pos_patches.shape
    g = int(round(n**0.5))
    if g * g != n:
        raise ValueError(f"position embedding has {n} patch entries, not a square grid")
    if mode not in POS_GRID_MODES:
        raise ValueError(f"pos_grid must be one of {POS_GRID_MODES}, got '{mode}'")
    if rows == g and cols == g and square:
        return pos_patches
    out_r, out_c = (rows, cols) if mode == "correct" else (cols, rows)
    grid = pos_patches.reshape(1, g, g, dim).permute(0, 3, 1, 2).float()
    # DINO's +0.1 keeps floor(g * scale) == target; the scale itself sets the sampling positions.
    grid = F.interpolate(grid, scale_factor=((out_r + 0.1) / g, (out_c + 0.1) / g), mode="bicubic", align_corners=False)
    if grid.shape[-2:] != (out_r, out_c):
        raise RuntimeError(f"position grid interpolation produced {tuple(grid.shape[-2:])}, expected {(out_r, out_c)}")
    return grid.permute(0, 2, 3, 1).reshape(out_r * out_c, dim).to(pos_patches.dtype)


class ClipModel:
    """Frozen CLIP (open_clip ``CLIP``) in eval mode on a chosen device and dtype.

    Attributes: ``device``, ``dtype``, ``patch_size``, ``native_size``, ``embed_dim``, ``width`` (vision
    transformer width), ``num_blocks``, ``name``, ``pretrained``, ``config`` (open_clip model config dict).
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

    def _embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] (0..1) -> token sequence after ln_pre, [B, 1+rows*cols, width]."""
        self._check_images(images)
        v = self.visual
        x = v.conv1(self.normalize(images))  # [B, width, rows, cols]; leftover pixels are dropped
        b, c, rows, cols = x.shape
        x = x.reshape(b, c, rows * cols).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).view(1, 1, c).expand(b, 1, c)
        square = images.shape[-2] == images.shape[-1]
        x = torch.cat([cls, x], dim=1) + self.position_embedding(rows, cols, square).to(x.dtype)
        return v.ln_pre(x)

    def _run_blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Apply resblocks[start:stop] to a batch-first token sequence."""
        tr = self.visual.transformer
        batch_first = getattr(tr, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        for blk in tr.resblocks[start:stop]:
            x = blk(x)
        if not batch_first:
            x = x.transpose(0, 1)
        return x

    def _block_index(self, block: int) -> int:
        idx = block if block >= 0 else self.num_blocks + block
        if not 0 <= idx < self.num_blocks:
            raise ValueError(f"block {block} is out of range for a CLIP with {self.num_blocks} blocks")
        return idx

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """Final tokens [B, T, width] -> image embeddings [B, D] (ln_post on CLS, projection)."""
        v = self.visual
        pooled, _ = v._pool(x)
        return pooled @ v.proj if v.proj is not None else pooled

    def encode_image(self, images: torch.Tensor, *, tokens_block: int | None = None):
        """Embed images of any size.

        Args:
            images: [B,3,H,W] in 0..1 (normalised here). H and W need not be equal or multiples of the patch.
            tokens_block: if given, also return the tokens entering that block (-1 = last block).
        Returns:
            [B, D] unnormalised embeddings, or (embeddings, tokens [B, 1+N, width]).
        """
        x = self._embed_patches(images)
        if tokens_block is None:
            return self._head(self._run_blocks(x, 0, self.num_blocks))
        k = self._block_index(tokens_block)
        x = self._run_blocks(x, 0, k)
        tokens = x
        x = self._run_blocks(x, k, self.num_blocks)
        return self._head(x), tokens

    def image_tokens(self, images: torch.Tensor, block: int = -1) -> torch.Tensor:
        """The residual stream entering a block (the structure loss's tokens use the last block).

        Args:
            images: [B,3,H,W] in 0..1.
            block: the block index (-1 = last).

        Returns:
            [B, 1+rows*cols, width], CLS first.
        """
        k = self._block_index(block)
        return self._run_blocks(self._embed_patches(images), 0, k)

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
