"""The atlas fit's checkpoint: the key a resumable fit must match, and the fit's state (atlas, Adam, RNG)
written to and restored from a :class:`~t2l_core.checkpoint.CheckpointFile` of job ``atlas-fit``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..checkpoint import ATLAS_FIT_JOB, CheckpointFile, load_optimizer_state, optimizer_state_tensors, result_hash
from .atlas_model import AtlasConfig, LayeredAtlas
from .config import NLAFitConfig
from .optical_flow import frames_fingerprint

# settings added after the first saved fits, each with the value that reproduces those fits: at that value a
# setting is left out of the key, so older fits keep theirs. Paths into NLAFitConfig.to_dict().
KEY_NEUTRAL_SETTINGS = {("motion_init",): "translation", ("weights", "residual_bg"): 0.0,
                        ("weights", "residual_fg"): 0.0, ("working_size",): 0}


def fit_key(frames: torch.Tensor, masks: Optional[torch.Tensor], cfg: NLAFitConfig) -> str:
    """The key of a fit's inputs and settings (names the checkpoint file).

    Args:
        frames: [T,3,H,W] (every value counts).
        masks: None, or [T,H,W] (every value counts).
        cfg: every setting but ``checkpoint_every`` counts, except those of :data:`KEY_NEUTRAL_SETTINGS` at
            their neutral value (so fits of configs from before those settings keep their key).

    The key also holds :data:`~t2l_core.checkpoint.RESULT_VERSION`.

    Returns:
        16 hex digits.
    """
    h = result_hash()
    h.update(frames_fingerprint(frames).encode())
    if masks is not None:
        h.update(frames_fingerprint(masks[:, None]).encode())
    d = cfg.to_dict()
    d.pop("checkpoint_every", None)
    for path, neutral in KEY_NEUTRAL_SETTINGS.items():
        *parents, name = path
        group = d
        for p in parents:
            group = group[p]
        if group.get(name) == neutral:
            group.pop(name)
    h.update(json.dumps(d, sort_keys=True).encode())
    return h.hexdigest()[:16]


def resume_key(key: str, flow_estimator: str, device: torch.device) -> str:
    """What a checkpoint must match to be resumed.

    Args:
        key: :func:`fit_key`.
        flow_estimator: the estimator actually used (``auto`` picks RAFT or the built-in one by what is
            installed).
        device: only its type counts (CPU and CUDA round differently).

    Returns:
        16 hex digits.
    """
    return hashlib.sha1(f"{key}|{flow_estimator}|{torch.device(device).type}".encode()).hexdigest()[:16]


def fit_run_files(folder: str | Path, frames: torch.Tensor, masks: Optional[torch.Tensor],
                  cfg: NLAFitConfig) -> tuple[Path, Path]:
    """Where a fit keeps its checkpoint and its flow cache in a folder of fits (ComfyUI's output/text2live/nla).

    Args:
        folder: the folder.
        frames, masks, cfg: as :func:`fit_key`.

    Returns:
        (``checkpoint_<fit key>.safetensors``, ``flow_<frames fingerprint>_<flow setting>.safetensors``): the
        checkpoint belongs to these inputs and settings, the flow to these frames and estimator setting only.
    """
    folder = Path(folder)
    return (folder / f"checkpoint_{fit_key(frames, masks, cfg)}.safetensors",
            folder / f"flow_{frames_fingerprint(frames)}_{cfg.flow}.safetensors")


def fit_checkpoint_file(path: Optional[str], key: str) -> CheckpointFile:
    """The checkpoint file of a fit.

    Args:
        path: where it is kept; None when the fit keeps none.
        key: :func:`resume_key`.

    Returns:
        A :class:`~t2l_core.checkpoint.CheckpointFile` of job ``atlas-fit``.
    """
    return CheckpointFile(path, ATLAS_FIT_JOB, key)


def write_fit_state(file: CheckpointFile, model: LayeredAtlas, opt: torch.optim.Optimizer, step: int,
                    gen: torch.Generator, cfg: NLAFitConfig) -> Optional[Path]:
    """Write the fit's state at the start of ``step``: the atlas (``model.*``), Adam's state, the generator's
    state, and the atlas and fit settings in the metadata.

    Args:
        file: the fit's checkpoint file.
        model: the atlas.
        opt: the fit's Adam.
        step: the 0-based step the state resumes at.
        gen: the generator whose state resumes the pixel draws.
        cfg: the fit's settings.

    Returns:
        The checkpoint's path, None when the fit keeps no checkpoint.
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(optimizer_state_tensors(opt))
    tensors["rng_state"] = gen.get_state().clone()
    meta = {"atlas_config": json.dumps(model.cfg.to_dict()), "fit_config": json.dumps(cfg.to_dict())}
    return file.write(tensors, step, meta)


@dataclass
class FitState:
    """A checkpoint of this fit: its tensors, the step it resumes at and the atlas it rebuilds."""

    tensors: dict
    step: int
    atlas_config: AtlasConfig


def read_fit_state(file: CheckpointFile, notes: list) -> Optional[FitState]:
    """The checkpoint of this fit, if there is one (a checkpoint of another fit gets a note and is not used).

    Args:
        file: the fit's checkpoint.
        notes: receives a note when the file belongs to another fit.

    Returns:
        The :class:`FitState`, or None when there is no checkpoint of this fit.
    """
    found = file.read(notes)
    if found is None:
        return None
    return FitState(found.tensors, found.step, AtlasConfig.from_dict(json.loads(found.meta["atlas_config"])))


def restore_fit_state(state: FitState, model: LayeredAtlas, opt: torch.optim.Optimizer, gen: torch.Generator) -> None:
    """Load a checkpoint's atlas, Adam state and generator state into a fresh fit (bit for bit).

    Args:
        state: from :func:`read_fit_state`.
        model: an atlas built from ``state.atlas_config``.
        opt: its :func:`~t2l_core.nla.fit.fit_optimizer`.
        gen: the fit's generator.
    """
    model.load_state_dict({k[6:]: v for k, v in state.tensors.items() if k.startswith("model.")})
    load_optimizer_state(opt, state.tensors)
    gen.set_state(state.tensors["rng_state"])
