"""Every precision setting the pack offers is measured against fp32; a default must agree with fp32.

Agreement (t2l_core.runtime.precision_check.AGREEMENT_BOUND): whole-gradient cosine >= 0.99 and every non-negligible
weight tensor's gradient cosine >= 0.95, on one step of the objective at initialisation. On a CPU the bf16
settings are measured (fp16 autocast needs CUDA); bench/precision.py measures the same at full size.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _edit_helpers import SMALL_GENERATOR, tiny_config
from t2l_core.cli.edit_commands import PRECISIONS
from t2l_core.device import (AUTOCAST_MODES, CPU_DEFAULT_AUTOCAST, CUDA_DEFAULT_AUTOCAST, autocast_dtype,
                             generator_autocast_dtype, resolve_autocast)
from t2l_core.runtime.precision_check import AGREEMENT_BOUND, agreement, generator_gradients

CPU_MODES = [m for m in AUTOCAST_MODES if m not in ("auto", "off") and not m.startswith("fp16")]


@pytest.fixture(scope="module")
def measured(tiny_clip, astronaut):
    """Agreement with fp32 of each CPU-available setting, and of fp32 with other views (for scale)."""
    image = F.interpolate(astronaut, size=(129, 172), mode="bilinear", antialias=True, align_corners=False)
    config = tiny_config()
    ref = generator_gradients(tiny_clip, image, config, "off", SMALL_GENERATOR, weights_seed=3, views_seed=5)
    out = {m: agreement(m, generator_gradients(tiny_clip, image, config, m, SMALL_GENERATOR, weights_seed=3,
                                               views_seed=5), ref) for m in CPU_MODES}
    other = generator_gradients(tiny_clip, image, config, "off", SMALL_GENERATOR, weights_seed=3, views_seed=6)
    out["off, other views"] = agreement("off", other, ref)
    return out


def test_defaults_agree_with_fp32_and_failing_settings_are_not_defaults(measured):
    for mode in CPU_MODES:
        a = measured[mode]
        if not a.passes():
            assert mode not in (CUDA_DEFAULT_AUTOCAST, CPU_DEFAULT_AUTOCAST), a
    assert measured[CUDA_DEFAULT_AUTOCAST].passes(), measured[CUDA_DEFAULT_AUTOCAST]
    assert CPU_DEFAULT_AUTOCAST == "off"  # fp32 itself
    # the bound is meaningful: a different draw of the views moves the gradient far more
    assert measured["off, other views"].cosine < AGREEMENT_BOUND["cosine"]


def test_generator_bf16_autocast_is_measured_and_fails(measured):
    """Autocasting the generator too (the former CUDA default) loses the gradient's direction."""
    assert not measured["bf16"].passes(), measured["bf16"]


def test_auto_means_fp32_on_cpu_and_clip_only_autocast_elsewhere():
    cpu = torch.device("cpu")
    assert resolve_autocast("auto", cpu) == "off"
    assert autocast_dtype("auto", cpu) is None and generator_autocast_dtype("auto", cpu) is None
    assert autocast_dtype("bf16-clip", cpu) == torch.bfloat16 and generator_autocast_dtype("bf16-clip", cpu) is None
    assert generator_autocast_dtype("bf16", cpu) == torch.bfloat16
    assert CUDA_DEFAULT_AUTOCAST == "bf16-clip"
    with pytest.raises(ValueError, match="CUDA"):
        autocast_dtype("fp16-clip", cpu)
    assert tuple(PRECISIONS) == AUTOCAST_MODES  # the CLI offers every mode
