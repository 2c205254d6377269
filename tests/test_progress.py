"""Cancellation inside a long forward/backward pass (not only between steps)."""

from __future__ import annotations

import pytest
import torch

from t2l_core.progress import Cancelled, cancel_inside


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
