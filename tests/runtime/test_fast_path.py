"""The fast path computes the same thing as the plain fp32 path.

Paths are compared in float64 where both accept it (CLIP, generator and objective: ``tiny_clip64``), so
the test checks the maths and not the CPU: the loss terms then agree within 1e-5 relative (the objective
reports fp32 values, whose own rounding is ~1e-7), the CLIP image side within 1e-5 of its largest value.

The training loop itself runs in fp32. Its step-0 terms are compared with a tolerance derived from the
quantities they are built from: every term is a weight times a function of CLIP cosines, opacities or
self-similarities, all of size <= 1, and two fp32 summation orders through CLIP disagree on such a
quantity by ~1e-5 at most (measured: 8.5e-6 on the structure term between an AVX2 and an AVX-512 build),
so a term may differ by ``weight * FP32_UNIT_TOL`` in absolute value, plus 1e-4 relative.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from _edit_helpers import tiny_config
from t2l_core.device import autocast_dtype, thread_scope
from t2l_core.clip.relevancy import relevancy_map
from t2l_core.edit.objective import StepExamples, TextBanks, edit_objective
from t2l_core.edit.generator import build_generator
from t2l_core.image.internal_dataset import working_image
from t2l_core.seeding import make_generator
from t2l_core.edit.config import EditConfig
from t2l_core.image.training import input_fingerprint
from t2l_core.api import train_edit_layer

F64_REL_TOL = 1e-5  # float64 paths; the fp32 loss values they report carry ~1e-7 rounding
REL_TOL = 1e-4
FP32_UNIT_TOL = 1e-4  # 10x the largest fp32 disagreement measured on a unit-size CLIP quantity


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _term_weights(config: EditConfig, bootstrap_weight: float) -> dict[str, float]:
    """The factor in front of each loss term (the size of its unit-scale ingredients)."""
    w = config.weights
    return {"composition": w.composition, "directional": w.composition, "screen": w.screen,
            "structure": w.structure, "sparsity": w.sparsity_l1 + w.sparsity_l0, "bootstrap": bootstrap_weight,
            "total": w.composition * 2 + w.screen + w.structure + w.sparsity_l1 + w.sparsity_l0 + bootstrap_weight}


def test_fast_clip_matches_plain_clip_images_tokens_relevancy(tiny_clip, tiny_clip64):
    assert tiny_clip.view(fused=True).model is tiny_clip.model  # shared weights
    clip = tiny_clip64
    fast = clip.view(fused=True)
    assert fast.fused and not clip.fused
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 48, 72, generator=g, dtype=torch.float64)  # non-square, leftover pixels (72 = 4*16 + 8)
    with torch.no_grad():
        assert _close(fast.encode_image(x).double(), clip.encode_image(x)) < F64_REL_TOL
        assert _close(fast.image_tokens(x).double(), clip.image_tokens(x)) < F64_REL_TOL
    # gradients w.r.t. the image agree too
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    fast.encode_image(xa).square().sum().backward()
    clip.encode_image(xb).square().sum().backward()
    assert _close(xa.grad, xb.grad) < F64_REL_TOL
    ra = relevancy_map(fast, x, "astronaut", size=(24, 36))
    rb = relevancy_map(clip, x, "astronaut", size=(24, 36))
    assert (ra - rb).abs().max() < 1e-5  # min-max normalised maps in 0..1


@pytest.mark.device
def test_first_step_losses_equal_between_fast_and_plain(device_clip, astronaut):
    """Step 0 holds every term: crop + full image, relevancy bootstrap, structure, dir, screen, sparsity.
    fp32 on both paths (autocast off; on a CPU that is what ``auto`` gives)."""
    tiny_clip = device_clip
    cfg = dict(iters=1, roi_text="astronaut", bootstrap_steps=4, autocast="off")
    plain = train_edit_layer(tiny_clip, astronaut, tiny_config(fast=False, **cfg)).history[0]
    fast = train_edit_layer(tiny_clip, astronaut, tiny_config(fast=True, **cfg)).history[0]
    assert set(plain) == set(fast) and "bootstrap" in plain and "structure" in plain
    weights = _term_weights(tiny_config(**cfg), plain.get("bootstrap_weight", 0.0))
    for name in plain:
        if name in weights:
            tol = weights[name] * FP32_UNIT_TOL
            assert math.isclose(fast[name], plain[name], rel_tol=REL_TOL, abs_tol=tol), (name, fast[name], plain[name])
        else:  # the schedule's values (lr, bootstrap weight) do not depend on the path
            assert fast[name] == plain[name], name


def test_objective_equal_on_trained_weights(tiny_clip, tiny_clip64, astronaut):
    """Away from the initialisation too: same trained weights, same crop, same seed -> same loss terms
    (compared in float64).

    (Whole runs are not compared step by step: MADGRAD's first updates amplify 1e-7 rounding differences
    of near-zero gradients, so two correct runs drift apart like two runs on different BLAS builds.)
    """
    config = tiny_config(fast=False, iters=3, roi_text="astronaut")
    layer = train_edit_layer(tiny_clip, astronaut, config).layer
    gen = build_generator(config.generator)  # the plain layout (EditLayer.generator is channels-last)
    gen.load_state_dict(layer.state_dict)
    gen = gen.double()
    gen_fast = copy.deepcopy(gen).to(memory_format=torch.channels_last)
    x = working_image(astronaut, config.dataset.size).flip(-1).double().contiguous()  # an input the layer was not trained on
    banks = TextBanks.build(tiny_clip64, config.prompt, None, config.source_prompt)
    views = config.views
    results = []
    for clip, g, fmt in ((tiny_clip64, gen, torch.contiguous_format),
                         (tiny_clip64.view(fused=True), gen_fast, torch.channels_last)):
        out = g(x.contiguous(memory_format=fmt))
        rel = relevancy_map(clip, x, "astronaut", size=(224, 224))
        examples = StepExamples([x], [out[:, :3]], [out[:, 3:]], bootstrap_targets=[rel])
        _, terms = edit_objective(clip, examples, banks, views, config.weights, make_generator(7),
                                  bootstrap_weight=5.0)
        results.append(terms)
    plain, fast = results
    for name in plain:
        assert math.isclose(fast[name], plain[name], rel_tol=F64_REL_TOL, abs_tol=1e-7), (name, fast[name], plain[name])


def test_speed_settings_do_not_change_the_checkpoint_key(astronaut):
    a = EditConfig.from_flat(prompt="x", fast=True, threads=0, compile=False, autocast="auto")
    b = EditConfig.from_flat(prompt="x", fast=False, threads=3, compile=True, autocast="off")
    assert input_fingerprint(astronaut, a) == input_fingerprint(astronaut, b)
    assert input_fingerprint(astronaut, a) != input_fingerprint(astronaut, EditConfig.from_flat(prompt="y"))


def test_threads_respect_the_users_setting_and_autocast_choice():
    before = torch.get_num_threads()
    with thread_scope(0):
        assert torch.get_num_threads() == before  # 0 = leave the user's choice alone
    with thread_scope(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) is None  # measured slower on CPUs without AMX
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    assert autocast_dtype("off", cpu) is None
    try:
        EditConfig.from_flat(prompt="x", autocast="fp8").validate()
    except ValueError as e:
        assert "autocast" in str(e)
    else:
        raise AssertionError("a bad autocast mode must be refused")


def _rss_mib() -> float:
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_end_of_step_returns_freed_heap_pages_to_the_os(tiny_clip):
    """With save_memory the fast path trims glibc's heap after each step: freed pages between live tensors stop
    counting."""
    import pytest

    from t2l_core.runtime.cpu_heap import release_freed_heap
    from t2l_core.runtime.edit_runtime import EditRuntime

    if not release_freed_heap():
        pytest.skip("not glibc")
    # 3000 heap-sized tensors (96 KiB, below glibc's mmap threshold), every other one freed: fragmentation
    held = [torch.ones(24 * 1024) for _ in range(3000)]
    del held[::2]
    before = _rss_mib()
    EditRuntime(tiny_clip, fast=True, save_memory=True).end_step()
    after = _rss_mib()
    assert before - after > 80, (before, after)  # ~140 MiB freed between live tensors
    assert float(sum(t.sum() for t in held)) == 1500 * 24 * 1024  # the live tensors are intact


_HEAP_SCOPE_CHECK = """
import sys
import torch
from t2l_core.runtime.cpu_heap import mmap_threshold_scope

del_me = torch.ones(5 << 20)  # a freed 20 MiB mmapped block raises glibc's dynamic threshold to 20 MiB
del del_me

def rss():
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:"))

with mmap_threshold_scope(enabled=sys.argv[1] == "on") as active:
    keep, big = [], []
    for _ in range(40):  # small live tensors between the big ones: the heap top cannot simply shrink
        big.append(torch.ones(5 << 18))  # 5 MiB
        keep.append(torch.ones(1 << 12))
    before = rss()
    del big
    after = rss()
print(active, before - after, float(sum(t.sum() for t in keep)))
"""


def test_training_heap_scope_gives_freed_blocks_back_at_once():
    """Inside the scope, blocks of 4 MiB and more are mmapped: freeing them lowers RSS without a trim.

    Run in a fresh interpreter: glibc serves even large requests from free heap space left by earlier
    work (that is why the training loop also trims after every step), which other tests leave behind.
    """
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    def check(mode: str) -> list[str]:
        return subprocess.run([sys.executable, "-c", _HEAP_SCOPE_CHECK, mode], capture_output=True, text=True,
                              check=True, cwd=str(Path(__file__).resolve().parents[2])).stdout.split()

    on, off = check("on"), check("off")
    if on[0] != "True":
        pytest.skip("not glibc")
    assert float(on[1]) > 150, on  # 200 MiB of mmapped blocks unmapped on free
    assert float(off[1]) < 50, off  # without the scope they sit in the heap and stay resident
    assert float(on[2]) == float(off[2]) == 40 * 4096
