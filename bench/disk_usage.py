"""What the pack leaves on disk: the size of an edit checkpoint, an atlas-fit checkpoint and an optical-flow
cache, measured on files written by the core's own writers with the state a run holds (model and optimizer
state after one step; sizes do not depend on the number of steps), at the sizes listed.

    python bench/disk_usage.py

Edit checkpoints hold the generator (weights and BatchNorm buffers) and its MADGRAD state (3 tensors per
parameter), so their size does not depend on the image. Atlas checkpoints hold the atlas networks and Adam's
two moments (3x the parameters). The flow cache holds forward and backward flow in fp16 and two
consistency masks per consecutive frame pair: 10 bytes per pixel per pair.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2l_core.nla.atlas_model import AtlasConfig, LayeredAtlas  # noqa: E402
from t2l_core.edit.generator import GeneratorConfig, build_generator  # noqa: E402
from t2l_core.nla.fit import NLAFitConfig  # noqa: E402
from t2l_core.nla.optical_flow import save_flow  # noqa: E402
from t2l_core.edit.config import EditConfig  # noqa: E402
from t2l_core.checkpoint import EDIT_JOB, CheckpointFile  # noqa: E402
from t2l_core.edit.training_state import write_state  # noqa: E402

MB = 1e6


def edit_checkpoint_bytes(folder: Path) -> int:
    """A default-generator edit checkpoint as a run writes it (weights, BatchNorm buffers, MADGRAD state after
    one step, RNG state, config and history in the header)."""
    import madgrad

    cfg = EditConfig.from_flat(prompt="x", generator=GeneratorConfig())
    gen = build_generator(cfg.generator, seed=0)
    opt = madgrad.MADGRAD(gen.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay)
    for p in gen.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    path = write_state(CheckpointFile(folder / "edit.safetensors", EDIT_JOB, "0" * 64), gen, opt, 1,
                       torch.Generator().get_state(), cfg.to_dict(), [{"total": 1.0}])
    return path.stat().st_size


def atlas_files_bytes(folder: Path, frames: int, height: int, width: int) -> tuple[int, int, int]:
    """(checkpoint bytes, flow cache bytes, atlas parameters) of a fit with masks at this size, as the fit
    writes them (atlas networks + Adam state after one step; flow in fp16 + consistency masks)."""
    from t2l_core.nla.fit import fit_optimizer
    from t2l_core.nla.fit_checkpoint import fit_checkpoint_file, write_fit_state
    from t2l_core.nla.optical_flow import VideoFlow

    model = LayeredAtlas(AtlasConfig(height=height, width=width, frames=frames, has_foreground=True))
    opt = fit_optimizer(model, NLAFitConfig())
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    ck = str(folder / "fit.safetensors")
    write_fit_state(fit_checkpoint_file(ck, "0" * 16), model, opt, 1, torch.Generator(), NLAFitConfig())
    shape = (frames - 1, height, width)
    flow = VideoFlow(torch.zeros(shape[0], 2, height, width, dtype=torch.float16),
                     torch.zeros(shape[0], 2, height, width, dtype=torch.float16),
                     torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool))
    save_flow(flow, str(folder / "flow.safetensors"), key="0" * 16)
    n = sum(p.numel() for p in model.parameters())
    return os.path.getsize(ck), os.path.getsize(folder / "flow.safetensors"), n


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        e = edit_checkpoint_bytes(folder)
        print(f"edit checkpoint (default generator, any image size): {e / MB:.1f} MB", flush=True)
        for t, h, w in ((8, 144, 176), (50, 432, 768), (250, 432, 768)):
            ck, fl, n = atlas_files_bytes(folder, t, h, w)
            print(f"atlas fit with masks, {t} frames {w}x{h}: checkpoint {ck / MB:.1f} MB ({n:,} parameters, "
                  f"{ck / n:.2f} B/parameter), flow cache {fl / MB:.1f} MB "
                  f"({fl / ((t - 1) * h * w):.2f} B per pixel per frame pair)", flush=True)


if __name__ == "__main__":
    main()
