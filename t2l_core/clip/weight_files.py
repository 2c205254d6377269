"""CLIP weight files: reading a state dict without running pickled code, telling what it holds (our format
with its config, OpenAI's layout, or bare open_clip weights), and writing our format.

Our format is a safetensors file whose metadata holds the open_clip config, so the file alone is enough.
OpenAI's ``.pt`` files are TorchScript archives (or plain state dicts in their layout). Pickled Python objects
are refused: ``torch.load`` is only ever called with ``weights_only=True``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from ..io.safetensors_files import write_tensors
from .architectures import architecture_config
from .model import ClipModel

FORMAT_KEY = "t2l_format"
FORMAT_NAME = "open_clip-v1"
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")


def _remedy(select_hint: str) -> str:
    return "Download or convert the weights again" + (f", {select_hint}" if select_hint else "") + "."


def _empty_file_error(path: Path, remedy: str) -> ValueError:
    return ValueError(f"CLIP weights file '{path}' is empty (0 bytes): an interrupted download or copy. {remedy}")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def _read_torchscript(path: Path, remedy: str) -> dict:
    """The tensors of a TorchScript archive (OpenAI's released ``.pt`` files); its code is never used."""
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # a truncated archive
        raise ValueError(f"CLIP weights file '{path}' cannot be read ({type(exc).__name__}): it is truncated "
                         f"or damaged. {remedy}") from None
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _read_pickled_state_dict(path: Path) -> dict:
    """A plain state dict saved with ``torch.save`` (``weights_only=True``; ``module.`` prefixes dropped)."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError and friends
        raise ValueError(
            f"refusing to load '{path}': it is truncated or contains pickled Python objects, not plain weights "
            f"({type(exc).__name__}). Use a .safetensors file, an OpenAI TorchScript .pt, or a state dict saved "
            "with torch.save(model.state_dict())."
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"'{path}' does not hold a CLIP state dict (a mapping of names to tensors).")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def read_state_dict(path: str | Path, select_hint: str = "") -> tuple[dict, dict]:
    """Read weights from a file without executing pickled code.

    Args:
        path: a ``.safetensors``/``.sft`` file, an OpenAI TorchScript archive, or a ``torch.save`` state dict.
        select_hint: what to do once the file is replaced, in the caller's words (ends error messages).

    Returns:
        (state_dict, metadata): metadata is the safetensors header metadata (empty for other files;
        ``{"openai": "1"}`` for OpenAI TorchScript archives and state dicts). An empty, truncated or
        unreadable file raises a ValueError naming it.
    """
    path = Path(path)
    remedy = _remedy(select_hint)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from ..io.safetensors_files import read_tensors

        return read_tensors(path, "CLIP weights", remedy)
    if path.is_file() and path.stat().st_size == 0:
        raise _empty_file_error(path, remedy)
    if _is_torchscript(path):
        return _read_torchscript(path, remedy), {"openai": "1"}
    sd = _read_pickled_state_dict(path)
    return sd, ({"openai": "1"} if "input_resolution" in sd else {})


def openai_config(sd: dict) -> dict:
    """The open_clip config of an OpenAI-layout ViT state dict, inferred from tensor shapes as open_clip's
    OpenAI loader does.

    Args:
        sd: the state dict (a ResNet CLIP raises ValueError).

    Returns:
        The open_clip config (QuickGELU).
    """
    if "visual.proj" not in sd:
        raise ValueError("this OpenAI checkpoint is a ResNet CLIP; Text2LIVE needs a ViT CLIP (e.g. ViT-B/32).")
    width = sd["visual.conv1.weight"].shape[0]
    layers = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = sd["ln_final.weight"].shape[0]
    return {
        "embed_dim": int(sd["text_projection"].shape[1]),
        "quick_gelu": True,  # OpenAI's models were trained with QuickGELU activations
        "vision_cfg": {"image_size": int(patch * grid), "layers": layers, "width": int(width), "patch_size": int(patch)},
        "text_cfg": {
            "context_length": int(sd["positional_embedding"].shape[0]),
            "vocab_size": int(sd["token_embedding.weight"].shape[0]),
            "width": int(text_width),
            "heads": int(text_width // 64),
            "layers": len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks")}),
        },
    }


def _openai_arch_name(cfg: dict) -> str:
    v = cfg["vision_cfg"]
    size = {768: "B", 1024: "L", 1280: "H"}.get(v["width"], f"w{v['width']}")
    res = "" if v["image_size"] == 224 else f"-{v['image_size']}"
    return f"ViT-{size}-{v['patch_size']}{res}-quickgelu"


def identify_weights(path: Path, sd: dict, meta: dict, architecture: str | None) -> tuple[dict, str, str | None]:
    """What a state dict read by :func:`read_state_dict` is: our format (config in ``meta``), OpenAI's layout
    (config from the shapes; OpenAI's extra entries are removed from ``sd``), or bare weights of
    ``architecture`` (required then, else a ValueError says to give it).

    Args:
        path: the file (named in messages).
        sd: its state dict.
        meta: its metadata from :func:`read_state_dict`.
        architecture: None, or the open_clip architecture of bare weights.

    Returns:
        (open_clip config, architecture name, pretrained tag or None).
    """
    if FORMAT_KEY in meta:
        return json.loads(meta["open_clip_config"]), meta.get("architecture", path.stem), meta.get("pretrained") or None
    if meta.get("openai"):
        for key in ("input_resolution", "context_length", "vocab_size"):
            sd.pop(key, None)
        cfg = openai_config(sd)
        return cfg, _openai_arch_name(cfg), "openai"
    if not architecture:
        raise ValueError(
            f"'{path.name}' holds bare weights without a model config: also give the architecture "
            "(e.g. ViT-B-32, or ViT-B-32-quickgelu for OpenAI weights), or convert it once with "
            "`python -m t2l_core clip-convert`."
        )
    return architecture_config(architecture), architecture, None


def save_clip(clip: ClipModel, path: str | Path, note: str = "") -> Path:
    """Write ``clip`` in our format: fp32 weights in a safetensors file whose metadata holds the open_clip
    config, the architecture, the pretrained tag and ``note`` (atomic).

    Args:
        clip: the CLIP.
        path: the file (folders are created).
        note: stored in the metadata (e.g. that a file is not a real model).

    Returns:
        The path written.
    """
    sd = {k: v.detach().to("cpu", torch.float32) for k, v in clip.model.state_dict().items()}
    meta = {
        FORMAT_KEY: FORMAT_NAME,
        "open_clip_config": json.dumps(clip.config),
        "architecture": clip.name,
        "pretrained": clip.pretrained or "",
        "note": note,
    }
    return write_tensors(path, sd, meta)


def read_file_info(path: str | Path) -> dict:
    """A weights file's metadata without building the model.

    Args:
        path: the weights file.

    Returns:
        {"file": path} plus, for safetensors files, "tensors" (count) and the header metadata
        (architecture, note, ...).
    """
    path = Path(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors import safe_open

        from ..io.safetensors_files import read_metadata

        meta = read_metadata(path, "CLIP weights")
        with safe_open(str(path), framework="pt") as f:
            n = len(list(f.keys()))
        return {"file": str(path), "tensors": n, **meta}
    return {"file": str(path)}


def check_weights_file(path: str | Path, select_hint: str = "") -> None:
    """Refuse a file that cannot hold weights (empty, or a safetensors file whose header does not read) with a
    ValueError naming it. Cheap (reads the header only), for validating before any work starts.

    Args:
        path: the weights file.
        select_hint: what to do once the file is replaced, in the caller's words (ends the message).
    """
    path = Path(path)
    remedy = _remedy(select_hint)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from ..io.safetensors_files import read_metadata

        read_metadata(path, "CLIP weights", remedy)
    elif path.is_file() and path.stat().st_size == 0:
        raise _empty_file_error(path, remedy)
