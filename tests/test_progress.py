"""Cancellation inside a long forward/backward pass (not only between steps)."""

from __future__ import annotations

import pytest
import torch

from t2l_core.progress import Cancelled, Hooks, cancel_inside


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()) for _ in range(5)])


def test_cancel_is_seen_inside_the_forward_pass():
    net, calls = _net(), []

    def check():
        calls.append(len(calls))
        if len(calls) == 3:  # the third layer asks: stop
            raise Cancelled("stop")

    with cancel_inside(check, net), pytest.raises(Cancelled):
        net(torch.randn(2, 8))
    assert len(calls) == 3
    net(torch.randn(2, 8))  # hooks are gone after the block
    assert len(calls) == 3


def test_cancel_is_seen_inside_the_backward_pass():
    net = _net()
    x = torch.randn(2, 8, requires_grad=True)
    state = {"armed": False, "backward_calls": 0}

    def check():
        if state["armed"]:
            state["backward_calls"] += 1
            raise Cancelled("stop")

    with cancel_inside(check, net):
        y = net(x).sum()
        state["armed"] = True  # the user cancels after the forward pass
        with pytest.raises(Cancelled):
            y.backward()
    assert state["backward_calls"] == 1
    assert x.grad is None  # the backward pass stopped before reaching the input


def test_no_check_means_no_hooks():
    net = _net()
    with cancel_inside(None, net):
        assert all(not m._forward_hooks for m in net.modules())


# ---------------------------------------------------------------------------------- phases other than training
def test_phases_report_progress_and_can_be_cancelled(capsys):
    """Fit Layered Atlas reports optical flow, colour init, reconstruction and atlas sampling as phases (each
    counting up to its total), and a cancel during the optical flow stops before any fitting."""
    from synthetic_video import make_synthetic_video

    from t2l_core.nla.fit import NLAFitConfig, fit_nla
    from t2l_core.progress import Hooks, console_phase_printer

    vid = make_synthetic_video(frames=4, height=32, width=40)
    seen: dict = {}
    steps = []

    def on_phase(name, done, total):
        seen.setdefault(name, []).append((done, total))

    hooks = Hooks(on_step=lambda s, t, losses, p: steps.append(s), on_phase=on_phase)
    cfg = NLAFitConfig(iterations=10, seed=0, batch_pixels=512, flow="lk", atlas_resolution=32)
    nla = fit_nla(vid.frames, vid.masks, cfg, hooks=hooks, device="cpu")
    nla.atlas_images(on_progress=hooks.phase_callback("atlas images"))
    flow = next(v for k, v in seen.items() if k.startswith("optical flow"))
    assert flow == [(i, 3) for i in range(1, 4)]  # 3 frame pairs of 4 frames
    recon = next(v for k, v in seen.items() if k.startswith("reconstruction"))
    assert recon == [(i, 4) for i in range(1, 5)]
    assert any(k.startswith("atlas colour init") for k in seen)
    atlas = seen["atlas images"]
    assert atlas[-1][0] == atlas[-1][1] == len(atlas) and len(atlas) == len(nla.bboxes)  # one chunk per layer here
    assert steps == list(range(1, 11))

    calls = {"n": 0}

    def cancel_in_flow():
        calls["n"] += 1
        if calls["n"] == 2:  # the second cancel point is inside the optical flow phase
            raise Cancelled("stop")

    trained = []
    with pytest.raises(Cancelled):
        fit_nla(vid.frames, vid.masks, cfg, hooks=Hooks(on_step=lambda *a: trained.append(1),
                                                        check_cancel=cancel_in_flow), device="cpu")
    assert trained == []

    printer = console_phase_printer(parts=2)
    for i in range(1, 11):
        printer("rendering (frames)", i, 10)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["rendering (frames): 1/10", "rendering (frames): 5/10", "rendering (frames): 10/10"]


# ------------------------------------------------------------------------------------ start-up of training
@pytest.mark.parametrize("relevancy_on", ["once", "crop"])
def test_training_start_up_reports_each_phase_before_the_first_step(tiny_clip, astronaut, relevancy_on):
    """Before its first step a training run reports the checkpoint key, the relevancy map (when computed once,
    at the start), the internal dataset, the CLIP text bank and the structure target, each from 0 to its
    total; the very first event is a start-up phase, not a step."""
    from _edit_helpers import tiny_config

    from t2l_core import progress as P
    from t2l_core.api import train_edit_layer

    events = []
    hooks = Hooks(on_phase=lambda name, done, total: events.append(("phase", name, done, total)),
                  on_step=lambda step, total, losses, preview: events.append(("step", step, total)))
    cfg = tiny_config(iters=2, roi_text="astronaut", relevancy_on=relevancy_on)
    train_edit_layer(tiny_clip, astronaut, cfg, hooks=hooks)
    first_step = events.index(("step", 1, 2))
    before = events[:first_step]
    assert events[0][0] == "phase" and all(e[0] == "phase" for e in before)
    expected = [P.PHASE_KEY] + ([P.PHASE_RELEVANCY] if relevancy_on == "once" else []) + [
        P.PHASE_DATASET, P.PHASE_TEXT, P.PHASE_STRUCTURE]
    assert list(dict.fromkeys(e[1] for e in before)) == expected
    for name in expected:
        seen = [(e[2], e[3]) for e in before if e[1] == name]
        total = seen[0][1]
        assert seen[0] == (0, total) and seen[-1] == (total, total), (name, seen)
    text = [(e[2], e[3]) for e in before if e[1] == P.PHASE_TEXT]
    assert text == [(0, 3), (1, 3), (2, 3), (3, 3)]  # composition, screen and source banks
    assert not any(e[0] == "phase" for e in events[first_step:])  # nothing is reported twice


def test_start_up_phases_are_cancel_points(tiny_clip, astronaut):
    """A cancel during the start-up stops the run before any step."""
    from _edit_helpers import tiny_config

    from t2l_core import progress as P
    from t2l_core.api import train_edit_layer

    state = {"phase": None, "steps": 0}

    def check():
        if state["phase"] == P.PHASE_TEXT:
            raise Cancelled("stop")

    hooks = Hooks(on_phase=lambda name, done, total: state.update(phase=name), check_cancel=check,
                  on_step=lambda *a: state.update(steps=state["steps"] + 1))
    with pytest.raises(Cancelled):
        train_edit_layer(tiny_clip, astronaut, tiny_config(iters=2), hooks=hooks)
    assert state["steps"] == 0
