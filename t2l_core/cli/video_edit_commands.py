"""CLI: ``video``: train a text-driven edit on one layer's atlas of a fitted NLA and render the edited video
(paper section 3.2).

    python -m t2l_core video atlas.safetensors --frames frames/ --prompt "snowy countryside" --layer bg --out out/
    python -m t2l_core video atlas.safetensors --prompt "golden car" --layer fg \\
        --other-layer out/edit_layer_bg.safetensors --out out2/     # combine with an earlier background edit

Writes OUT/frames/frame_*.png (the edited video), OUT/<layer>_atlas_edit.png (RGBA atlas edit) and
OUT/edit_layer_<layer>.safetensors (the trained layer; `--other-layer` of a later run, or Atlas Render).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..video.config import VideoEditConfig
from ..settings import choices_of
from .clip_commands import clip_from_args
from .edit_options import (SHARED_SETTINGS, add_prompt_arguments, add_run_arguments, checkpoint_from_args,
                           console_hooks)
from .setting_options import add_settings, config_from_args


def _run(args: argparse.Namespace) -> int:
    """``video``: train the atlas edit, write the edited frames, the atlas edit and the layer."""
    from ..edit.layer import EditLayer
    from ..nla.atlas_files import load_nla
    from ..api import atlas_edit_from_layer, train_video_edit_layer
    from ..video.training import default_video_checkpoint_path
    from ..video.atlas_dataset import layer_key
    from ..io.video_files import read_frames, write_frames, write_rgba

    layer = layer_key(args.layer)
    config = config_from_args(VideoEditConfig, args, layer=layer)  # fails before loading anything large
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
    ckpt = checkpoint_from_args(args, lambda: default_video_checkpoint_path(out / "checkpoints", nla, config, clip,
                                                                            frames))
    result = train_video_edit_layer(clip, nla, config, frames=frames, hooks=console_hooks(args, phases=True),
                                    checkpoint_path=ckpt, resume=args.resume, other_edit=other,
                                    keep_checkpoint=args.keep_checkpoint)
    for note in result.notes:
        print(f"note: {note}")
    written = write_frames(result.frames, str(out / "frames"))
    atlas_png = write_rgba(str(out / f"{layer}_atlas_edit.png"), result.atlas_edit.rgb, result.atlas_edit.alpha)
    layer_file = result.layer.save(out / f"edit_layer_{layer}.safetensors")
    print(f"wrote {len(written)} edited frames to {out / 'frames'}, the atlas edit {atlas_png} and the layer {layer_file}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``video`` command to the ``t2l`` parser's subparsers ``sub``."""
    p = sub.add_parser("video", help="text-driven edit of a video through a fitted layered atlas (Text2LIVE video)")
    p.add_argument("nla_file", metavar="NLA_FILE", help="atlas .safetensors written by the nla command or Save Atlas")
    p.add_argument("--frames", default=None, help="original frames (directory or video file) to blend over; default: "
                   "the frames stored with the atlas. Same size and count as the atlas was fitted on")
    add_prompt_arguments(p, VideoEditConfig, roi_help="bootstrap text: its relevancy map guides the opacity "
                                                      "(constant weight, as in the paper)")
    p.add_argument("--layer", required=True, choices=list(choices_of(VideoEditConfig, "layer")),
                   help="which atlas to edit")
    add_settings(p, VideoEditConfig, SHARED_SETTINGS + (
        ("--lr-decay", "lr_decay"), ("--atlas-scale", "atlas_scale"), ("--full-atlas-every", "full_image_every", "add the whole atlas every N steps")))
    p.add_argument("--other-layer", default=None,
                   help="edit layer trained on the OTHER atlas (an earlier run): combined in the rendered video")
    add_run_arguments(p, VideoEditConfig, "atlas, frames", "OUT/checkpoints/video_edit_<hash>")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=_run)
