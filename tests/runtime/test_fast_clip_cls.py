"""The fast encode_image runs its last block on the CLS row only (no work whose result is unused).

The embedding reads only the CLS token after the last block, so that block needs its keys and values from
every token but its query, output projection and MLP for one row. Embeddings, returned tokens and input
gradients must equal the plain path to float rounding; the FLOPs saved must be the hand-computed share.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

TOL = 1e-5  # float64 weights and images (tiny_clip64): rounding that does not depend on the CPU
SIZES = [(64, 64), (48, 80)]  # native square; non-square with a resampled position grid


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _images(h: int, w: int) -> torch.Tensor:
    return torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * 1000 + w), dtype=torch.float64)


def _embed_and_grad(clip, x: torch.Tensor, tokens_block=None):
    """Embeddings, tokens (or None) and d(loss)/d(image) for a loss reading both."""
    x = x.clone().requires_grad_(True)
    if tokens_block is None:
        emb, tokens = clip.encode_image(x), None
        loss = emb.square().sum()
    else:
        emb, tokens = clip.encode_image(x, tokens_block=tokens_block)
        loss = emb.square().sum() + tokens.square().mean()
    loss.backward()
    return emb.detach().double(), None if tokens is None else tokens.detach().double(), x.grad


def _assert_same(clip_a, clip_b, x, tokens_block=None):
    ea, ta, ga = _embed_and_grad(clip_a, x, tokens_block)
    eb, tb, gb = _embed_and_grad(clip_b, x, tokens_block)
    assert _rel(ea, eb) < TOL and _rel(ga, gb) < TOL
    if tokens_block is not None:
        assert ta.shape == tb.shape and _rel(ta, tb) < TOL


@pytest.mark.parametrize("checkpoint_blocks", [False, True])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("tokens_block", [None, -1, 1])
def test_cls_only_last_block_equals_plain_path(tiny_clip64, checkpoint_blocks, size, tokens_block):
    fast = tiny_clip64.view(fused=True, grad_checkpointing=checkpoint_blocks)
    assert fast.cls_only_last_block
    _assert_same(fast, tiny_clip64, _images(*size), tokens_block)


def _flops(fn, x: torch.Tensor) -> int:
    """FLOPs of forward + backward to the image; the math SDPA kernel so attention matmuls are counted."""
    x = x.clone().requires_grad_(True)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(x).square().sum().backward()
    return counter.get_total_flops()


def test_pruned_last_block_saves_the_expected_flops(tiny_clip):
    fast = tiny_clip.view(fused=True)
    h, w = SIZES[1]
    x = _images(h, w)
    blk = tiny_clip.visual.transformer.resblocks[-1]
    b, c, m = x.shape[0], tiny_clip.width, blk.mlp.c_fc.out_features
    t = 1 + (h // tiny_clip.patch_size) * (w // tiny_clip.patch_size)
    # Last block, per image, what the CLS-only form skips (2 FLOPs per multiply-add):
    #   forward: query + out_proj 2*2*(t-1)*c*c, MLP 2*2*(t-1)*c*m, scores and weighted sum 2*2*(t-1)*t*c;
    #   backward to the input (frozen weights): the same linear work again, twice the attention matmuls.
    saved = b * (8 * (t - 1) * c * (c + m) + 12 * (t - 1) * t * c)
    plain = _flops(tiny_clip.encode_image, x)
    pruned = _flops(fast.encode_image, x)
    assert plain - pruned == saved
    # the full last block on this input costs per image 24*t*c*c + 4*t*t*c (fwd), twice that with backward
    full_last_block = 2 * b * (6 * t * c * c + 2 * t * c * c + 4 * t * c * m + 4 * t * t * c)
    assert 0.7 * full_last_block < saved < full_last_block


def _with_visual_attr(clip, name: str, value):
    """A shallow copy of ``clip`` with its own model copy whose vision tower has ``name = value``."""
    other = copy.copy(clip)
    other.model = copy.deepcopy(clip.model)
    setattr(other.model.visual, name, value)
    return other


def test_fallback_to_the_full_block_when_the_tower_does_not_pool_cls(tiny_clip64):
    avg = _with_visual_attr(tiny_clip64, "pool_type", "avg")  # embedding = mean of the patch tokens
    fast = avg.view(fused=True)
    assert not fast.cls_only_last_block
    x = _images(*SIZES[1])
    _assert_same(fast, avg, x)
    _assert_same(fast, avg, x, tokens_block=-1)
    # the CLS-only form would be wrong here: the averaged embedding differs from the CLS one
    with torch.no_grad():
        assert _rel(fast.encode_image(x), tiny_clip64.view(fused=True).encode_image(x)) > 1e-2


def test_final_ln_after_pool_keeps_the_pruned_path(tiny_clip64):
    """ln_post before or after taking the CLS token is the same per-token LayerNorm: still pruned, same values."""
    late_ln = _with_visual_attr(tiny_clip64, "final_ln_after_pool", True)
    fast = late_ln.view(fused=True)
    assert fast.cls_only_last_block
    _assert_same(fast, late_ln, _images(*SIZES[1]))
