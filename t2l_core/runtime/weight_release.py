"""Releasing a model's weights and putting them back, for a host that manages memory.

A host such as ComfyUI unloads models it does not need right now. Where unloading would move the weights
nowhere (a CPU-only machine: the offload device is the device itself), the only way to give the memory back
is to drop the tensors; the model object stays valid and gets its weights back before it runs again, from
where they came (the weights file, read again) or from a file they were spilled to when they were dropped.

* :func:`module_tensors`: every parameter and buffer of a module (persistent or not) by qualified name;
* :func:`release_tensors`: replace them by empty tensors (the module keeps its structure, its Parameter
  objects and its attributes; anything sharing the module sees the release);
* :func:`restore_tensors`: put tensors back into a released module, checked against what was released;
* :func:`spill_tensors` / :func:`read_spilled`: a module's tensors to a file and back.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

#: what a release recorded per tensor: (shape, dtype)
Manifest = dict[str, tuple[tuple, torch.dtype]]


def _slots(module: torch.nn.Module):
    """(qualified name, owning module, 'param' or 'buffer', local name) for every tensor of ``module``; a
    tensor reached through two modules (tied weights) is listed under each."""
    for prefix, m in module.named_modules(remove_duplicate=False):
        head = f"{prefix}." if prefix else ""
        for name, _ in m.named_parameters(recurse=False, remove_duplicate=False):
            yield head + name, m, "param", name
        for name, _ in m.named_buffers(recurse=False, remove_duplicate=False):
            yield head + name, m, "buffer", name


def module_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``module`` (non-persistent buffers too) by qualified name.

    Args:
        module: the model.

    Returns:
        {name: tensor}: detached tensors sharing the module's storage.
    """
    out = {}
    for qual, m, _, name in _slots(module):
        out[qual] = getattr(m, name).detach()
    return out


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes held by the module's distinct tensor storages."""
    seen, total = set(), 0
    for t in module_tensors(module).values():
        if t.numel() == 0:
            continue
        key = (t.device, t.untyped_storage().data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def release_tensors(module: torch.nn.Module) -> Manifest:
    """Drop every parameter's and buffer's data (an empty tensor of the same dtype and device takes its place).

    Args:
        module: the model; it keeps its structure and Parameter objects.

    Returns:
        What was released (shape and dtype per tensor), for :func:`restore_tensors`.
    """
    manifest: Manifest = {}
    seen: dict = {}  # id of a tensor already released (tied weights) -> what it was
    with torch.no_grad():
        for qual, m, kind, name in _slots(module):
            t = getattr(m, name)
            if id(t) in seen:  # a tied parameter is emptied already; a shared buffer is replaced in this module too
                manifest[qual] = seen[id(t)]
            else:
                manifest[qual] = seen[id(t)] = (tuple(t.shape), t.dtype)
                if kind == "param":
                    t.data = torch.empty(0, dtype=t.dtype, device=t.device)
            if kind == "buffer":  # assigning to a registered buffer's name replaces it, persistence kept
                setattr(m, name, torch.empty(0, dtype=t.dtype, device=t.device))
    return manifest


def restore_tensors(module: torch.nn.Module, tensors: dict[str, torch.Tensor], manifest: Manifest) -> None:
    """Put tensors back into a module released by :func:`release_tensors`.

    Args:
        module: the released model.
        tensors: {name: tensor} as :func:`module_tensors` gives them (from a fresh copy of the model or a spill
            file); each keeps its device.
        manifest: what :func:`release_tensors` returned.

    Raises:
        ValueError: the tensors are not the ones released (another structure, shape or dtype); the module is
            left released.
    """
    if set(tensors) != set(manifest):
        missing, extra = sorted(set(manifest) - set(tensors)), sorted(set(tensors) - set(manifest))
        raise ValueError(f"the weights read back do not match the model: {len(missing)} missing and {len(extra)} "
                         f"unexpected tensors (first: {(missing + extra)[:3]})")
    for qual, (shape, dtype) in manifest.items():
        t = tensors[qual]
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise ValueError(f"the weights read back do not match the model: {qual} is {tuple(t.shape)} "
                             f"{t.dtype}, the model had {shape} {dtype}")
    with torch.no_grad():
        for qual, m, kind, name in _slots(module):
            if kind == "param":
                getattr(m, name).data = tensors[qual]
            else:
                setattr(m, name, tensors[qual])


def spill_tensors(module: torch.nn.Module, path: str | Path) -> None:
    """Write every tensor of ``module`` to ``path`` (atomic; tied tensors stay tied when read back).

    Args:
        module: the model.
        path: the file to write (its folder is created).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save({k: v.cpu() for k, v in module_tensors(module).items()}, tmp)
    os.replace(tmp, path)


def read_spilled(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors :func:`spill_tensors` wrote.

    Args:
        path: the spill file.
        device: where the tensors go.

    Returns:
        {name: tensor}.
    """
    return torch.load(Path(path), map_location=torch.device(device), weights_only=True)
