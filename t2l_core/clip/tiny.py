"""CLIPs with random weights (NOT real models): a tiny one for tests and offline pipeline checks, and a
full-size one that costs what the real one costs, for benchmarks without downloads."""

from __future__ import annotations

import math

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
    """A randomly initialised open_clip model, reproducible by its seed and the same bytes on every CPU (the
    global RNG is left as it was).

    torch's random initialisers compute with vectorised float maths whose last bits differ between CPUs, so
    every parameter that is not a constant is drawn again from integers: uniform, with the standard deviation
    of open_clip's initialisation rounded to a power of two. Integer draws and exact scalings give the same
    weights everywhere, so the weights' content hash (part of every checkpoint key) is the same everywhere.

    Args:
        cfg: the open_clip config.
        seed: the weights' seed.

    Returns:
        The model.
    """
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build_model(cfg)
    finally:
        torch.random.set_rng_state(state)
    gen = torch.Generator().manual_seed(seed)
    steps = 1 << 12
    with torch.no_grad():
        for p in model.parameters():
            values = p.detach().double()
            if values.numel() < 2 or bool(values.min() == values.max()):
                continue  # constants (LayerNorm weights and biases, logit scale) are exact already
            std = 2.0 ** round(math.log2(float(values.std())))
            draws = torch.randint(-steps, steps + 1, p.shape, generator=gen).to(p.dtype)
            p.copy_(draws * (std * math.sqrt(3.0) / steps))  # uniform on [-sqrt(3) std, sqrt(3) std]
    return model


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
