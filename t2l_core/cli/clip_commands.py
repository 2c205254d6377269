"""CLI: ``make-tiny-clip``, ``clip-info``, ``clip-convert`` and ``relevancy``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_clip_arguments(p: argparse.ArgumentParser, default: str = "ViT-B-32:openai") -> None:
    """The ``--clip/--device/--precision`` options every command that needs CLIP shares.

    Args:
        p: the command's parser.
        default: the default of ``--clip``.
    """
    p.add_argument("--clip", default=default,
                   help="weights file, a file name in models/text2live, or ARCH:tag (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="CLIP weight precision")


def clip_from_args(args: argparse.Namespace):
    """The CLIP model ``--clip``, ``--device`` and ``--precision`` name.

    Args:
        args: the parsed options.

    Returns:
        The loaded :class:`t2l_core.clip.model.ClipModel`.
    """
    from ..clip.loading import load_clip

    return load_clip(args.clip, device=args.device, precision=args.precision)


def _make_tiny(args: argparse.Namespace) -> int:
    """``make-tiny-clip``: write a tiny random CLIP."""
    from ..clip.loading import TINY_NOTE, build_tiny_clip, save_clip

    clip = build_tiny_clip(patch_size=args.patch_size, seed=args.seed, layers=args.layers, width=args.width,
                           image_size=args.image_size)
    path = save_clip(clip, args.out, note=TINY_NOTE)
    print(f"wrote {path} ({clip.name}, {clip.describe()['parameters']:,} parameters)")
    print(TINY_NOTE)
    return 0


def _info(args: argparse.Namespace) -> int:
    """``clip-info``: print a CLIP's architecture as JSON."""
    from ..clip.loading import read_file_info

    clip = clip_from_args(argparse.Namespace(clip=args.target, device="cpu", precision="fp32"))
    info = clip.describe()
    if Path(args.target).suffix:
        note = read_file_info(args.target).get("note")
        if note:
            info["note"] = note
    print(json.dumps(info, indent=2))
    return 0


def _convert(args: argparse.Namespace) -> int:
    """``clip-convert``: store a bare state dict with its config."""
    from ..clip.loading import load_clip_file, save_clip

    clip = load_clip_file(args.src, args.arch, device="cpu")
    path = save_clip(clip, args.out, note=f"converted from {Path(args.src).name}")
    print(f"wrote {path} ({clip.name})")
    return 0


def _relevancy(args: argparse.Namespace) -> int:
    """``relevancy``: write an image's relevancy map for a text (paper section 3.1) and its heatmap."""
    from ..io.image_files import load_image, save_png
    from ..clip.relevancy import heatmap, relevancy_map

    clip = clip_from_args(args)
    image = load_image(args.image).to(clip.device)
    rel = relevancy_map(clip, image, args.text, num_layers=args.layers)
    out = Path(args.out)
    save_png(rel[:1], out / "relevancy.png")
    save_png(heatmap(rel)[0], out / "relevancy_heatmap.png")
    print(f"wrote {out / 'relevancy.png'} and {out / 'relevancy_heatmap.png'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``make-tiny-clip``, ``clip-info``, ``clip-convert`` and ``relevancy`` to the subparsers ``sub``."""
    p = sub.add_parser("make-tiny-clip", help="write a tiny randomly initialised CLIP (NOT a real model) for tests")
    p.add_argument("out", help="output .safetensors file")
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=None, help="native size (default 4 patches)")
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_tiny)

    p = sub.add_parser("clip-info", help="print the architecture of a CLIP weights file or ARCH:tag")
    p.add_argument("target", help="weights file or ARCH:tag")
    p.set_defaults(func=_info)

    p = sub.add_parser("clip-convert", help="store a bare state dict with its config in our .safetensors format")
    p.add_argument("src", help="state dict file (.bin/.pt/.safetensors)")
    p.add_argument("--arch", required=True, help="open_clip architecture, e.g. ViT-B-32 (ViT-B-32-quickgelu for OpenAI weights)")
    p.add_argument("--out", required=True, help="output .safetensors")
    p.set_defaults(func=_convert)

    p = sub.add_parser("relevancy", help="relevancy map of an image for a text (Chefer et al.)")
    p.add_argument("image")
    p.add_argument("--text", required=True)
    p.add_argument("--layers", type=int, default=1, help="how many last blocks contribute (default 1)")
    p.add_argument("--out", required=True, help="output folder")
    add_clip_arguments(p)
    p.set_defaults(func=_relevancy)
