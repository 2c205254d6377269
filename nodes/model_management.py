"""The pack's models under ComfyUI's model management: the CLIP of Load CLIP and fitted atlases.

Each model gets a ``comfy.model_patcher.ModelPatcher`` (attribute :data:`PATCHER_ATTR` of the object that
travels on the link, a ``ClipModel`` or a ``FittedNLA``), with ComfyUI's compute device as its load device and
its offload device (``unet_offload_device()``: the CPU, or the GPU with --highvram / --gpu-only). A node that
runs a model calls :func:`use` first: ``comfy.model_management.load_models_gpu`` puts the model on its device,
evicting other models (a diffusion model, say) if the memory is needed. So "Unload models", ``POST /free``,
``--lowvram``/``--novram``/``--cpu`` and ComfyUI's own eviction apply to our models as to its own:

* unloading moves the weights to the offload device, and :func:`use` moves them back;
* where the offload device is the load device (``--cpu``; a CLIP placed on the CPU; ``--highvram``), unloading
  would move nothing, so the weights are dropped (:mod:`t2l_core.runtime.weight_release`) and read back when
  a node needs the model: a CLIP from its weights file, an atlas from its file (Load Atlas) or from a copy
  written to ComfyUI's temp folder when it was dropped (an atlas fitted in this session);
* the models are plain PyTorch modules without ComfyUI's per-layer weight casting, so they are always loaded
  whole (under --lowvram/--novram too: other models are evicted to make room, ours are not split).

Outside ComfyUI (tests, scripts) nothing is managed: the models stay where they were loaded and :func:`use`
does nothing.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import Callable, Optional

import torch

try:  # pragma: no cover - exercised only inside ComfyUI
    import comfy.model_management as _mm
    import comfy.model_patcher as _mp
except Exception:  # ImportError, or a partially importable ComfyUI
    _mm = _mp = None

from ..t2l_core.api import (load_nla, module_tensors, read_spilled, release_freed_heap, release_tensors,
                            restore_tensors, spill_tensors, tensor_bytes)
from . import comfy_bridge as cb
from .declarations import file_signature

log = logging.getLogger("text2live")

#: the attribute of a ClipModel / FittedNLA that holds its ModelPatcher (inside ComfyUI)
PATCHER_ATTR = "comfy_patcher"

#: a function giving a released model's tensors back: {qualified name: tensor}, see module_tensors
Source = Callable[[], dict[str, torch.Tensor]]


def available() -> bool:
    """Whether ComfyUI's model management is importable (inside ComfyUI)."""
    return _mm is not None and _mp is not None


# ------------------------------------------------------------------------------------------ the pack's side
class ManagedWeights:
    """What the pack adds to a ModelPatcher (no ComfyUI in here): a name for the log, how the weights come
    back after they were dropped, and what must follow the model when it moves.

    Args:
        label: e.g. "CLIP ViT-B-32" (log lines).
        source: gives the model's tensors again (:data:`Source`); None = write them to a temp file when they are
            dropped and read that back.
        on_move: called with the device after the model was loaded or offloaded (objects around the module
            that hold tensors or their device, e.g. the ClipModel's normalisation and text cache).
        on_release: called after the weights were dropped (caches derived from them).
    """

    def __init__(self, label: str, source: Optional[Source] = None,
                 on_move: Optional[Callable[[torch.device], None]] = None,
                 on_release: Optional[Callable[[], None]] = None) -> None:
        self.label = label
        self.source = source
        self.on_move = on_move
        self.on_release = on_release
        self.manifest = None  # set while the weights are dropped
        self.spill_path: Optional[Path] = None
        self._remove_spill = None

    @property
    def released(self) -> bool:
        """True while the weights are dropped."""
        return self.manifest is not None

    def moved(self, device: torch.device) -> None:
        if self.on_move is not None:
            self.on_move(device)

    def release(self, module: torch.nn.Module) -> int:
        """Drop the module's tensors (spilled to a temp file first when there is no source).

        Returns:
            The bytes released.
        """
        if self.released:
            return 0
        nbytes = tensor_bytes(module)
        if self.source is None:
            path = spill_dir() / f"{uuid.uuid4().hex}.pt"
            spill_tensors(module, path)
            self.spill_path = path
            self._remove_spill = weakref.finalize(self, _remove_file, path)  # also when the model is dropped
        self.manifest = release_tensors(module)
        if self.on_release is not None:
            self.on_release()
        release_freed_heap()
        where = "its weights file" if self.source is not None else f"a copy in {self.spill_path.parent}"
        log.info("Text2LIVE: %s unloaded, %.1f MiB of weights released (read back from %s when a node needs it)",
                 self.label, nbytes / 2**20, where)
        return nbytes

    def restore(self, module: torch.nn.Module) -> None:
        """Put dropped tensors back (no-op when they are in place)."""
        if not self.released:
            return
        log.info("Text2LIVE: %s reloading its weights", self.label)
        with cb.training_mode():  # never inference tensors: training nodes backpropagate through the model
            tensors = read_spilled(self.spill_path) if self.source is None else self.source()
            restore_tensors(module, tensors, self.manifest)
        self.manifest = None
        if self._remove_spill is not None:
            self._remove_spill()
            self._remove_spill = self.spill_path = None


def _remove_file(path: Path) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def spill_dir() -> Path:
    """Where dropped weights without a source are written: ``<ComfyUI temp>/text2live`` (ComfyUI empties its
    temp folder when it starts and exits), or the system's temp folder outside ComfyUI."""
    try:
        import folder_paths

        base = Path(folder_paths.get_temp_directory())
    except Exception:
        base = Path(tempfile.gettempdir())
    d = base / "text2live"
    d.mkdir(parents=True, exist_ok=True)
    return d


def file_source(path: str, read: Source, what: str) -> Source:
    """A :data:`Source` that reads ``path`` again with ``read``, refusing a file changed since the model was
    loaded from it (the model would no longer be the one the graph loaded)."""
    signature = file_signature(path)

    def source() -> dict[str, torch.Tensor]:
        if file_signature(path) != signature:
            raise RuntimeError(f"{what}: ComfyUI unloaded it and its file '{path}' has changed or gone since it was "
                               "loaded; queue the prompt again so that it is loaded anew.")
        return read()

    return source


# ------------------------------------------------------------------------------------------ ComfyUI's side
_patcher_class = None


def patcher_class():
    """``ModelPatcher`` for our plain torch models (created on first use, inside ComfyUI):

    * always loaded whole: our modules have no ComfyUI per-layer weight casting, so a partial (lowvram) load
      would leave layers on the offload device;
    * after ComfyUI offloads it, :class:`ManagedWeights` hears where it went, and drops the weights when the
      offload device is the load device (the memory is given back only that way);
    * before it is loaded, dropped weights are read back.
    """
    global _patcher_class
    if _patcher_class is None:
        class T2LModelPatcher(_mp.ModelPatcher):
            t2l: Optional[ManagedWeights] = None

            def clone(self):
                n = super().clone()
                n.t2l = self.t2l
                return n

            def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False,
                     **kwargs):
                if self.t2l is not None:
                    self.t2l.restore(self.model)
                out = super().load(device_to, lowvram_model_memory=lowvram_model_memory,
                                   force_patch_weights=force_patch_weights, full_load=True, **kwargs)
                if self.t2l is not None and device_to is not None:
                    self.t2l.moved(torch.device(device_to))
                return out

            def detach(self, unpatch_all=True):
                out = super().detach(unpatch_all)
                if unpatch_all and self.t2l is not None:
                    self.t2l.moved(torch.device(self.offload_device))
                    if torch.device(self.offload_device) == torch.device(self.load_device):
                        self.t2l.release(self.model)
                return out

        _patcher_class = T2LModelPatcher
    return _patcher_class


def devices(choice: Optional[torch.device] = None) -> tuple[torch.device, torch.device]:
    """(load device, offload device) of a model that runs on ``choice`` (None: ComfyUI's compute device).

    Outside ComfyUI both are ``choice`` (or the bridge's device): models stay where they are loaded.
    """
    if not available():
        d = torch.device(choice) if choice is not None else cb.torch_device()
        return d, d
    compute = _mm.get_torch_device()
    load = compute if choice is None else torch.device(choice)
    if load.type == compute.type and load.index is None:
        load = compute  # "cuda" is ComfyUI's cuda:N, so its eviction sees our model on the device it frees
    offload = _mm.unet_offload_device() if load.type != "cpu" else torch.device("cpu")
    return load, offload


def patcher_of(obj) -> Optional[object]:
    """The ModelPatcher of a managed CLIP or atlas, or None."""
    return getattr(obj, PATCHER_ATTR, None) if obj is not None else None


def _manage(obj, module: torch.nn.Module, weights: ManagedWeights, load_device: torch.device,
            offload_device: torch.device):
    if not available():
        return obj
    patcher = patcher_class()(module, load_device=load_device, offload_device=offload_device)
    patcher.t2l = weights
    setattr(obj, PATCHER_ATTR, patcher)
    return obj


def manage_clip(clip, load_device: torch.device, offload_device: torch.device, source: Optional[Source] = None):
    """Hand a loaded ``ClipModel`` to ComfyUI's model management (no-op outside ComfyUI).

    Args:
        clip: the CLIP, on ``offload_device``.
        load_device, offload_device: see :func:`devices`.
        source: gives its weights again after they were dropped (its weights file read again).

    Returns:
        ``clip``.
    """
    ref = weakref.ref(clip)  # the patcher must not keep the ClipModel alive (it holds the patcher)

    def on_move(device: torch.device) -> None:
        c = ref()
        if c is not None:
            c.to(device)  # the normalisation and text-cache tensors and the device the core reads

    def on_release() -> None:
        c = ref()
        if c is not None:
            c.clear_text_cache()

    label = f"CLIP {clip.name}" + (f" ({clip.pretrained})" if clip.pretrained else "")
    return _manage(clip, clip.model, ManagedWeights(label, source, on_move, on_release), load_device, offload_device)


def manage_atlas(nla, source: Optional[Source] = None):
    """Hand a ``FittedNLA`` (its atlas networks) to ComfyUI's model management (no-op outside ComfyUI).

    Args:
        nla: the atlas.
        source: gives its networks' tensors again after they were dropped (its atlas file read again); None =
            a copy is written to the temp folder when they are dropped.

    Returns:
        ``nla``.
    """
    load, offload = devices()
    cfg = nla.cfg
    label = f"atlas ({cfg.frames} frames {cfg.width}x{cfg.height})"
    return _manage(nla, nla.model, ManagedWeights(label, source), load, offload)


def load_atlas_file(path: str):
    """An atlas file (Save Atlas) as a managed ``FittedNLA``: read onto the offload device (the compute device
    outside ComfyUI), read again from the file when ComfyUI dropped its weights."""
    offload = devices()[1]

    def read():
        with cb.training_mode():
            return load_nla(path, device=offload)

    return manage_atlas(read(), file_source(path, lambda: module_tensors(read().model), f"the atlas '{path}'"))


def use(*objs, memory_required: int = 0) -> None:
    """Load the managed models among ``objs`` (None entries are skipped) onto their device, whole, before a node
    runs them; ``memory_required``: bytes the node needs beside them, which ComfyUI frees by evicting other
    models. Unmanaged objects (outside ComfyUI) are left as they are."""
    patchers = [p for p in map(patcher_of, objs) if p is not None]
    if patchers:
        with cb.training_mode():  # moved weights must not become inference tensors
            _mm.load_models_gpu(patchers, memory_required=int(memory_required), force_full_load=True)
    elif memory_required:
        cb.free_memory(int(memory_required), cb.torch_device())
