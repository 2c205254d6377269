"""The training, fitting and rendering paths on the test device (``--device``; CPU by default).

``python -m pytest -m device --device cuda`` runs these (and the other tests marked ``device``) on a GPU:
every tensor a loop creates must land on the device of the model it meets, results come back on the CPU,
and the device's numbers agree with the CPU's where the arithmetic is the same (fp32, no TF32).
Tiny sizes: the tiny CLIP, a 16-channel generator, 129 px images, 8-frame 48x64 videos.
"""

from __future__ import annotations

import math

import pytest
import torch


from _edit_helpers import SMALL_GENERATOR, tiny_config
from synthetic_video import make_synthetic_video

from t2l_core.nla.atlas_model import AtlasConfig, LayeredAtlas
from t2l_core.nla.render import AtlasEdit, make_bbox, render_edits
from t2l_core.edit.layer import EditLayer
from t2l_core.edit.generator import GeneratorConfig, build_generator
from t2l_core.nla.fit import NLAFitConfig, fit_nla
from t2l_core.nla.optical_flow import make_flow_estimator, pyramid_lk_flow
from t2l_core.api import train_edit_layer
from t2l_core.video.config import VideoEditConfig
from t2l_core.api import train_video_edit_layer

pytestmark = pytest.mark.device

VIDEO_GEN = GeneratorConfig(num_scales=5, channels_down=16, channels_up=16)  # min input 33 px


@pytest.fixture(scope="module")
def video():
    return make_synthetic_video(frames=8, height=48, width=64, bg_velocity=(2.0, 1.0), fg_velocity=(-2.0, 1.0))


@pytest.fixture(scope="module")
def device_nla(video, device):
    """An atlas fitted on the test device (built-in flow estimated there too)."""
    return fit_nla(video.frames, video.masks, NLAFitConfig(iterations=150, batch_pixels=4096, seed=0, flow="lk"),
                   device=device)


def _finite(history: list[dict]) -> bool:
    return all(math.isfinite(v) for h in history for v in h.values())


def test_image_edit_trains_on_the_device_and_returns_cpu_outputs(device_clip, device, astronaut):
    """The default path (fast, autocast auto: bf16 on CUDA), relevancy bootstrapping and the whole image."""
    result = train_edit_layer(device_clip, astronaut, tiny_config(iters=3, roi_text="astronaut", bootstrap_steps=4))
    assert len(result.history) == 3 and _finite(result.history)
    assert {"composition", "directional", "screen", "structure", "sparsity", "bootstrap"} <= set(result.history[0])
    out = result.output
    assert out.composite.device.type == "cpu" and out.composite.shape == astronaut.shape
    assert float(out.alpha.min()) >= 0 and float(out.alpha.max()) <= 1
    # the trained layer renders the same on the device as on the CPU (fp32 generator, same weights)
    on_cpu = result.layer.render(astronaut, device="cpu").composite
    on_dev = result.layer.render(astronaut, device=device).composite.cpu()
    assert (on_cpu - on_dev).abs().max() < 1e-4


def test_losses_are_reported_per_step_as_floats(device_clip, astronaut):
    """Losses leave the device once per step, after it: every logged value is a plain float."""
    seen = []
    from t2l_core.progress import Hooks

    hooks = Hooks(on_step=lambda step, total, losses, preview: seen.append(losses), preview_every=0)
    result = train_edit_layer(device_clip, astronaut, tiny_config(iters=2, fast=False), hooks=hooks)
    assert len(seen) == 2 and all(type(v) is float for h in seen for v in h.values())
    assert seen == result.history
    total = sum(v for k, v in seen[0].items() if k not in ("total", "lr", "bootstrap_weight"))
    assert math.isclose(seen[0]["total"], total, rel_tol=1e-5)


def test_edit_layer_on_the_device_equals_the_generator_on_the_cpu(device, astronaut):
    gen = build_generator(SMALL_GENERATOR, seed=3)
    layer = EditLayer(gen.state_dict(), SMALL_GENERATOR, {"prompt": ["x"], "steps": 0})
    img = torch.nn.functional.interpolate(astronaut, size=(140, 190), mode="bilinear")
    color, alpha = layer.predict(img, device=device)
    assert color.device == img.device  # outputs on the input's device
    with torch.no_grad():
        ref = gen(img)
    assert (torch.cat([color, alpha], 1) - ref).abs().max() < 1e-4


def test_video_edit_trains_on_a_device_atlas(device_clip, device_nla, device):
    """Foreground layer (NLA opacity, direct pass) with the whole atlas on the last step, then the render."""
    assert next(device_nla.model.parameters()).device.type == device.type
    config = VideoEditConfig.from_flat(prompt="golden astronaut", source_prompt="astronaut", layer="fg", iters=3, n_views=4,
                             view_short_side=48, view_max_long=64, structure_max_long=80, full_image_every=3,
                             generator=VIDEO_GEN, mask_border=4)
    result = train_video_edit_layer(device_clip, device_nla, config)
    assert len(result.history) == 3 and _finite(result.history)
    frames = result.frames
    assert frames.device.type == "cpu" and frames.shape == (8, 3, 48, 64)
    assert float(frames.min()) >= 0 and float(frames.max()) <= 1


def test_atlas_fit_on_the_device_reconstructs_the_video(device_nla, video):
    assert device_nla.psnr > 35.0  # 150 steps of 4096 pixels (the CPU reaches 45.9 dB)
    assert device_nla.reconstruction[0].device.type == "cpu"


def test_atlas_render_on_the_device_equals_the_cpu(device):
    model = LayeredAtlas(AtlasConfig(height=40, width=56, frames=4)).requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(4, 3, 40, 56, generator=g)
    edits = {}
    for layer in ("fg", "bg"):
        bbox = make_bbox(model, layer, resolution=64)
        edits[layer] = AtlasEdit(torch.rand(3, bbox.height, bbox.width, generator=g),
                                 torch.rand(bbox.height, bbox.width, generator=g), bbox)
    ref = render_edits(model, frames, edits["fg"], edits["bg"])
    out = render_edits(model.to(device), frames, edits["fg"], edits["bg"])
    model.to("cpu")
    assert out.device.type == "cpu" and (out - ref).abs().max() < 1e-5


def test_builtin_flow_on_the_device_recovers_known_motion(video, device):
    est, name = make_flow_estimator(device, (), "lk")
    f = est(video.frames[0], video.frames[1])
    assert name == "lk" and f.device.type == "cpu"
    ref = pyramid_lk_flow(video.frames[0], video.frames[1])
    err = (f - video.true_flow(0)).norm(dim=0)
    assert err.median() < 0.5 and (f - ref).abs().max() < 1e-2


def test_raft_runs_on_the_device_from_local_weights(tmp_path, device):
    """RAFT (random weights: the same computation as trained ones) from a local file, on the device."""
    from safetensors.torch import save_file
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in raft_small(weights=None).state_dict().items()},
              str(tmp_path / "raft_small_random.safetensors"))
    est, name = make_flow_estimator(device, [str(tmp_path)], "raft")
    assert name.startswith("raft:")
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 64, 96, generator=g), torch.rand(3, 64, 96, generator=g)
    flow = est(a, b)
    assert flow.shape == (2, 64, 96) and flow.device.type == "cpu" and bool(torch.isfinite(flow).all())


# ------------------------------------------------------------------------------ --device on the command line

COMMANDS_WITH_DEVICE = [
    ["image", "x.png", "--prompt", "p", "--out", "o"],
    ["edit", "x.png", "--prompt", "p", "--out", "o"],
    ["apply-layer", "l.safetensors", "x.png", "--out", "o"],
    ["relevancy", "x.png", "--text", "t", "--out", "o"],
    ["nla", "frames/"],
    ["render", "a.safetensors", "--out", "o"],
    ["video", "a.safetensors", "--prompt", "p", "--layer", "bg", "--out", "o"],
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("argv", COMMANDS_WITH_DEVICE, ids=lambda a: a[0])
def test_cli_device_cuda_without_cuda_names_the_flag(argv, capsys):
    from t2l_core.cli.main import main

    assert main(argv + ["--device", "cuda"]) == 2  # before any file is read
    err = capsys.readouterr().err
    assert "--device cuda" in err and "CUDA is not available" in err and "'cpu'" in err


def test_cli_device_names_are_checked(capsys):
    from t2l_core.cli.main import main

    assert main(["apply-layer", "l.safetensors", "x.png", "--out", "o", "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "--device gpu" in err and "'cuda'" in err
    if not torch.cuda.is_available():
        assert main(["nla", "frames/", "--device", "cuda:1"]) == 2
        assert "--device cuda:1" in capsys.readouterr().err
