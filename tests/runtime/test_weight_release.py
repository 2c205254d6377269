"""Dropping a model's weights and putting them back (what ComfyUI's unloading does to our models where the
weights have nowhere to be offloaded): the storage is really given back, the model object and its Parameter
objects stay, and the weights read back (from a fresh copy of the model or a spill file) give bit-identical
outputs; weights that are not the released ones are refused."""

from __future__ import annotations

import pytest
import torch

from t2l_core.clip.loading import build_tiny_clip
from t2l_core.runtime.weight_release import (module_tensors, read_spilled, release_tensors, restore_tensors,
                                             spill_tensors, tensor_bytes)


def _clip():
    return build_tiny_clip(patch_size=16, seed=0, device="cpu")


def _embed(clip) -> torch.Tensor:
    x = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.cat([clip.encode_image(x), clip.model.encode_text(clip.tokenizer(["a cat"]))], dim=1)


def test_release_gives_the_storage_back_and_a_fresh_copy_restores_identical_outputs():
    clip = _clip()
    before = _embed(clip)
    params = list(clip.model.parameters())
    held = tensor_bytes(clip.model)
    assert held == sum(t.numel() * t.element_size() for t in module_tensors(clip.model).values())
    manifest = release_tensors(clip.model)
    assert tensor_bytes(clip.model) == 0
    assert all(p.numel() == 0 for p in clip.model.parameters())
    assert list(clip.model.parameters()) == params  # the same Parameter objects, emptied
    assert "attn_mask" in manifest  # a non-persistent buffer is released (and restored) too
    restore_tensors(clip.model, module_tensors(_clip().model), manifest)
    assert list(clip.model.parameters()) == params
    assert tensor_bytes(clip.model) == held
    assert torch.equal(_embed(clip), before)


def test_spilled_weights_come_back_identical_and_tied_weights_stay_tied(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    model[1].weight = model[0].weight  # tied
    x = torch.rand(2, 4)
    with torch.no_grad():
        before = model(x)
    spill_tensors(model, tmp_path / "spill.pt")
    manifest = release_tensors(model)
    restore_tensors(model, read_spilled(tmp_path / "spill.pt"), manifest)
    assert model[1].weight is model[0].weight
    assert model[0].weight.data_ptr() == model[1].weight.data_ptr()
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert not list(tmp_path.glob("*.part"))  # the spill was written atomically


def test_weights_of_another_model_are_refused_and_the_model_stays_released():
    clip = _clip()
    manifest = release_tensors(clip.model)
    other = module_tensors(build_tiny_clip(patch_size=16, seed=0, device="cpu", width=96).model)
    with pytest.raises(ValueError, match="do not match the model"):
        restore_tensors(clip.model, other, manifest)
    tensors = module_tensors(_clip().model)
    tensors.pop("visual.proj")
    with pytest.raises(ValueError, match="1 missing"):
        restore_tensors(clip.model, tensors, manifest)
    assert tensor_bytes(clip.model) == 0
