"""Loading CLIP weights the ways users have them, through open_clip.

Sources, in the order ``load_clip`` tries them:

1. a file path: our own ``.safetensors`` (the open_clip model config is stored in the file's metadata, so the
   file alone is enough), an OpenAI ``.pt`` (TorchScript archive or plain state dict), or an open_clip state
   dict (``.bin``/``.pt``/``.safetensors``) for a named architecture;
2. a file name inside one of the searched model folders (ComfyUI's ``models/text2live`` and friends);
3. an open_clip architecture + pretrained tag (``ViT-B-32`` + ``openai`` is the paper's model): well-known file
   names for that pair are looked up in the model folders first, then open_clip's own cache/download.

When nothing is found the error names every place searched and the exact file to put where.
Pickled Python objects are refused: ``torch.load`` is only ever called with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Sequence

import torch

from .model import ClipModel
from ..device import resolve_device, resolve_dtype

FORMAT_KEY = "t2l_format"
FORMAT_NAME = "open_clip-v1"
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TINY_NOTE = "NOT A REAL MODEL: tiny randomly initialised CLIP for tests and offline pipeline checks."


class ClipWeightsNotFound(FileNotFoundError):
    """Raised when no weights could be found; the message says where we looked and what to put where."""


# ---------------------------------------------------------------------------------------------- configs
def _open_clip():
    import open_clip

    return open_clip


def architecture_config(name: str) -> dict:
    """The open_clip model config for an architecture name (``ViT-B-32``, ``ViT-B-32-quickgelu``, ...)."""
    oc = _open_clip()
    cfg = oc.get_model_config(name.replace("/", "-"))
    if cfg is None:
        raise ValueError(f"unknown CLIP architecture '{name}'. Known ViT architectures include: "
                         + ", ".join(n for n in oc.list_models() if n.startswith("ViT-B") or n.startswith("ViT-L"))[:600])
    return json.loads(json.dumps(cfg))


def pretrained_choices() -> list[str]:
    """``ARCH:tag`` pairs open_clip knows for plain ViT CLIPs (e.g. ``ViT-B-32:openai``)."""
    oc = _open_clip()
    out = []
    for arch, tag in oc.list_pretrained():
        cfg = oc.get_model_config(arch) or {}
        vision = cfg.get("vision_cfg", {})
        if arch.startswith("ViT-") and "timm_model_name" not in vision and not cfg.get("custom_text") \
                and "hf_model_name" not in cfg.get("text_cfg", {}) and "multimodal_cfg" not in cfg:
            out.append(f"{arch}:{tag}")
    return out


def _build_model(cfg: dict) -> torch.nn.Module:
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = dict(cfg)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    if "multimodal_cfg" in cfg:
        raise ValueError("CoCa models are not supported; use a plain ViT CLIP such as ViT-B-32.")
    return (CustomTextCLIP if custom else CLIP)(**cfg)


def _tokenizer(name: str, cfg: dict):
    oc = _open_clip()
    ctx = cfg.get("text_cfg", {}).get("context_length", 77)
    known = name in oc.list_models()
    return oc.get_tokenizer(name if known else "", context_length=ctx)


def _wrap(model: torch.nn.Module, cfg: dict, name: str, pretrained: str | None, source: str | None,
          device: str | torch.device, precision: str, mean=OPENAI_MEAN, std=OPENAI_STD) -> ClipModel:
    dev = resolve_device(device)
    dtype = resolve_dtype(precision, dev)
    return ClipModel(model.float(), cfg, name, pretrained, _tokenizer(name, cfg), mean, std,
                     device=dev, dtype=dtype, source=source)


# ---------------------------------------------------------------------------------------------- files
def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def read_state_dict(path: str | Path, select_hint: str = "") -> tuple[dict, dict]:
    """Read weights from a file without executing pickled code.

    Returns (state_dict, metadata). Metadata is the safetensors header metadata (empty for other files;
    ``{"openai": "1"}`` for OpenAI TorchScript archives/state dicts). An empty, truncated or unreadable file
    raises a ValueError naming it; ``select_hint`` (what to do, in the caller's words) ends the message.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    remedy = "Download or convert the weights again" + (f", {select_hint}" if select_hint else "") + "."
    if suffix in (".safetensors", ".sft"):
        from ..io.safetensors_files import read_tensors

        return read_tensors(path, "CLIP weights", remedy)
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"CLIP weights file '{path}' is empty (0 bytes): an interrupted download or copy. {remedy}")
    if _is_torchscript(path):
        # OpenAI's released .pt files are TorchScript archives; only their tensors are used.
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # a truncated archive
            raise ValueError(f"CLIP weights file '{path}' cannot be read ({type(exc).__name__}): it is truncated "
                             f"or damaged. {remedy}") from None
        return {k: v.detach().clone() for k, v in module.state_dict().items()}, {"openai": "1"}
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
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}
    meta = {"openai": "1"} if "input_resolution" in sd else {}
    return sd, meta


def _openai_config(sd: dict) -> dict:
    """Infer the open_clip config of an OpenAI-layout state dict (as open_clip's OpenAI loader does)."""
    if "visual.proj" not in sd:
        raise ValueError("this OpenAI checkpoint is a ResNet CLIP; Text2LIVE needs a ViT CLIP (e.g. ViT-B/32).")
    width = sd["visual.conv1.weight"].shape[0]
    layers = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = sd["ln_final.weight"].shape[0]
    return {
        "embed_dim": int(sd["text_projection"].shape[1]),
        "quick_gelu": True,  # OpenAI models were trained with QuickGELU (open_clip issue #771)
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


def load_clip_file(path: str | Path, architecture: str | None = None, *, device: str | torch.device = "auto",
                   precision: str = "fp32", select_hint: str = "") -> ClipModel:
    """Load CLIP weights from one file.

    Our ``.safetensors`` format carries its config; OpenAI ``.pt`` files are recognised by their layout; any
    other state dict needs ``architecture`` (an open_clip name such as ``ViT-B-32``; OpenAI weights in open_clip
    layout need ``ViT-B-32-quickgelu``).
    """
    path = Path(path)
    if not path.is_file():
        raise ClipWeightsNotFound(f"CLIP weights file not found: {path}" + (f"; {select_hint}." if select_hint else ""))
    sd, meta = read_state_dict(path, select_hint)
    if FORMAT_KEY in meta:
        cfg = json.loads(meta["open_clip_config"])
        name = meta.get("architecture", path.stem)
        pretrained = meta.get("pretrained") or None
    elif meta.get("openai"):
        for key in ("input_resolution", "context_length", "vocab_size"):
            sd.pop(key, None)
        cfg = _openai_config(sd)
        name, pretrained = _openai_arch_name(cfg), "openai"
    else:
        if not architecture:
            raise ValueError(
                f"'{path.name}' holds bare weights without a model config: also give the architecture "
                "(e.g. ViT-B-32, or ViT-B-32-quickgelu for OpenAI weights), or convert it once with "
                "`python -m t2l_core clip-convert`."
            )
        cfg = architecture_config(architecture)
        name, pretrained = architecture, None
    model = _build_model(cfg)
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
    return _wrap(model, cfg, name, pretrained, str(path), device, precision)


def save_clip(clip: ClipModel, path: str | Path, note: str = "") -> Path:
    """Write ``clip`` in our format: a safetensors file whose metadata holds the open_clip config."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in clip.model.state_dict().items()}
    meta = {
        FORMAT_KEY: FORMAT_NAME,
        "open_clip_config": json.dumps(clip.config),
        "architecture": clip.name,
        "pretrained": clip.pretrained or "",
        "note": note,
    }
    save_file(sd, str(path), metadata=meta)
    return path


def read_file_info(path: str | Path) -> dict:
    """Metadata of a weights file without building the model (architecture, note, tensor count)."""
    path = Path(path)
    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors import safe_open

        from ..io.safetensors_files import read_metadata

        meta = read_metadata(path, "CLIP weights")
        with safe_open(str(path), framework="pt") as f:
            n = len(list(f.keys()))
        return {"file": str(path), "tensors": n, **meta}
    return {"file": str(path)}


def check_weights_file(path: str | Path, select_hint: str = "") -> None:
    """Raise a ValueError naming ``path`` when it cannot hold weights: empty, or a safetensors file whose
    header does not read. Cheap (reads the header only), for validating before any work starts."""
    path = Path(path)
    remedy = "Download or convert the weights again" + (f", {select_hint}" if select_hint else "") + "."
    if path.suffix.lower() in (".safetensors", ".sft"):
        from ..io.safetensors_files import read_metadata

        read_metadata(path, "CLIP weights", remedy)
    elif path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"CLIP weights file '{path}' is empty (0 bytes): an interrupted download or copy. {remedy}")


# ---------------------------------------------------------------------------------------------- tiny model
def tiny_clip_config(patch_size: int = 16, image_size: int | None = None, layers: int = 3, width: int = 64,
                     embed_dim: int = 32, text_layers: int = 2, text_width: int = 32) -> dict:
    """An open_clip config for a tiny ViT CLIP (real tokenizer vocabulary, few small layers)."""
    image_size = image_size or patch_size * 4
    if image_size % patch_size:
        raise ValueError("image_size must be a multiple of patch_size")
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "layers": layers, "width": width, "patch_size": patch_size,
                       "head_width": max(16, width // 2)},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": text_width, "heads": 2, "layers": text_layers},
    }


def build_tiny_clip(patch_size: int = 16, seed: int = 0, *, device: str | torch.device = "cpu",
                    precision: str = "fp32", **cfg_kwargs) -> ClipModel:
    """A tiny randomly initialised CLIP (NOT a real model) for tests, CI and offline pipeline checks."""
    cfg = tiny_clip_config(patch_size=patch_size, **cfg_kwargs)
    return _wrap(_seeded_model(cfg, seed), cfg, f"tiny-vit-p{patch_size}", "random-tiny", None, device, precision)


def build_random_clip(arch: str = "ViT-B-32-quickgelu", seed: int = 0, *, device: str | torch.device = "cpu",
                      precision: str = "fp32") -> ClipModel:
    """A full-size CLIP of architecture ``arch`` with random weights (NOT a real model): it costs exactly
    what the real one costs, so benchmarks can run without downloading weights."""
    cfg = architecture_config(arch)
    return _wrap(_seeded_model(cfg, seed), cfg, arch, "random", None, device, precision)


def _seeded_model(cfg: dict, seed: int) -> torch.nn.Module:
    """A randomly initialised model from ``cfg``, reproducible by ``seed``; the global RNG is left as it was."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return _build_model(cfg)
    finally:
        torch.random.set_rng_state(state)


# ---------------------------------------------------------------------------------------------- search
def default_search_dirs() -> list[Path]:
    """Folders searched outside ComfyUI: ``$T2L_MODELS_DIR`` and ``./models/text2live``."""
    dirs = []
    if os.environ.get("T2L_MODELS_DIR"):
        dirs.append(Path(os.environ["T2L_MODELS_DIR"]))
    dirs.append(Path.cwd() / "models" / "text2live")
    return dirs


def expected_files(arch: str, tag: str) -> list[str]:
    """File names that hold weights for ``arch`` + ``tag``, in the order they are looked for."""
    from open_clip.pretrained import get_pretrained_cfg

    names = [f"{arch}-{tag}.safetensors", f"{arch}-{tag}.pt", f"{arch}-{tag}.bin"]
    pcfg = get_pretrained_cfg(arch, tag) or {}
    if pcfg.get("url"):
        names.append(os.path.basename(pcfg["url"]))
    if pcfg.get("hf_hub"):
        repo = pcfg["hf_hub"].rstrip("/").split("/")[-1]
        names += [f"{repo}/open_clip_model.safetensors", f"{repo}/open_clip_pytorch_model.bin"]
    return list(dict.fromkeys(names))


def _open_clip_caches() -> list[str]:
    home = Path.home()
    hf = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME", home / ".cache" / "huggingface"), "hub")
    return [str(home / ".cache" / "clip"), str(hf)]


#: What to do once the weights are in place, on the command line (callers in ComfyUI pass their own words).
CLI_SELECT_HINT = "then pass the file's path (or its name in one of those folders) to --clip"


def missing_weights_message(arch: str, tag: str, dirs: Sequence[Path], reason: str,
                            select_hint: str = CLI_SELECT_HINT) -> str:
    from open_clip.pretrained import get_pretrained_cfg

    files = expected_files(arch, tag)
    pcfg = get_pretrained_cfg(arch, tag) or {}
    where = dirs[0] if dirs else Path("models/text2live")
    lines = [
        f"CLIP weights for {arch} ({tag}) were not found and could not be downloaded ({reason}).",
        "Looked in:",
        *[f"  - {d}" for d in dirs],
        *[f"  - {c} (open_clip / Hugging Face cache)" for c in _open_clip_caches()],
        f"Put one of these files into {where}:",
    ]
    if pcfg.get("url"):
        lines.append(f"  - {os.path.basename(pcfg['url'])}  (download: {pcfg['url']})")
    if pcfg.get("hf_hub"):
        lines.append(f"  - open_clip_model.safetensors from Hugging Face repo {pcfg['hf_hub'].rstrip('/')}, "
                     f"saved as {arch}-{tag}.safetensors")
    lines.append(f"(any of: {', '.join(files)}), {select_hint}.")
    return "\n".join(lines)


def _file_architecture(arch: str, tag: str) -> str:
    """The architecture to read a bare state dict of ``arch``+``tag`` with (QuickGELU when the tag needs it)."""
    from open_clip.pretrained import get_pretrained_cfg

    pcfg = get_pretrained_cfg(arch, tag) or {}
    oc = _open_clip()
    if pcfg.get("quick_gelu") and not arch.endswith("quickgelu") and f"{arch}-quickgelu" in oc.list_models():
        return f"{arch}-quickgelu"
    return arch


def _download_host(pcfg: dict) -> str | None:
    from urllib.parse import urlparse

    if pcfg.get("hf_hub"):
        return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    if pcfg.get("url"):
        return urlparse(pcfg["url"]).hostname
    return None


def _cached(arch: str, tag: str) -> bool:
    """Whether open_clip's caches already hold weights for the pair (then no network is needed)."""
    from open_clip.pretrained import get_pretrained_cfg

    pcfg = get_pretrained_cfg(arch, tag) or {}
    clip_cache, hf_cache = (Path(p) for p in _open_clip_caches())
    if pcfg.get("url") and (clip_cache / os.path.basename(pcfg["url"])).is_file():
        return True
    if pcfg.get("hf_hub"):
        repo = pcfg["hf_hub"].rstrip("/")
        return (hf_cache / ("models--" + repo.replace("/", "--"))).is_dir()
    return False


def weights_obtainable(arch: str, tag: str) -> bool:
    """Whether open_clip can produce weights for the pair: already cached, or its download host reachable."""
    from open_clip.pretrained import get_pretrained_cfg

    pcfg = get_pretrained_cfg(arch.replace("/", "-"), tag)
    if not pcfg:
        raise ValueError(f"'{tag}' is not a pretrained tag of {arch}")
    host = _download_host(pcfg)
    return _cached(arch, tag) or bool(host and _reachable(host))


def _reachable(host: str, timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def find_local_weights(arch: str, tag: str, dirs: Sequence[Path]) -> Path | None:
    for d in dirs:
        for name in expected_files(arch, tag):
            p = Path(d) / name
            if p.is_file():
                return p
    return None


def load_clip(name_or_path: str, pretrained: str | None = None, *, device: str | torch.device = "auto",
              precision: str = "fp32", search_dirs: Sequence[str | Path] | None = None,
              allow_download: bool = True, select_hint: str = CLI_SELECT_HINT) -> ClipModel:
    """Load a frozen CLIP.

    ``name_or_path`` is a weights file, a file name inside ``search_dirs``, ``ARCH:tag`` or an architecture
    name with ``pretrained`` (default tag ``openai``). ``search_dirs`` defaults to :func:`default_search_dirs`.
    ``select_hint`` ends the messages about missing or damaged files (what to do, in the caller's words).
    """
    if not name_or_path or not str(name_or_path).strip():
        raise ValueError("no CLIP model given: pass a weights file or an architecture such as ViT-B-32:openai")
    dirs = [Path(d) for d in (search_dirs if search_dirs is not None else default_search_dirs())]
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix.lower() in WEIGHT_SUFFIXES:
        if candidate.is_file():
            return load_clip_file(candidate, pretrained, device=device, precision=precision, select_hint=select_hint)
        for d in dirs:
            if (d / name_or_path).is_file():
                return load_clip_file(d / name_or_path, pretrained, device=device, precision=precision,
                                      select_hint=select_hint)
        raise ClipWeightsNotFound(
            f"CLIP weights file '{name_or_path}' not found. Looked in: "
            + ", ".join([str(candidate.resolve())] + [str(d / name_or_path) for d in dirs])
            + f". Put the file into one of those folders, {select_hint}."
        )
    arch, _, tag = str(name_or_path).partition(":")
    tag = tag or pretrained or "openai"
    arch = arch.replace("/", "-")
    architecture_config(arch)  # clear error for unknown names
    local = find_local_weights(arch, tag, dirs)
    if local is not None:
        return load_clip_file(local, _file_architecture(arch, tag), device=device, precision=precision,
                              select_hint=select_hint)
    from open_clip.pretrained import get_pretrained_cfg

    pcfg = get_pretrained_cfg(arch, tag)
    if not pcfg:
        oc = _open_clip()
        tags = oc.list_pretrained_tags_by_model(arch)
        raise ValueError(f"'{tag}' is not a pretrained tag of {arch}; known tags: {', '.join(tags) or 'none'}")
    if not allow_download:
        raise ClipWeightsNotFound(missing_weights_message(arch, tag, dirs, "downloads disabled", select_hint))
    if not weights_obtainable(arch, tag):
        raise ClipWeightsNotFound(missing_weights_message(arch, tag, dirs, f"offline: {_download_host(pcfg)} is not reachable",
                                                          select_hint))
    oc = _open_clip()
    try:
        model = oc.create_model(arch, pretrained=tag, force_quick_gelu=bool(pcfg.get("quick_gelu")),
                                weights_only=True, device="cpu")
    except Exception as exc:  # offline, blocked, interrupted download
        raise ClipWeightsNotFound(missing_weights_message(arch, tag, dirs, f"{type(exc).__name__}: {str(exc)[:200]}",
                                                          select_hint)) from exc
    cfg = architecture_config(arch)
    if pcfg.get("quick_gelu"):
        cfg["quick_gelu"] = True
    return _wrap(model, cfg, arch, tag, f"open_clip:{arch}:{tag}", device, precision,
                 pcfg.get("mean", OPENAI_MEAN), pcfg.get("std", OPENAI_STD))
