"""CLI: ``image`` (alias ``edit``): train an edit layer on one image; ``apply-layer``: apply a saved layer.

    python -m t2l_core image photo.jpg --prompt "oreo cake" --src-prompt cake --out results/
    python -m t2l_core apply-layer results/edit_layer.safetensors other.jpg --out results2/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .clip_commands import add_clip_arguments, clip_from_args

OUTPUT_FILES = ("composite.png", "edit.png", "alpha.png", "greenscreen.png")
# t2l_core.device.AUTOCAST_MODES, spelled out so that --help does not import torch (a test keeps them equal)
PRECISIONS = ("auto", "off", "bf16", "fp16", "bf16-clip", "fp16-clip")
RESOLUTIONS = ("working", "native")  # t2l_core.edit.layer.RESOLUTIONS


def _write_outputs(output, out: Path, index: int | None = None) -> list[Path]:
    from ..io.image_files import save_png

    suffix = "" if index is None else f"_{index:04d}"
    i = 0 if index is None else index
    written = [
        save_png(output.composite[i], out / f"composite{suffix}.png"),
        save_png(output.rgba()[i], out / f"edit{suffix}.png"),
        save_png(output.alpha[i], out / f"alpha{suffix}.png"),
        save_png(output.greenscreen[i], out / f"greenscreen{suffix}.png"),
    ]
    return written


def _train(args: argparse.Namespace) -> int:
    from ..io.image_files import load_image
    from ..progress import Hooks, console_printer
    from ..api import train_edit_layer
    from ..image.training import EditConfig, default_checkpoint_path

    image = load_image(args.image)  # RGB [1,3,H,W]; gray/RGBA converted
    config = EditConfig(
        prompt=args.prompt, screen_prompt=args.screen_prompt, source_prompt=args.src_prompt,
        roi_text=args.roi_prompt, iters=args.iters, size=args.size, seed=args.seed,
        lambda_composition=args.lambda_composition, lambda_screen=args.lambda_screen,
        lambda_structure=args.lambda_structure, sparsity_l1=args.sparsity_l1, sparsity_l0=args.sparsity_l0,
        lambda_bootstrap=args.lambda_bootstrap, n_views=args.views,
        fast=not args.no_fast, autocast=args.autocast, threads=args.threads, compile=args.compile,
        save_memory=args.save_memory,
    )
    config.validate()  # fail before loading CLIP
    out = Path(args.out)
    clip = clip_from_args(args)
    ckpt = Path(args.checkpoint) if args.checkpoint else default_checkpoint_path(out / "checkpoints", image, config,
                                                                                  clip=clip)
    hooks = Hooks(on_step=console_printer(args.log_every) if not args.quiet else None)
    result = train_edit_layer(clip, image, config, hooks=hooks, checkpoint_path=ckpt, resume=args.resume,
                              keep_checkpoint=args.keep_checkpoint, resolution=args.resolution)
    written = _write_outputs(result.output, out)
    written.append(result.layer.save(out / "edit_layer.safetensors"))
    for note in result.notes:
        print(f"note: {note}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _apply(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from ..edit.layer import EditLayer
    from ..io.image_files import load_image

    layer = EditLayer.load(args.layer, remedy="Give LAYER an edit_layer.safetensors written by the image command "
                                              "(in its --out folder) or by ComfyUI's Save Edit Layer.")
    device = resolve_device(args.device)
    out = Path(args.out)
    written: list[Path] = []
    for path in args.images:
        image = load_image(path)
        output = layer.render(image, device=device, size=args.size or None, resolution=args.resolution)
        sub = out if len(args.images) == 1 else out / Path(path).stem
        written += _write_outputs(output, sub)
    for note in layer.notes:
        print(f"note: {note}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def add_prompt_arguments(p, roi_help: str) -> None:
    """``--screen-prompt/--src-prompt/--roi-prompt`` and the CLIP options, shared by the image and video edits."""
    p.add_argument("--screen-prompt", default=None, help="green-screen text (default: the prompt)")
    p.add_argument("--src-prompt", "--source-prompt", dest="src_prompt", default=None,
                   help="text describing the input, e.g. 'cake': the directional loss's source text (default: the "
                        "--roi-prompt when given, the paper's form; without either no directional loss)")
    p.add_argument("--roi-prompt", "--roi-text", dest="roi_prompt", default=None, help=roi_help)
    add_clip_arguments(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("image", aliases=["edit"], help="train a text-driven edit layer on one image (Text2LIVE)")
    p.add_argument("image", help="input image file (any PIL format; gray/RGBA are converted to RGB)")
    p.add_argument("--prompt", required=True, help="target text, e.g. 'oreo cake' (several: separate with |)")
    add_prompt_arguments(p, roi_help="text of the region to edit; its relevancy map bootstraps the opacity")
    p.add_argument("--iters", type=int, default=1000, help="training steps (default %(default)s)")
    p.add_argument("--size", type=int, default=512, help="working size, shorter side in px (>=129; default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same result)")
    p.add_argument("--views", type=int, default=16, help="CLIP views per image (default %(default)s)")
    p.add_argument("--lambda-composition", type=float, default=1.0)
    p.add_argument("--lambda-screen", type=float, default=1.0)
    p.add_argument("--lambda-structure", type=float, default=2.0)
    p.add_argument("--sparsity-l1", type=float, default=0.06)
    p.add_argument("--sparsity-l0", type=float, default=0.06)
    p.add_argument("--lambda-bootstrap", type=float, default=10.0)
    p.add_argument("--no-fast", action="store_true",
                   help="use the plain fp32 path (the fast path is on by default and gives equal losses)")
    p.add_argument("--autocast", default="auto", choices=list(PRECISIONS),
                   help="precision of the fast path: auto = fp32 generator (TF32) + bf16 CLIP on CUDA, fp32 on CPU; "
                        "off = fp32 everywhere; bf16-clip/fp16-clip = CLIP passes only; bf16/fp16 = generator too "
                        "(its gradients disagree with fp32, bench/RESULTS.md) (default %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = keep torch's setting)")
    p.add_argument("--compile", action="store_true", help="experimental: torch.compile the generator (compiling is slow)")
    p.add_argument("--save-memory", action="store_true",
                   help="lower peak memory for slower steps (every memory measure on, activations recomputed)")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint file (default: OUT/checkpoints/edit_<hash>.safetensors)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint if a cancelled run with the same image, settings, --iters and "
                        "CLIP left it (another run's checkpoint is not used: training starts over)")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the checkpoint when the run finishes (default: only a cancelled or failed run leaves one)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", required=True, help="output folder for composite/edit/alpha/greenscreen PNGs and the layer")
    _add_resolution_argument(p)
    p.set_defaults(func=_train)

    a = sub.add_parser("apply-layer", help="apply a trained edit layer (.safetensors) to other images")
    a.add_argument("layer", help="edit_layer.safetensors written by the image command or the node")
    a.add_argument("images", nargs="+", help="image files")
    a.add_argument("--device", default="auto")
    a.add_argument("--size", type=int, default=0,
                   help="run the generator at this shorter side (0 = the layer's working size with --resolution "
                        "working, each image's own size with --resolution native)")
    a.add_argument("--out", required=True)
    _add_resolution_argument(a)
    a.set_defaults(func=_apply)


def _add_resolution_argument(p) -> None:
    p.add_argument("--resolution", default="working", choices=list(RESOLUTIONS),
                   help="where the generator runs for the output: working = at the training working size, the layer "
                        "then upsampled to the input's size guided by the input (what the training previews show); "
                        "native = at the input's own resolution (default %(default)s)")
