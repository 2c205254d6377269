"""CLI: ``image`` (alias ``edit``): train an edit layer on one image; ``apply-layer``: apply a saved layer.

    python -m t2l_core image photo.jpg --prompt "oreo cake" --src-prompt cake --out results/
    python -m t2l_core apply-layer results/edit_layer.safetensors other.jpg --out results2/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..edit.config import EditConfig
from ..edit.layer import RESOLUTIONS
from ..settings import choices_of
from .clip_commands import clip_from_args
from .edit_options import (SHARED_SETTINGS, add_prompt_arguments, add_run_arguments, checkpoint_from_args,
                           console_hooks)
from .setting_options import add_settings, config_from_args

OUTPUT_FILES = ("composite.png", "edit.png", "alpha.png", "greenscreen.png")
PRECISIONS = choices_of(EditConfig, "autocast")  # the fast path's precisions (--autocast)


def _write_outputs(output, out: Path, index: int | None = None) -> list[Path]:
    """Write image ``index`` of a :class:`t2l_core.edit.layer.LayerOutput` as the four PNGs; their paths."""
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
    """``image``: train an edit layer on one image, write its outputs and the layer."""
    from ..io.image_files import load_image
    from ..api import train_edit_layer
    from ..image.training import default_checkpoint_path

    image = load_image(args.image)  # RGB [1,3,H,W]; gray/RGBA converted
    protect = _protect_mask(args.protect_mask, image)
    config = config_from_args(EditConfig, args)  # fails before loading CLIP
    out = Path(args.out)
    clip = clip_from_args(args)
    ckpt = checkpoint_from_args(args, lambda: default_checkpoint_path(out / "checkpoints", image, config, clip=clip,
                                                                      protect_mask=protect))
    result = train_edit_layer(clip, image, config, hooks=console_hooks(args), checkpoint_path=ckpt,
                              resume=args.resume, keep_checkpoint=args.keep_checkpoint, resolution=args.resolution,
                              protect_mask=protect)
    written = _write_outputs(result.output, out)
    written.append(result.layer.save(out / "edit_layer.safetensors"))
    for note in result.notes:
        print(f"note: {note}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _protect_mask(path, image):
    """The ``--protect-mask`` file as ``[1,1,H,W]`` (white = leave untouched), or None; its size must be the
    image's."""
    if not path:
        return None
    from ..io.image_files import load_mask

    mask = load_mask(path)
    if mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"--protect-mask {path} is {mask.shape[-1]}x{mask.shape[-2]} px but the image is "
                         f"{image.shape[-1]}x{image.shape[-2]} px; give a mask of the image's size")
    return mask


def _apply(args: argparse.Namespace) -> int:
    """``apply-layer``: apply a saved layer to images and write their outputs."""
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``image`` (alias ``edit``) and ``apply-layer`` to the ``t2l`` parser's subparsers ``sub``."""
    p = sub.add_parser("image", aliases=["edit"], help="train a text-driven edit layer on one image (Text2LIVE)")
    p.add_argument("image", help="input image file (any PIL format; gray/RGBA are converted to RGB)")
    add_prompt_arguments(p, EditConfig, roi_help="text of the region to edit; its relevancy map bootstraps the opacity")
    add_settings(p, EditConfig, SHARED_SETTINGS[:1] + (("--size", "size"),) + SHARED_SETTINGS[1:])
    p.add_argument("--protect-mask", dest="protect_mask", default=None, metavar="FILE",
                   help="image of the input's size, white = what the edit must leave untouched (the composite there "
                        "is the input exactly)")
    add_settings(p, EditConfig, (("--exclude-text", "exclude_text"), ("--lambda-protect", "lambda_protect")))
    add_settings(p, EditConfig, (("--no-fast", "fast"), ("--autocast", "autocast"), ("--threads", "threads"),
                                 ("--compile", "compile")))
    add_run_arguments(p, EditConfig, "image", "OUT/checkpoints/edit_<hash>.safetensors")
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
    """The ``--resolution`` option (:data:`t2l_core.edit.layer.RESOLUTIONS`)."""
    p.add_argument("--resolution", default="working", choices=list(RESOLUTIONS),
                   help="where the generator runs for the output: working = at the training working size, the layer "
                        "then upsampled to the input's size guided by the input (what the training previews show); "
                        "native = at the input's own resolution (default %(default)s)")
