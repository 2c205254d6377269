"""The fast path's measures, one at a time: each changes how a step is computed, never what; the defaults
follow the device and the user's memory setting."""

from __future__ import annotations

import dataclasses

import madgrad
import pytest
import torch

from _edit_helpers import tiny_config
from t2l_core.device import channels_last_pays
from t2l_core.runtime.edit_runtime import EditRuntime
from t2l_core.runtime.measures import FastMeasures, default_measures, forced_measures
from t2l_core.edit.generator import GeneratorConfig
from t2l_core.api import train_edit_layer

MEASURES = [f.name for f in dataclasses.fields(FastMeasures)]


def _first_step_gradient(clip, image, monkeypatch) -> torch.Tensor:
    """The generator's gradient at the first optimizer step of a one-step run (every loss term on)."""
    grads: list[torch.Tensor] = []
    real_step = madgrad.MADGRAD.step

    def record(self, *args, **kwargs):
        if not grads:
            grads.extend(p.grad.detach().double().flatten() for g in self.param_groups for p in g["params"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(madgrad.MADGRAD, "step", record)
    # four scales: the deepest BatchNorm sees 16x16 px, not the 1-2 px of the 7-scale generator at 129 px,
    # whose batch statistics of a handful of values would magnify rounding differences
    cfg = tiny_config(iters=1, roi_text="astronaut", bootstrap_steps=4,
                      generator=GeneratorConfig(channels_down=16, channels_up=16, num_scales=4))
    train_edit_layer(clip, image, cfg)
    return torch.cat(grads)


@pytest.fixture(scope="module")
def plain_gradient(tiny_clip, astronaut):
    with pytest.MonkeyPatch.context() as mp, forced_measures(FastMeasures.none()):
        return _first_step_gradient(tiny_clip, astronaut, mp)


@pytest.mark.parametrize("name", MEASURES)
def test_each_measure_alone_gives_the_plain_gradient(tiny_clip, astronaut, plain_gradient, monkeypatch, name):
    """One step with only ``name`` on: the generator's gradient equals the plain path's up to float rounding,
    relative to the gradient's size. The channels-last kernels (convolutions, BatchNorm statistics) sum in
    another order in every layer: 1.5e-3 measured, bound 1e-2; the other measures: below 1e-4, bound 1e-3."""
    tolerance = 1e-2 if name == "channels_last" else 1e-3
    only = dataclasses.replace(FastMeasures.none(), **{name: True})
    with forced_measures(only):
        grad = _first_step_gradient(tiny_clip, astronaut, monkeypatch)
    assert plain_gradient.norm() > 0
    assert (grad - plain_gradient).norm() < tolerance * plain_gradient.norm(), name


def test_runtime_uses_exactly_the_forced_measures(tiny_clip):
    only = dataclasses.replace(FastMeasures.none(), staged_backward=True, recompute_tails=True)
    with forced_measures(only):
        rt = EditRuntime(tiny_clip, fast=True)
    assert rt.measures == only and rt.staged_backward and not rt.trim_heap and not rt.mmap_large_blocks
    assert rt.clip is tiny_clip  # fused CLIP kernels off
    assert EditRuntime(tiny_clip, fast=True).measures == default_measures(torch.device("cpu"))  # scope ended


def test_plain_path_has_no_measure(tiny_clip):
    assert EditRuntime(tiny_clip, fast=False).measures == FastMeasures.none()
    assert EditRuntime(tiny_clip, fast=False, save_memory=True).measures == FastMeasures.none()


def test_save_memory_turns_every_measure_on():
    for device in ("cpu", "cuda"):
        assert default_measures(torch.device(device), save_memory=True) == FastMeasures()


def test_cpu_default_does_not_trim_the_heap_every_step_but_keeps_the_memory_measures():
    m = default_measures(torch.device("cpu"))
    assert not m.trim_heap  # measured: ~8% of a step for no lower peak once large blocks are mmapped
    assert m.mmap_large_blocks and m.recompute_tails and m.staged_backward and m.inplace_activations
    assert m.fused_clip
    assert m.channels_last == channels_last_pays("cpu")


def test_cuda_default_leaves_the_c_heap_alone():
    m = default_measures(torch.device("cuda"))
    assert not m.trim_heap and not m.mmap_large_blocks and m.channels_last


@pytest.mark.parametrize("capability, expected", [("AVX512", True), ("AVX2", False), ("DEFAULT", False)])
def test_channels_last_follows_the_cpu_vector_instructions(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert channels_last_pays("cpu") is expected
    assert default_measures(torch.device("cpu")).channels_last is expected
    assert channels_last_pays("cuda") is True


def test_without_turns_off_only_the_named_measures():
    m = FastMeasures().without("trim_heap", "channels_last")
    assert {n for n in MEASURES if not getattr(m, n)} == {"trim_heap", "channels_last"}
    assert not any(dataclasses.asdict(FastMeasures.none()).values())
