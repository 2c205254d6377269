"""Loading a frozen CLIP the ways users have its weights, through open_clip.

Sources, in the order :func:`load_clip` tries them:

1. a file path: our own ``.safetensors`` (the open_clip config is stored in the file's metadata, so the file
   alone is enough), an OpenAI ``.pt`` (TorchScript archive or plain state dict), or an open_clip state dict
   (``.bin``/``.pt``/``.safetensors``) for a named architecture (:mod:`t2l_core.clip.weight_files`);
2. a file name inside one of the searched model folders (ComfyUI's ``models/text2live`` and friends);
3. an open_clip architecture + pretrained tag (``ViT-B-32`` + ``openai`` is the paper's model, Text2LIVE
   Appendix A.3): well-known file names for that pair are looked up in the model folders first, then
   open_clip's own cache/download (:mod:`t2l_core.clip.search`).

When nothing is found the error names every place searched and the exact file to put where.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from .architectures import (OPENAI_MEAN, OPENAI_STD, architecture_config, build_model, open_clip_module,
                            pretrained_choices, wrap_model)
from .model import ClipModel
from .search import (CLI_SELECT_HINT, ClipWeightsNotFound, default_search_dirs, download_host, expected_files,
                     file_architecture, file_name_architecture, find_local_weights, find_weights_file,
                     missing_weights_message, weights_obtainable)
from .tiny import TINY_NOTE, build_random_clip, build_tiny_clip, tiny_clip_config
from .weight_files import (FORMAT_KEY, FORMAT_NAME, WEIGHT_SUFFIXES, check_weights_file, identify_weights,
                           read_file_info, read_state_dict, save_clip)

# what callers import from here (the loading entry points and the names of the modules above they use)
__all__ = ["CLI_SELECT_HINT", "ClipWeightsNotFound", "FORMAT_KEY", "FORMAT_NAME", "TINY_NOTE", "WEIGHT_SUFFIXES",
           "architecture_config", "build_model", "build_random_clip", "build_tiny_clip", "check_weights_file",
           "default_search_dirs", "expected_files", "find_local_weights", "load_clip", "load_clip_file",
           "missing_weights_message", "pretrained_choices", "read_file_info", "read_state_dict", "save_clip",
           "tiny_clip_config", "weights_obtainable"]


def _load_weights(model: torch.nn.Module, sd: dict, path: Path, name: str) -> None:
    """Load ``sd`` (cast to fp32) into ``model``; a mismatch raises ValueError saying to pick another
    architecture."""
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    mismatch = f"'{path.name}' does not match the {name} architecture"
    hint = "Pick the architecture the file was trained with."
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).split("\n\t")[1:2]
        raise ValueError(f"{mismatch}: {first[0] if first else exc}. {hint}") from None
    missing = [k for k in missing if k != "attn_mask"]
    if missing or unexpected:
        raise ValueError(f"{mismatch}: {len(missing)} missing and {len(unexpected)} unexpected weights "
                         f"(first: {(missing + unexpected)[:3]}). {hint}")


def load_clip_file(path: str | Path, architecture: str | None = None, *, device: str | torch.device = "auto",
                   precision: str = "fp32", select_hint: str = "") -> ClipModel:
    """Load CLIP weights from one file.

    Args:
        path: our ``.safetensors`` (carries its config), an OpenAI ``.pt`` (recognised by its layout), or any
            other state dict of ``architecture``.
        architecture: an open_clip name such as ``ViT-B-32``, needed for bare state dicts (OpenAI weights in
            open_clip layout need ``ViT-B-32-quickgelu``); None: taken from a file named after its pretrained
            pair (``ViT-B-32-openai.safetensors``, the name the example workflows download it under).
        device: "auto", "cpu", "cuda[:N]" or a device.
        precision: "fp32", "bf16" or "fp16".
        select_hint: what to do once the file is replaced, in the caller's words (ends error messages).

    Returns:
        The frozen :class:`ClipModel`.
    """
    path = Path(path)
    if not path.is_file():
        raise ClipWeightsNotFound(f"CLIP weights file not found: {path}" + (f"; {select_hint}." if select_hint else ""))
    sd, meta = read_state_dict(path, select_hint)
    cfg, name, pretrained = identify_weights(path, sd, meta, architecture or file_name_architecture(path.name))
    model = build_model(cfg)
    _load_weights(model, sd, path, name)
    return wrap_model(model, cfg, name, pretrained, str(path), device, precision)


def _load_pretrained(arch: str, tag: str, dirs: list[Path], device: str | torch.device, precision: str,
                     allow_download: bool, select_hint: str) -> ClipModel:
    """``arch`` + ``tag`` through open_clip's cache or download; ClipWeightsNotFound says what to put where."""
    from open_clip.pretrained import get_pretrained_cfg

    pcfg = get_pretrained_cfg(arch, tag)
    if not pcfg:
        tags = open_clip_module().list_pretrained_tags_by_model(arch)
        raise ValueError(f"'{tag}' is not a pretrained tag of {arch}; known tags: {', '.join(tags) or 'none'}")
    if not allow_download:
        raise ClipWeightsNotFound(missing_weights_message(arch, tag, dirs, "downloads disabled", select_hint))
    if not weights_obtainable(arch, tag):
        raise ClipWeightsNotFound(missing_weights_message(arch, tag, dirs, f"offline: {download_host(pcfg)} is not reachable",
                                                          select_hint))
    try:
        model = open_clip_module().create_model(arch, pretrained=tag, force_quick_gelu=bool(pcfg.get("quick_gelu")),
                                                weights_only=True, device="cpu")
    except Exception as exc:  # offline, blocked, interrupted download
        raise ClipWeightsNotFound(missing_weights_message(arch, tag, dirs, f"{type(exc).__name__}: {str(exc)[:200]}",
                                                          select_hint)) from exc
    cfg = architecture_config(arch)
    if pcfg.get("quick_gelu"):
        cfg["quick_gelu"] = True
    return wrap_model(model, cfg, arch, tag, f"open_clip:{arch}:{tag}", device, precision,
                      pcfg.get("mean", OPENAI_MEAN), pcfg.get("std", OPENAI_STD))


def load_clip(name_or_path: str, pretrained: str | None = None, *, device: str | torch.device = "auto",
              precision: str = "fp32", search_dirs: Sequence[str | Path] | None = None,
              allow_download: bool = True, select_hint: str = CLI_SELECT_HINT) -> ClipModel:
    """Load a frozen CLIP.

    Args:
        name_or_path: a weights file, a file name inside ``search_dirs``, ``ARCH:tag``, or an architecture
            name with ``pretrained``.
        pretrained: the pretrained tag for an architecture name (default ``openai``), or the architecture of
            a bare state dict file.
        device: "auto", "cpu", "cuda[:N]" or a device.
        precision: "fp32", "bf16" or "fp16".
        search_dirs: the model folders (default :func:`default_search_dirs`).
        allow_download: let open_clip download missing weights.
        select_hint: ends the messages about missing or damaged files (what to do, in the caller's words).

    Returns:
        The frozen :class:`ClipModel`.
    """
    if not name_or_path or not str(name_or_path).strip():
        raise ValueError("no CLIP model given: pass a weights file or an architecture such as ViT-B-32:openai")
    dirs = [Path(d) for d in (search_dirs if search_dirs is not None else default_search_dirs())]
    if Path(name_or_path).expanduser().suffix.lower() in WEIGHT_SUFFIXES:
        return load_clip_file(find_weights_file(name_or_path, dirs, select_hint), pretrained, device=device,
                              precision=precision, select_hint=select_hint)
    arch, _, tag = str(name_or_path).partition(":")
    tag = tag or pretrained or "openai"
    arch = arch.replace("/", "-")
    architecture_config(arch)  # clear error for unknown names
    local = find_local_weights(arch, tag, dirs)
    if local is not None:
        return load_clip_file(local, file_architecture(arch, tag), device=device, precision=precision,
                              select_hint=select_hint)
    return _load_pretrained(arch, tag, dirs, device, precision, allow_download, select_hint)
