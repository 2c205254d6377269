"""Where CLIP weights are looked for: the model folders, the file names that hold a pretrained pair, open_clip's
caches and download hosts, and the message that says what to put where when nothing is found."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .architectures import open_clip_module

#: What to do once the weights are in place, on the command line (callers in ComfyUI pass their own words).
CLI_SELECT_HINT = "then pass the file's path (or its name in one of those folders) to --clip"


class ClipWeightsNotFound(FileNotFoundError):
    """Raised when no weights could be found; the message says where we looked and what to put where."""


def _pretrained_cfg(arch: str, tag: str) -> dict:
    from open_clip.pretrained import get_pretrained_cfg

    return get_pretrained_cfg(arch, tag) or {}


def default_search_dirs() -> list[Path]:
    """The folders searched outside ComfyUI.

    Returns:
        ``$T2L_MODELS_DIR`` (when set), then ``./models/text2live``.
    """
    dirs = []
    if os.environ.get("T2L_MODELS_DIR"):
        dirs.append(Path(os.environ["T2L_MODELS_DIR"]))
    dirs.append(Path.cwd() / "models" / "text2live")
    return dirs


def expected_files(arch: str, tag: str) -> list[str]:
    """The file names that hold weights for a pretrained pair.

    Args:
        arch: an open_clip architecture name (``ViT-B-32``).
        tag: a pretrained tag of it (``openai``).

    Returns:
        Names relative to a model folder, in the order they are looked for: ``ARCH-tag.safetensors/.pt/.bin``,
        then the names open_clip downloads to.
    """
    names = [f"{arch}-{tag}.safetensors", f"{arch}-{tag}.pt", f"{arch}-{tag}.bin"]
    pcfg = _pretrained_cfg(arch, tag)
    if pcfg.get("url"):
        names.append(os.path.basename(pcfg["url"]))
    if pcfg.get("hf_hub"):
        repo = pcfg["hf_hub"].rstrip("/").split("/")[-1]
        names += [f"{repo}/open_clip_model.safetensors", f"{repo}/open_clip_pytorch_model.bin"]
    return list(dict.fromkeys(names))


def find_local_weights(arch: str, tag: str, dirs: Sequence[Path]) -> Path | None:
    """Weights for a pretrained pair in the model folders.

    Args:
        arch: an open_clip architecture name (``ViT-B-32``).
        tag: a pretrained tag of it (``openai``).
        dirs: the folders, searched in order.

    Returns:
        The first of :func:`expected_files` found, else None.
    """
    for d in dirs:
        for name in expected_files(arch, tag):
            p = Path(d) / name
            if p.is_file():
                return p
    return None


def find_weights_file(name: str, dirs: Sequence[Path], select_hint: str = CLI_SELECT_HINT) -> Path:
    """A weights file given by path, or by name inside one of the model folders.

    Args:
        name: a path, or a file name relative to a model folder.
        dirs: the model folders.
        select_hint: what to do once the file is in place, in the caller's words (ends the message).

    Returns:
        The file's path; :class:`ClipWeightsNotFound` names every place looked in when there is none.
    """
    candidate = Path(name).expanduser()
    if candidate.is_file():
        return candidate
    for d in dirs:
        if (d / name).is_file():
            return d / name
    raise ClipWeightsNotFound(
        f"CLIP weights file '{name}' not found. Looked in: "
        + ", ".join([str(candidate.resolve())] + [str(d / name) for d in dirs])
        + f". Put the file into one of those folders, {select_hint}."
    )


def open_clip_caches() -> list[str]:
    """The caches open_clip downloads into.

    Returns:
        [open_clip's cache folder, the Hugging Face hub cache folder].
    """
    home = Path.home()
    hf = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME", home / ".cache" / "huggingface"), "hub")
    return [str(home / ".cache" / "clip"), str(hf)]


def missing_weights_message(arch: str, tag: str, dirs: Sequence[Path], reason: str,
                            select_hint: str = CLI_SELECT_HINT) -> str:
    """The message when weights for a pretrained pair are nowhere.

    Args:
        arch: an open_clip architecture name (``ViT-B-32``).
        tag: a pretrained tag of it (``openai``).
        dirs: the model folders looked in.
        reason: why open_clip could not download them.
        select_hint: what to do once the file is in place, in the caller's words.

    Returns:
        Every place looked in, the file to put where (with its download address), and ``select_hint``.
    """
    files = expected_files(arch, tag)
    pcfg = _pretrained_cfg(arch, tag)
    where = dirs[0] if dirs else Path("models/text2live")
    lines = [
        f"CLIP weights for {arch} ({tag}) were not found and could not be downloaded ({reason}).",
        "Looked in:",
        *[f"  - {d}" for d in dirs],
        *[f"  - {c} (open_clip / Hugging Face cache)" for c in open_clip_caches()],
        f"Put one of these files into {where}:",
    ]
    if pcfg.get("url"):
        lines.append(f"  - {os.path.basename(pcfg['url'])}  (download: {pcfg['url']})")
    if pcfg.get("hf_hub"):
        lines.append(f"  - open_clip_model.safetensors from Hugging Face repo {pcfg['hf_hub'].rstrip('/')}, "
                     f"saved as {arch}-{tag}.safetensors")
    lines.append(f"(any of: {', '.join(files)}), {select_hint}.")
    return "\n".join(lines)


def file_architecture(arch: str, tag: str) -> str:
    """The architecture to read a bare state dict of a pretrained pair with.

    Args:
        arch: an open_clip architecture name (``ViT-B-32``).
        tag: a pretrained tag of it (``openai``).

    Returns:
        ``arch``, or its QuickGELU variant when the tag was trained with QuickGELU.
    """
    pcfg = _pretrained_cfg(arch, tag)
    oc = open_clip_module()
    if pcfg.get("quick_gelu") and not arch.endswith("quickgelu") and f"{arch}-quickgelu" in oc.list_models():
        return f"{arch}-quickgelu"
    return arch


def file_name_architecture(name: str) -> str | None:
    """The architecture to read a bare state dict with, from a file named after its pretrained pair as
    :func:`expected_files` names them (``ViT-B-32-openai.safetensors`` -> ``ViT-B-32-quickgelu``).

    Args:
        name: a file name or path.

    Returns:
        The architecture, or None when the name is not ``ARCH-tag.safetensors/.pt/.bin`` of a known pair.
    """
    path = Path(name)
    if path.suffix.lower() not in (".safetensors", ".pt", ".bin"):
        return None
    for arch, tag in open_clip_module().list_pretrained():
        if path.stem == f"{arch}-{tag}":
            return file_architecture(arch, tag)
    return None


def download_host(pcfg: dict) -> str | None:
    """Where open_clip downloads a pretrained config's weights from.

    Args:
        pcfg: an open_clip pretrained config.

    Returns:
        The host name, None when it has no download.
    """
    from urllib.parse import urlparse

    if pcfg.get("hf_hub"):
        return urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    if pcfg.get("url"):
        return urlparse(pcfg["url"]).hostname
    return None


def _cached(arch: str, tag: str) -> bool:
    """Whether open_clip's caches already hold weights for the pair (then no network is needed)."""
    pcfg = _pretrained_cfg(arch, tag)
    clip_cache, hf_cache = (Path(p) for p in open_clip_caches())
    if pcfg.get("url") and (clip_cache / os.path.basename(pcfg["url"])).is_file():
        return True
    if pcfg.get("hf_hub"):
        repo = pcfg["hf_hub"].rstrip("/")
        return (hf_cache / ("models--" + repo.replace("/", "--"))).is_dir()
    return False


def _reachable(host: str, timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def weights_obtainable(arch: str, tag: str) -> bool:
    """Whether open_clip can produce weights for a pretrained pair: already cached, or its download host
    reachable (a 3 s connection test).

    Args:
        arch: an open_clip architecture name (``ViT-B-32``).
        tag: a pretrained tag of it (``openai``).

    Returns:
        True when it can; an unknown tag raises ValueError.
    """
    from open_clip.pretrained import get_pretrained_cfg

    pcfg = get_pretrained_cfg(arch.replace("/", "-"), tag)
    if not pcfg:
        raise ValueError(f"'{tag}' is not a pretrained tag of {arch}")
    host = download_host(pcfg)
    return _cached(arch, tag) or bool(host and _reachable(host))
