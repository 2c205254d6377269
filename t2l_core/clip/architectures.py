"""open_clip architectures: their model configs, building a model from a config, and wrapping a model as the
frozen :class:`~t2l_core.clip.model.ClipModel` (OpenAI's image normalisation, the architecture's tokenizer)."""

from __future__ import annotations

import json
from typing import Sequence

import torch

from ..device import resolve_device, resolve_dtype
from .model import ClipModel

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def open_clip_module():
    """The ``open_clip`` module (imported on first use)."""
    import open_clip

    return open_clip


def architecture_config(name: str) -> dict:
    """The open_clip model config of an architecture.

    Args:
        name: an open_clip name (``ViT-B-32``, ``ViT-B-32-quickgelu``, ...; ``/`` is read as ``-``).

    Returns:
        A copy of the config (a plain JSON dict). An unknown name raises ValueError listing known ViTs.
    """
    oc = open_clip_module()
    cfg = oc.get_model_config(name.replace("/", "-"))
    if cfg is None:
        raise ValueError(f"unknown CLIP architecture '{name}'. Known ViT architectures include: "
                         + ", ".join(n for n in oc.list_models() if n.startswith("ViT-B") or n.startswith("ViT-L"))[:600])
    return json.loads(json.dumps(cfg))


def pretrained_choices() -> list[str]:
    """The pretrained plain ViT CLIPs open_clip knows.

    Returns:
        ``ARCH:tag`` strings (e.g. ``ViT-B-32:openai``, the paper's model).
    """
    oc = open_clip_module()
    out = []
    for arch, tag in oc.list_pretrained():
        cfg = oc.get_model_config(arch) or {}
        vision = cfg.get("vision_cfg", {})
        if arch.startswith("ViT-") and "timm_model_name" not in vision and not cfg.get("custom_text") \
                and "hf_model_name" not in cfg.get("text_cfg", {}) and "multimodal_cfg" not in cfg:
            out.append(f"{arch}:{tag}")
    return out


def build_model(cfg: dict) -> torch.nn.Module:
    """An open_clip model from a config, randomly initialised (from the global RNG).

    Args:
        cfg: an open_clip model config (CoCa configs raise ValueError).

    Returns:
        A ``CLIP``, or a ``CustomTextCLIP`` for configs with a custom text tower.
    """
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = dict(cfg)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    if "multimodal_cfg" in cfg:
        raise ValueError("CoCa models are not supported; use a plain ViT CLIP such as ViT-B-32.")
    return (CustomTextCLIP if custom else CLIP)(**cfg)


def _tokenizer(name: str, cfg: dict):
    oc = open_clip_module()
    ctx = cfg.get("text_cfg", {}).get("context_length", 77)
    known = name in oc.list_models()
    return oc.get_tokenizer(name if known else "", context_length=ctx)


def wrap_model(model: torch.nn.Module, cfg: dict, name: str, pretrained: str | None, source: str | None,
               device: str | torch.device, precision: str, mean: Sequence[float] = OPENAI_MEAN,
               std: Sequence[float] = OPENAI_STD) -> ClipModel:
    """Freeze an open_clip model as a :class:`ClipModel`.

    Args:
        model: the open_clip model (its weights are cast to fp32 first).
        cfg: its open_clip config.
        name: the architecture name (also picks the tokenizer).
        pretrained: the pretrained tag, None for weights of unknown origin.
        source: where the weights came from (a path or ``open_clip:ARCH:tag``), None for random ones.
        device: "auto", "cpu", "cuda[:N]" or a device.
        precision: "fp32", "bf16" or "fp16" (the weights' dtype).
        mean, std: the image normalisation (per RGB channel).

    Returns:
        The frozen :class:`ClipModel` in eval mode.
    """
    dev = resolve_device(device)
    dtype = resolve_dtype(precision, dev)
    return ClipModel(model.float(), cfg, name, pretrained, _tokenizer(name, cfg), mean, std,
                     device=dev, dtype=dtype, source=source)
