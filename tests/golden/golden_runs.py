"""The runs the golden test pins down: a 3-step image edit and a 3-step atlas (video) edit with the tiny
CLIP on the plain and the fast path, a short atlas fit, and checkpoints left by a cancel in each of them.

``python tests/golden/golden_runs.py --record`` writes ``golden.json`` (loss histories, the machine they were
recorded on) and the saved files (layer, atlas, checkpoints) next to this file, from the inputs in
``inputs.safetensors`` (written first when missing). ``tests/test_golden.py`` runs the same jobs again and
compares: equal on the machine that recorded them, within fp32 rounding on another, and the recorded files
must still load and resume. Re-recording means the code's results changed: raise
``t2l_core.checkpoint.RESULT_VERSION`` and enter the new digest in ``tests/test_result_version.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent
INPUTS = HERE / "inputs.safetensors"
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))

from synthetic_video import make_synthetic_video  # noqa: E402

from t2l_core import api  # noqa: E402
from t2l_core.device import cpu_name  # noqa: E402
from t2l_core.runtime.measures import FastMeasures, forced_measures  # noqa: E402

IMAGE_STEPS = VIDEO_STEPS = 3
CANCEL_AFTER = 2
NLA_ITERATIONS = 12
NLA_CANCEL_AFTER = 8
# the fast path's measures of an AVX-512 CPU, pinned so that a CPU whose default differs (no channels-last on
# AVX2) computes the same way and differs from the recording only by rounding
RECORDED_MEASURES = FastMeasures(trim_heap=False)
SMALL_GENERATOR = dict(channels_down=16, channels_up=16)
VIDEO_GENERATOR = dict(num_scales=5, channels_down=16, channels_up=16)


def machine_key() -> dict:
    """What must match for two runs to be equal bit for bit: CPU, vector ISA, torch build, threads."""
    return {"cpu": cpu_name(), "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def make_inputs() -> dict:
    """The runs' inputs in 8 bits, as image and video files hold them: skimage's astronaut at 96x128 and a
    synthetic 8-frame 48x64 video with binary foreground masks (uint8 [H,W,3], [T,H,W,3] and [T,H,W])."""
    import torch.nn.functional as F
    from skimage import data

    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    img = F.interpolate(img[:, :, 32:416, :], size=(96, 128), mode="bilinear", antialias=True, align_corners=False)
    v = make_synthetic_video(frames=8, height=48, width=64, bg_velocity=(2.0, 1.0), fg_velocity=(-2.0, 1.0))
    u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8)  # noqa: E731
    return {"image": u8(img[0].permute(1, 2, 0)).contiguous(), "frames": u8(v.frames.permute(0, 2, 3, 1)).contiguous(),
            "masks": v.masks.to(torch.uint8).contiguous()}


def inputs() -> dict:
    """The recorded inputs (``inputs.safetensors``): the same bytes on every machine, so the keys of the
    recorded checkpoints, which hash them, are the same everywhere."""
    from safetensors.torch import load_file

    return load_file(str(INPUTS))


def image() -> torch.Tensor:
    """The recorded astronaut, [1,3,96,128] in 0..1."""
    return inputs()["image"].permute(2, 0, 1)[None].float() / 255.0


def video() -> SimpleNamespace:
    """The recorded video: ``frames`` [8,3,48,64] in 0..1 and ``masks`` [8,48,64] in {0, 1}."""
    x = inputs()
    return SimpleNamespace(frames=x["frames"].permute(0, 3, 1, 2).float() / 255.0, masks=x["masks"].float())


def image_edit(clip, fast: bool, **kw):
    config = api.image_edit_config(prompt="golden astronaut", source_prompt="astronaut", iters=IMAGE_STEPS,
                                   size=129, n_views=4, view_short_side=48, view_max_long=64,
                                   structure_max_long=80, fast=fast, generator=SMALL_GENERATOR)
    with forced_measures(RECORDED_MEASURES):
        return api.train_edit_layer(clip, image(), config, **kw)


def recording(history: list, cancel_at: int = 0):
    """Hooks that append each step's losses to ``history`` and cancel once step ``cancel_at`` is done."""
    def on_step(step, total, losses, preview):
        history.append({k: float(v) for k, v in losses.items()})
        if step == cancel_at:
            raise api.Cancelled("golden: cancel")
    return api.Hooks(on_step=on_step)


def nla_fit(history: list, cancel_at: int = 0, **kw):
    v = video()
    # the recording predates the affine motion initialisation and the motion prior: the fit it pins starts from
    # translations and has no prior
    config = api.nla_fit_config(iterations=NLA_ITERATIONS, batch_pixels=2048, seed=0, flow="lk",
                                motion_init="translation", weights={"residual_bg": 0.0})
    return api.fit_nla(v.frames, v.masks, config, hooks=recording(history, cancel_at), device="cpu", **kw)


def video_edit(clip, nla, fast: bool, **kw):
    config = api.video_edit_config(prompt="golden astronaut", source_prompt="astronaut", layer="bg",
                                   iters=VIDEO_STEPS, n_views=4, view_short_side=48, view_max_long=64,
                                   structure_max_long=80, full_image_every=2, fast=fast, generator=VIDEO_GENERATOR)
    with forced_measures(RECORDED_MEASURES):
        return api.train_video_edit_layer(clip, nla, config, render=False, **kw)


def cancelled(fn, path: Path) -> None:
    """Run ``fn(path)`` from the start (an earlier recording's checkpoint is removed first) and expect the
    cancel; the checkpoint stays at ``path``."""
    path.unlink(missing_ok=True)
    try:
        fn(path)
    except api.Cancelled:
        return
    raise AssertionError("the golden run was expected to be cancelled")


def record() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if not INPUTS.is_file():
        from safetensors.torch import save_file

        save_file(make_inputs(), str(INPUTS))
    clip = api.build_tiny_clip(patch_size=16, seed=0, device="cpu")
    out: dict = {"machine": machine_key()}
    for fast in (False, True):
        r = image_edit(clip, fast)
        out[f"image_{'fast' if fast else 'plain'}"] = r.history
        if fast:
            r.layer.save(HERE / "layer.safetensors")
    out["nla_fit"] = []
    nla = nla_fit(out["nla_fit"])
    out["nla_psnr"] = float(nla.psnr)
    api.save_nla(nla, str(HERE / "atlas.safetensors"))
    for fast in (False, True):
        r = video_edit(clip, nla, fast)
        out[f"video_{'fast' if fast else 'plain'}"] = r.history
    cancelled(lambda p: image_edit(clip, True, hooks=recording([], CANCEL_AFTER), checkpoint_path=p, resume=True),
              HERE / "image_checkpoint.safetensors")
    cancelled(lambda p: video_edit(clip, nla, True, hooks=recording([], CANCEL_AFTER), checkpoint_path=p,
                                   resume=True), HERE / "video_checkpoint.safetensors")
    cancelled(lambda p: nla_fit([], NLA_CANCEL_AFTER, checkpoint_path=str(p)), HERE / "nla_checkpoint.safetensors")
    (HERE / "golden.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["machine"]), "recorded")


if __name__ == "__main__":
    if "--record" not in sys.argv:
        sys.exit("usage: python tests/golden/golden_runs.py --record   (overwrites the golden files)")
    record()
