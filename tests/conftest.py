"""Shared fixtures. The repo root goes on sys.path through pytest's ``pythonpath`` setting so ``t2l_core``
imports as a top-level package; node modules are loaded the way ComfyUI loads the pack (see ``pack``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", choices=["cpu", "cuda"],
                     help="device of the tests marked 'device' (default cpu); "
                          "`pytest -m device --device cuda` runs them on the GPU")


def pytest_configure(config):
    if config.getoption("--device") == "cuda":
        if not torch.cuda.is_available():
            raise pytest.UsageError("--device cuda was given but CUDA is not available on this machine; "
                                    "run without --device (CPU) on this machine")
        # the device tests compare against fp32 references: plain fp32 arithmetic, no TF32 matrix units
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """The device of the tests marked ``device``: ``--device`` (cpu by default, cuda on a GPU machine)."""
    return torch.device(request.config.getoption("--device"))


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Every test works on tiny tensors: a single intra-op thread avoids oversubscribing the cores (pytest,
    subprocesses and other jobs share them) and is faster at these sizes."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_clip():
    """A tiny randomly initialised ViT CLIP (patch 16, native 64 px). NOT a real model."""
    from t2l_core.clip.loading import build_tiny_clip

    return build_tiny_clip(patch_size=16, seed=0, device="cpu")


@pytest.fixture(scope="session")
def device_clip(device, tiny_clip):
    """:func:`tiny_clip` on the test device (the very same object on CPU)."""
    if device.type == "cpu":
        return tiny_clip
    from t2l_core.clip.loading import build_tiny_clip

    return build_tiny_clip(patch_size=16, seed=0, device=device)


@pytest.fixture(scope="session")
def tiny_clip64(tiny_clip):
    """The tiny CLIP with float64 weights (the same values), for comparing two computation paths.

    Two fp32 paths that differ only in summation order (fused kernels, channels-last, another CPU's vector
    width) disagree by rounding that grows through the network; in float64 that rounding is ~1e9 times
    smaller, so an equality test between paths checks the maths and not the CPU it runs on.
    """
    import copy

    clip = copy.copy(tiny_clip)
    clip.model = copy.deepcopy(tiny_clip.model).double()
    clip.dtype = torch.float64
    clip._text_cache = {}
    return clip


@pytest.fixture(scope="session")
def tiny_clip_file(tmp_path_factory, tiny_clip):
    """The tiny CLIP saved in our .safetensors format."""
    from t2l_core.clip.loading import TINY_NOTE, save_clip

    return save_clip(tiny_clip, tmp_path_factory.mktemp("clip") / "tiny-clip.safetensors", note=TINY_NOTE)


def load_pack(alias: str = "t2l_pack"):
    """Import the repository root as a package, exactly as ComfyUI's loader does
    (``spec_from_file_location`` on ``__init__.py`` with ``submodule_search_locations``)."""
    if alias in sys.modules:
        return sys.modules[alias]
    spec = importlib.util.spec_from_file_location(alias, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pack():
    return load_pack()


@pytest.fixture(scope="session")
def astronaut() -> torch.Tensor:
    """A real photograph (skimage.data.astronaut) downscaled to [1,3,96,128] in 0..1."""
    import torch.nn.functional as F
    from skimage import data

    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    return F.interpolate(img[:, :, 32:416, :], size=(96, 128), mode="bilinear", antialias=True, align_corners=False)
