"""CLIPs with random weights (NOT real models): a tiny one for tests and offline pipeline checks, and a
full-size one that costs what the real one costs, for benchmarks without downloads."""

from __future__ import annotations

import torch

from .architectures import architecture_config, build_model, wrap_model
from .model import ClipModel

TINY_NOTE = "NOT A REAL MODEL: tiny randomly initialised CLIP for tests and offline pipeline checks."


def tiny_clip_config(patch_size: int = 16, image_size: int | None = None, layers: int = 3, width: int = 64,
                     embed_dim: int = 32, text_layers: int = 2, text_width: int = 32) -> dict:
    """An open_clip config for a tiny ViT CLIP (the real tokenizer vocabulary, a few small layers).

    Args:
        patch_size: the ViT patch size (px).
        image_size: the native input size (px), a multiple of ``patch_size``; default 4 patches.
        layers, width: the vision transformer's depth and width.
        embed_dim: the joint embedding size.
        text_layers, text_width: the text transformer's depth and width.

    Returns:
        The open_clip config.
    """
    image_size = image_size or patch_size * 4
    if image_size % patch_size:
        raise ValueError("image_size must be a multiple of patch_size")
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": layers, "width": width, "patch_size": patch_size,
                       "head_width": max(16, width // 2)},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": text_width, "heads": 2, "layers": text_layers},
    }


def seeded_model(cfg: dict, seed: int) -> torch.nn.Module:
    """A randomly initialised open_clip model, reproducible by its seed (the global RNG is left as it was).

    Args:
        cfg: the open_clip config.
        seed: the weights' seed.

    Returns:
        The model.
    """
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return build_model(cfg)
    finally:
        torch.random.set_rng_state(state)


def build_tiny_clip(patch_size: int = 16, seed: int = 0, *, device: str | torch.device = "cpu",
                    precision: str = "fp32", **cfg_kwargs) -> ClipModel:
    """A tiny randomly initialised CLIP (NOT a real model) for tests, CI and offline pipeline checks.

    Args:
        patch_size, **cfg_kwargs: see :func:`tiny_clip_config`.
        seed: the weights' seed.
        device, precision: see :func:`~t2l_core.clip.architectures.wrap_model`.

    Returns:
        The frozen :class:`ClipModel` (named ``tiny-vit-p<patch_size>``, pretrained ``random-tiny``).
    """
    cfg = tiny_clip_config(patch_size=patch_size, **cfg_kwargs)
    return wrap_model(seeded_model(cfg, seed), cfg, f"tiny-vit-p{patch_size}", "random-tiny", None, device, precision)


def build_random_clip(arch: str = "ViT-B-32-quickgelu", seed: int = 0, *, device: str | torch.device = "cpu",
                      precision: str = "fp32") -> ClipModel:
    """A full-size CLIP with random weights (NOT a real model): it costs exactly what the real one costs, so
    benchmarks can run without downloading weights.

    Args:
        arch: an open_clip architecture name.
        seed: the weights' seed.
        device, precision: see :func:`~t2l_core.clip.architectures.wrap_model`.

    Returns:
        The frozen :class:`ClipModel` (pretrained ``random``).
    """
    cfg = architecture_config(arch)
    return wrap_model(seeded_model(cfg, seed), cfg, arch, "random", None, device, precision)
