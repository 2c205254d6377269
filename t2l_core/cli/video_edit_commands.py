"""CLI: ``video``: train a text-driven edit on one layer's atlas of a fitted NLA and render the edited video.

    python -m t2l_core video atlas.safetensors --frames frames/ --prompt "snowy countryside" --layer bg --out out/
    python -m t2l_core video atlas.safetensors --prompt "golden car" --layer fg \\
        --other-layer out/edit_layer_bg.safetensors --out out2/     # combine with an earlier background edit

Writes OUT/frames/frame_*.png (the edited video), OUT/<layer>_atlas_edit.png (RGBA atlas edit) and
OUT/edit_layer_<layer>.safetensors (the trained layer; `--other-layer` of a later run, or Atlas Render).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .clip_commands import clip_from_args
from .edit_commands import add_prompt_arguments


def _run(args: argparse.Namespace) -> int:
    from ..edit.layer import EditLayer
    from ..nla.atlas_files import load_nla
    from ..progress import Hooks, console_phase_printer, console_printer
    from ..api import atlas_edit_from_layer, train_video_edit_layer
    from ..video.training import VideoEditConfig, default_video_checkpoint_path
    from ..video.atlas_dataset import layer_key
    from ..io.video_files import read_frames, write_frames, write_rgba

    layer = layer_key(args.layer)
    config = VideoEditConfig(
        prompt=args.prompt, screen_prompt=args.screen_prompt, source_prompt=args.src_prompt,
        roi_text=args.roi_prompt, layer=layer, iters=args.iters, seed=args.seed, n_views=args.views,
        lambda_composition=args.lambda_composition, lambda_screen=args.lambda_screen,
        lambda_structure=args.lambda_structure, sparsity_l1=args.sparsity_l1, sparsity_l0=args.sparsity_l0,
        lambda_bootstrap=args.lambda_bootstrap, lr_decay=args.lr_decay, atlas_scale=args.atlas_scale,
        full_image_every=args.full_atlas_every, save_memory=args.save_memory)
    config.validate()  # fail before loading anything large
    nla = load_nla(args.nla_file)
    frames = None
    if args.frames:
        frames = read_frames(args.frames, max_frames=nla.num_frames)
        nla.check_frames(frames)
    other = None
    if args.other_layer:
        other_layer = EditLayer.load(args.other_layer, remedy="Give --other-layer an edit_layer_<fg|bg>.safetensors "
                                                              "written by an earlier video command.")
        other_key = (other_layer.info.get("atlas") or {}).get("layer") or ("bg" if layer == "fg" else "fg")
        if other_key == layer:
            raise ValueError(f"--other-layer was trained on the same ({layer}) atlas; give a layer of the other atlas")
        other = atlas_edit_from_layer(other_layer, nla, other_key)
    out = Path(args.out)
    clip = clip_from_args(args)
    ckpt = Path(args.checkpoint) if args.checkpoint else default_video_checkpoint_path(
        out / "checkpoints", nla, config, clip, frames)
    hooks = Hooks(on_step=console_printer(args.log_every) if not args.quiet else None,
                  on_phase=console_phase_printer() if not args.quiet else None)
    result = train_video_edit_layer(clip, nla, config, frames=frames, hooks=hooks, checkpoint_path=ckpt,
                                    resume=args.resume, other_edit=other, keep_checkpoint=args.keep_checkpoint)
    for note in result.notes:
        print(f"note: {note}")
    written = write_frames(result.frames, str(out / "frames"))
    atlas_png = write_rgba(str(out / f"{layer}_atlas_edit.png"), result.atlas_edit.rgb, result.atlas_edit.alpha)
    layer_file = result.layer.save(out / f"edit_layer_{layer}.safetensors")
    print(f"wrote {len(written)} edited frames to {out / 'frames'}, the atlas edit {atlas_png} and the layer {layer_file}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("video", help="text-driven edit of a video through a fitted layered atlas (Text2LIVE video)")
    p.add_argument("nla_file", metavar="NLA_FILE", help="atlas .safetensors written by the nla command or Save Atlas")
    p.add_argument("--frames", default=None, help="original frames (directory or video file) to blend over; default: "
                   "the frames stored with the atlas. Same size and count as the atlas was fitted on")
    p.add_argument("--prompt", required=True, help="target text (several: separate with |)")
    p.add_argument("--layer", required=True, choices=["fg", "bg", "foreground", "background"],
                   help="which atlas to edit")
    add_prompt_arguments(p, roi_help="bootstrap text: its relevancy map guides the opacity (constant weight, as in "
                                     "the paper)")
    p.add_argument("--iters", type=int, default=3000, help="training steps (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views", type=int, default=6, help="CLIP views per example (default %(default)s)")
    p.add_argument("--lambda-composition", type=float, default=1.0)
    p.add_argument("--lambda-screen", type=float, default=1.0)
    p.add_argument("--lambda-structure", type=float, default=3.0)
    p.add_argument("--sparsity-l1", type=float, default=1e-3)
    p.add_argument("--sparsity-l0", type=float, default=5e-4)
    p.add_argument("--lambda-bootstrap", type=float, default=10.0)
    p.add_argument("--lr-decay", type=float, default=0.999)
    p.add_argument("--atlas-scale", type=float, default=1.0,
                   help="training atlas texels per native texel (native: about one per frame pixel)")
    p.add_argument("--full-atlas-every", type=int, default=75, help="add the whole atlas every N steps")
    p.add_argument("--other-layer", default=None,
                   help="edit layer trained on the OTHER atlas (an earlier run): combined in the rendered video")
    p.add_argument("--save-memory", action="store_true",
                   help="lower peak memory for slower steps (every memory measure on, activations recomputed)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (default: OUT/checkpoints/video_edit_<hash>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint if a cancelled run with the same atlas, frames, settings, "
                        "--iters and CLIP left it (another run's checkpoint is not used: training starts over)")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the checkpoint when the run finishes (default: only a cancelled or failed run leaves one)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run)
