"""The only place that touches ComfyUI modules. Every import is guarded so node classes also work as
plain Python classes (tests, scripts) when ComfyUI is not installed.

Inside ComfyUI this module provides: the registered ``models/text2live`` folder, ComfyUI's devices and
memory management, its ProgressBar with previews, and its interrupt check.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch

try:  # pragma: no cover - exercised only inside ComfyUI
    import comfy.model_management as _mm
    import comfy.utils as _cutils
    import folder_paths as _folder_paths

    HAVE_COMFY = True
except Exception:  # ImportError, or a partially importable ComfyUI
    _mm = _cutils = _folder_paths = None
    HAVE_COMFY = False

from ..t2l_core.api import WEIGHT_SUFFIXES, Hooks, require_finite

log = logging.getLogger("text2live")

MODEL_FOLDER_KEY = "text2live"
_registered = False


def register_model_folder() -> None:
    """Register ``models/text2live`` once, appending to entries from extra_model_paths.yaml (never replacing)."""
    global _registered
    if _registered or not HAVE_COMFY:
        return
    default_dir = os.path.join(_folder_paths.models_dir, MODEL_FOLDER_KEY)
    if MODEL_FOLDER_KEY in _folder_paths.folder_names_and_paths:
        dirs, exts = _folder_paths.folder_names_and_paths[MODEL_FOLDER_KEY]
        if default_dir not in dirs:
            dirs.append(default_dir)
        exts.update(_folder_paths.supported_pt_extensions)
    else:
        _folder_paths.folder_names_and_paths[MODEL_FOLDER_KEY] = ([default_dir], set(_folder_paths.supported_pt_extensions))
    _registered = True


def model_folders() -> list[str]:
    """Folders searched for our model files: ComfyUI's ``models/text2live`` (+ extra paths), or, outside
    ComfyUI, ``$T2L_MODELS_DIR`` and ``./models/text2live``."""
    if HAVE_COMFY:
        register_model_folder()
        return list(_folder_paths.get_folder_paths(MODEL_FOLDER_KEY))
    dirs = []
    if os.environ.get("T2L_MODELS_DIR"):
        dirs.append(os.environ["T2L_MODELS_DIR"])
    dirs.append(str(Path.cwd() / "models" / MODEL_FOLDER_KEY))
    return dirs


def list_model_files() -> list[str]:
    """File names (relative to a model folder) of weights we can load."""
    if HAVE_COMFY:
        register_model_folder()
        return sorted(_folder_paths.get_filename_list(MODEL_FOLDER_KEY))
    names: set[str] = set()
    for d in model_folders():
        root = Path(d)
        if root.is_dir():
            for p in root.rglob("*"):
                if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES:
                    names.add(p.relative_to(root).as_posix())
    return sorted(names)


def resolve_model_file(name: str) -> Optional[str]:
    """Full path of ``name`` in one of :func:`model_folders`, or None."""
    if HAVE_COMFY:
        register_model_folder()
        return _folder_paths.get_full_path(MODEL_FOLDER_KEY, name)
    for d in model_folders():
        p = Path(d) / name
        if p.is_file():
            return str(p)
    return None


def output_dir() -> Path:
    """Where checkpoints and saved atlases go: ``<ComfyUI output>/text2live`` or ``./t2l_outputs``."""
    base = Path(_folder_paths.get_output_directory()) if HAVE_COMFY else Path.cwd() / "t2l_outputs"
    out = base / "text2live"
    out.mkdir(parents=True, exist_ok=True)
    return out


def numbered_file(folder: Path, stem: str, suffix: str = ".safetensors") -> Path:
    """The first ``folder/stem_NNNNN<suffix>`` that does not exist yet (counter from 00001), as Save nodes name files."""
    n = 1
    while (folder / f"{stem}_{n:05d}{suffix}").exists():
        n += 1
    return folder / f"{stem}_{n:05d}{suffix}"


def torch_device() -> torch.device:
    if HAVE_COMFY:
        return _mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def intermediate_device() -> torch.device:
    """Where node outputs (IMAGE/MASK) live."""
    if HAVE_COMFY:
        return _mm.intermediate_device()
    return torch.device("cpu")


def free_memory(bytes_needed: int, device: torch.device) -> None:
    """Ask ComfyUI to evict its models so ``bytes_needed`` are free on ``device`` (no-op on CPU/outside)."""
    if HAVE_COMFY and device.type != "cpu":
        _mm.free_memory(bytes_needed, device)


def soft_empty_cache() -> None:
    if HAVE_COMFY:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_interrupt() -> None:
    """Raise ComfyUI's InterruptProcessingException if the user pressed cancel."""
    if HAVE_COMFY:
        _mm.throw_exception_if_processing_interrupted()


def to_output(t: torch.Tensor) -> torch.Tensor:
    """A node output: float32, contiguous, on ComfyUI's intermediate device."""
    return t.detach().to(device=intermediate_device(), dtype=torch.float32).contiguous()


def _preview_tuple(preview: torch.Tensor):
    from PIL import Image

    arr = (preview.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype("uint8")
    size = 512
    if HAVE_COMFY:
        try:
            from comfy.cli_args import args

            size = args.preview_size
        except Exception:
            pass
    return ("JPEG", Image.fromarray(arr), size)


def make_hooks(preview_every: int = 25) -> Hooks:
    """Hooks bound to a ComfyUI ProgressBar (with previews) and the interrupt check.

    Outside ComfyUI the hooks do nothing; the CLI builds its own printer.
    """
    state: dict = {"bar": None, "phase": None}

    def on_step(step: int, total: int, losses: dict, preview: Optional[torch.Tensor]) -> None:
        if not HAVE_COMFY:
            return
        if state["bar"] is None:
            state["bar"] = _cutils.ProgressBar(total)
        state["bar"].update_absolute(step, total, _preview_tuple(preview) if preview is not None else None)

    def on_phase(name: str, done: int, total: int) -> None:
        """Phases (optical flow, atlas sampling, rendering) fill the node's progress bar from 0 again; the
        console log names each phase once."""
        if not HAVE_COMFY:
            return
        if state["phase"] != name:
            state["phase"] = name
            logging.getLogger("text2live").info("Text2LIVE: %s, %d in all", name, total)
        if state["bar"] is None:
            state["bar"] = _cutils.ProgressBar(total)
        state["bar"].update_absolute(done, total)

    return Hooks(on_step=on_step, check_cancel=check_interrupt, preview_every=preview_every, on_phase=on_phase)


@contextlib.contextmanager
def training_mode() -> Iterator[None]:
    """Leave ComfyUI's inference mode so models built and trained inside can backpropagate."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def image_to_bchw(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """ComfyUI IMAGE [B,H,W,C] (0..1) -> a fresh (non-inference) [B,3,H,W] float32 tensor (alpha dropped).
    ``name``: the node input, for the message when the IMAGE holds NaN or infinite values."""
    require_finite(image, f"the {name} input")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an IMAGE of shape [B,H,W,C] with C in (1,3,4), got {tuple(image.shape)}")
    x = image[..., :3] if image.shape[-1] >= 3 else image.expand(*image.shape[:-1], 3)
    return x.permute(0, 3, 1, 2).float().clone()


def bchw_to_image(x: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] -> ComfyUI IMAGE [B,H,W,C] on the intermediate device."""
    return to_output(x.permute(0, 2, 3, 1))


def mask_to_bhw(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """ComfyUI MASK ([B,H,W] or [H,W]) -> a fresh [B,H,W] float32 tensor. ``name``: the node input, for the
    message when the MASK holds NaN or infinite values."""
    require_finite(mask, f"the {name} input")
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise ValueError(f"expected a MASK of shape [B,H,W] or [H,W], got {tuple(mask.shape)}")
    return mask.float().clone()


def tell_user(node: str, notes: Sequence[str]) -> None:
    """Show ``notes`` (a fallback taken, a checkpoint not used) where the user looks: the log and, inside a
    running ComfyUI, the text under the executing node."""
    notes = [n for n in notes if n]
    for n in notes:
        log.warning("Text2LIVE %s: %s", node, n)
    if not (HAVE_COMFY and notes):
        return
    try:
        from server import PromptServer

        server = PromptServer.instance
        node_id = getattr(server, "last_node_id", None)
        if node_id is not None and hasattr(server, "send_progress_text"):
            server.send_progress_text("\n".join(notes), node_id)
    except Exception:  # an older server without node text: the log and the node's ui output remain
        pass


def with_notes(result: tuple, notes: Sequence[str]):
    """A node's return value: ``result`` as is, or with ``notes`` as its UI text (kept in /history and sent
    with the 'executed' message) when there is something to tell."""
    notes = [n for n in notes if n]
    return {"ui": {"text": notes}, "result": result} if notes else result
