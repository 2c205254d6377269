"""The pack's models under ComfyUI's model management (nodes/model_management.py), with a stand-in for
``comfy.model_management`` / ``comfy.model_patcher`` that behaves as ComfyUI does towards a ModelPatcher:
``load_models_gpu`` calls ``load`` (partially, as under --lowvram) and keeps the patcher as loaded;
``unload_all_models`` calls ``detach``, which moves the model to its offload device.

Checked: Load CLIP and atlases get a patcher; the nodes that run them load them whole, outside inference
mode, before running; where the offload device is the load device an unload drops the weights (the memory
goes back) and the next node reads them back bit-identically, from the weights file, the atlas file or a temp
spill; a file changed in between is refused; offloading to another device keeps the weights; outside ComfyUI
nothing changes. The same with the real ComfyUI is in test_e2e_comfyui.py.
"""

from __future__ import annotations

import gc
import logging
import types

import pytest
import torch

from t2l_core.clip.loading import build_tiny_clip, save_clip
from t2l_core.nla.atlas_files import save_nla
from t2l_core.nla.atlas_model import AtlasConfig, LayeredAtlas
from t2l_core.nla.fitted import FittedNLA
from t2l_core.runtime.weight_release import module_tensors, tensor_bytes

CPU = torch.device("cpu")
NODE_KW = dict(prompt="golden astronaut", screen_prompt="", source_prompt="astronaut", iterations=2, size=129,
               seed=1, views=2)  # Train Edit Layer at a tiny size


class FakeModelPatcher:
    """What our patcher subclass relies on from comfy.model_patcher.ModelPatcher."""

    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size
        self.loads: list = []

    def clone(self):
        return self.__class__(self.model, self.load_device, self.offload_device, self.size)

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        self.loads.append({"device": device_to, "full_load": full_load, "inference": torch.is_inference_mode_enabled()})
        if full_load:
            self.model.to(device_to)

    def detach(self, unpatch_all=True):
        if unpatch_all:
            self.model.to(self.offload_device)
        return self.model


class FakeModelManagement(types.SimpleNamespace):
    def __init__(self):
        super().__init__(current_loaded_models=[], calls=[])

    def get_torch_device(self):
        return CPU

    def unet_offload_device(self):
        return CPU

    def load_models_gpu(self, models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        self.calls.append({"models": list(models), "memory_required": memory_required})
        for p in models:
            p.load(p.load_device, lowvram_model_memory=1, full_load=False)  # as a --lowvram partial load asks
            if p not in self.current_loaded_models:
                self.current_loaded_models.insert(0, p)

    def unload_all_models(self):
        while self.current_loaded_models:
            self.current_loaded_models.pop().detach(True)

    def free_memory(self, memory_required, device, keep_loaded=()):
        self.calls.append({"free_memory": memory_required})


@pytest.fixture()
def comfy(pack, monkeypatch, tmp_path):
    """The pack's model management bound to the stand-in ComfyUI (spills go to tmp_path/spill)."""
    mm = pack.nodes.model_management
    fake = FakeModelManagement()
    monkeypatch.setattr(mm, "_mm", fake)
    monkeypatch.setattr(mm, "_mp", types.SimpleNamespace(ModelPatcher=FakeModelPatcher))
    monkeypatch.setattr(mm, "_patcher_class", None)
    monkeypatch.setattr(mm, "spill_dir", lambda: tmp_path / "spill")
    (tmp_path / "spill").mkdir()
    return fake


@pytest.fixture()
def clip_file(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    path = save_clip(build_tiny_clip(patch_size=16, seed=0, device="cpu"), folder / "tiny.safetensors", note="tiny")
    monkeypatch.setenv("T2L_MODELS_DIR", str(folder))
    return path


def _relevancy(pack, clip, astronaut):
    with torch.inference_mode():  # as ComfyUI runs nodes
        mask, _ = pack.NODE_CLASS_MAPPINGS["T2L_RelevancyMap"]().run(clip, astronaut.permute(0, 2, 3, 1), "astronaut")
    return mask


def _load_clip(pack):
    with torch.inference_mode():
        (clip,) = pack.NODE_CLASS_MAPPINGS["T2L_LoadCLIP"]().load("tiny.safetensors", "auto", "fp32")
    return clip


def test_outside_comfyui_nothing_is_managed(pack, clip_file, astronaut):
    mm = pack.nodes.model_management
    assert not mm.available()  # the test environment has no ComfyUI
    clip = _load_clip(pack)
    assert mm.patcher_of(clip) is None
    mm.use(clip)  # no-op
    assert _relevancy(pack, clip, astronaut).shape == (1, 96, 128)


def test_load_clip_hands_the_clip_to_comfyui_and_nodes_load_it_whole_before_running(pack, comfy, clip_file,
                                                                                     astronaut):
    mm = pack.nodes.model_management
    clip = _load_clip(pack)
    patcher = mm.patcher_of(clip)
    assert isinstance(patcher, FakeModelPatcher) and patcher.model is clip.model
    assert (patcher.load_device, patcher.offload_device) == (CPU, CPU)
    assert comfy.current_loaded_models == []  # Load CLIP only loads the weights; the nodes running it load it
    _relevancy(pack, clip, astronaut)
    assert comfy.current_loaded_models == [patcher]
    # whole (our modules have no per-layer weight casting), outside inference mode (training backpropagates)
    assert patcher.loads == [{"device": CPU, "full_load": True, "inference": False}]
    assert patcher.clone().t2l is patcher.t2l


def test_unloading_on_the_cpu_drops_the_weights_and_the_next_node_reads_them_back(pack, comfy, clip_file,
                                                                                  astronaut, caplog):
    mm = pack.nodes.model_management
    clip = _load_clip(pack)
    first = _relevancy(pack, clip, astronaut)
    held = tensor_bytes(clip.model)
    assert clip._text_cache
    with caplog.at_level(logging.INFO, logger="text2live"):
        comfy.unload_all_models()  # what POST /free {"unload_models": true} does
    assert tensor_bytes(clip.model) == 0 and not clip._text_cache
    assert mm.patcher_of(clip).t2l.released
    assert any("unloaded" in r.message and f"{held / 2**20:.1f} MiB" in r.message for r in caplog.records)
    assert not list((clip_file.parent.parent / "spill").glob("*"))  # read back from its own file, not spilled
    with caplog.at_level(logging.INFO, logger="text2live"):
        again = _relevancy(pack, clip, astronaut)
    assert any("reloading" in r.message for r in caplog.records)
    assert tensor_bytes(clip.model) == held and not mm.patcher_of(clip).t2l.released
    assert torch.equal(again, first)
    # the weights read back are ordinary tensors (loaded outside inference mode): gradients flow through them
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    clip.encode_image(x).sum().backward()
    assert x.grad is not None


def test_a_weights_file_changed_after_the_unload_is_refused(pack, comfy, clip_file, astronaut):
    clip = _load_clip(pack)
    _relevancy(pack, clip, astronaut)
    comfy.unload_all_models()
    save_clip(build_tiny_clip(patch_size=16, seed=1, device="cpu"), clip_file, note="other")
    with pytest.raises(RuntimeError, match="has changed or gone"):
        _relevancy(pack, clip, astronaut)


def test_train_edit_layer_loads_the_clip_with_the_memory_training_needs(pack, comfy, clip_file, astronaut,
                                                                        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mm = pack.nodes.model_management
    clip = _load_clip(pack)
    with torch.inference_mode():
        *_, layer = pack.NODE_CLASS_MAPPINGS["T2L_TrainEditLayer"]().train(clip, astronaut.permute(0, 2, 3, 1).clone(),
                                                                           **NODE_KW)
    (call,) = comfy.calls
    assert call["models"] == [mm.patcher_of(clip)]
    assert call["memory_required"] == pack.nodes.edit_nodes.edit_training_bytes(NODE_KW["size"])
    assert layer._cache == {}  # the layer ComfyUI keeps holds no generator copy


def test_offloading_to_another_device_keeps_the_weights(pack, comfy):
    mm = pack.nodes.model_management
    clip = build_tiny_clip(patch_size=16, seed=0, device="cpu")
    held = tensor_bytes(clip.model)
    mm.manage_clip(clip, torch.device("cuda"), CPU, source=lambda: pytest.fail("nothing to read back"))
    patcher = mm.patcher_of(clip)
    patcher.detach(True)  # a GPU model offloaded to the CPU: the weights stay (in RAM)
    assert tensor_bytes(clip.model) == held and not patcher.t2l.released
    mm.manage_clip(clip, CPU, CPU, source=lambda: pytest.fail("nothing to read back"))
    mm.patcher_of(clip).detach(unpatch_all=False)  # what ModelPatcher.__del__ does: not an unload
    assert tensor_bytes(clip.model) == held


def _atlas() -> FittedNLA:
    torch.manual_seed(0)
    model = LayeredAtlas(AtlasConfig(height=16, width=24, frames=2)).requires_grad_(False)
    return FittedNLA(model=model, frames_u8=torch.zeros(2, 3, 16, 24, dtype=torch.uint8), fit_config={})


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_fitted_atlas_is_spilled_to_a_temp_file_when_unloaded_and_read_back(pack, comfy, tmp_path):
    mm = pack.nodes.model_management
    nla = _atlas()
    weights = {k: v.clone() for k, v in module_tensors(nla.model).items()}
    mm.use(mm.manage_atlas(nla))  # what Fit Layered Atlas does with its result
    assert comfy.current_loaded_models == [mm.patcher_of(nla)]
    comfy.unload_all_models()
    (spill,) = (tmp_path / "spill").glob("*.pt")
    assert tensor_bytes(nla.model) == 0
    mm.use(nla)  # e.g. Atlas Render
    assert _same(module_tensors(nla.model), weights)
    assert not spill.exists()
    # dropped while unloaded: the spill file goes with it
    comfy.unload_all_models()
    (spill,) = (tmp_path / "spill").glob("*.pt")
    comfy.calls.clear()  # the stand-in's record of calls (ComfyUI keeps weak references only)
    del nla
    gc.collect()
    assert not spill.exists()


def test_an_atlas_from_a_file_is_read_back_from_that_file(pack, comfy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Save Atlas writes to ./t2l_outputs outside ComfyUI
    mm = pack.nodes.model_management
    path = save_nla(_atlas(), str(tmp_path / "atlas.safetensors"))
    nla = mm.load_atlas_file(path)
    weights = {k: v.clone() for k, v in module_tensors(nla.model).items()}
    mm.use(nla)
    comfy.unload_all_models()
    assert tensor_bytes(nla.model) == 0 and not list((tmp_path / "spill").glob("*"))
    with torch.inference_mode():
        (saved,) = pack.NODE_CLASS_MAPPINGS["T2L_SaveNLA"]().save(nla, "again")["result"]
    assert _same(module_tensors(nla.model), weights)
    from t2l_core.nla.atlas_files import load_nla

    assert _same(module_tensors(load_nla(saved).model), weights)  # saved with its weights, not empty ones
