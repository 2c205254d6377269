"""Shared helpers for the edit-layer tests: tiny working sizes so training runs in seconds on a CPU."""

from __future__ import annotations


from t2l_core.edit.generator import GeneratorConfig
from t2l_core.edit.config import EditConfig

SMALL_GENERATOR = GeneratorConfig(channels_down=16, channels_up=16)  # same topology, 7 scales, fewer channels


def tiny_config(**overrides) -> EditConfig:
    """Smallest working size the generator accepts (129 px), 4 CLIP views of 48 px, a 16-channel generator."""
    base = dict(prompt="golden astronaut", source_prompt="astronaut", iters=8, size=129, n_views=4,
                view_short_side=48, view_max_long=64, structure_max_long=80, generator=SMALL_GENERATOR)
    base.update(overrides)
    return EditConfig.from_flat(**base)

