"""CLI for layered atlases (the video representation of paper section 3.2, appendix A.4):

``python -m t2l_core nla FRAMES_DIR_OR_VIDEO [--masks DIR] [--iters N] [--out FILE.safetensors]``
``python -m t2l_core render FILE.safetensors [--fg-edit RGBA.png] [--bg-edit RGBA.png] --out DIR``
``python -m t2l_core export FILE.safetensors [--fg-edit RGBA.png] [--bg-edit RGBA.png] --out DIR``
"""

from __future__ import annotations

import os


from ..nla.config import NLAFitConfig
from .setting_options import add_settings, config_from_args

#: (option and aliases, NLAFitConfig setting) of the ``nla`` command, in --help order
FIT_SETTINGS = (
    (("--iters", "--iterations"), "iterations"), ("--resolution", "atlas_resolution"),
    ("--target-psnr", "target_psnr"), ("--seed", "seed"), (("--batch", "--batch-pixels"), "batch_pixels"),
    ("--flow", "flow"), ("--working-size", "working_size"),
)


def register(subparsers) -> None:
    """Add the ``nla``, ``render`` and ``export`` commands to the ``t2l`` parser's ``subparsers``."""
    p = subparsers.add_parser("nla", help="fit a layered neural atlas to a video (frames directory or video file)")
    p.add_argument("source", metavar="FRAMES_DIR_OR_VIDEO")
    p.add_argument("--masks", default=None, help="directory of foreground masks, one per frame (white = foreground)")
    p.add_argument("--out", default="atlas.safetensors", help="output atlas file (.safetensors)")
    p.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")
    add_settings(p, NLAFitConfig, FIT_SETTINGS)
    p.add_argument("--models-dir", action="append", default=[], help="extra folder to look for RAFT weights")
    p.add_argument("--device", default="auto")
    p.add_argument("--psnr-at-working-size", action="store_true",
                   help="measure the reconstruction PSNR on the frames at --working-size instead of reconstructing "
                        "every full-size frame (for long videos, where that takes longer than the fit)")
    p.add_argument("--save-atlases", default=None, help="also write the atlas images as PNGs to this directory")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep OUT.checkpoint.safetensors and the optical flow (OUT.flow.safetensors) when the fit "
                        "finishes (default: only a cancelled or failed fit leaves them; the next run with the same "
                        "inputs and settings resumes it, and a flow cancelled half-way is continued)")
    p.set_defaults(func=run_nla)

    r = subparsers.add_parser("render", help="render atlas edits (RGBA PNGs in atlas space) into the video")
    r.add_argument("atlas", metavar="FILE.safetensors")
    _edit_options(r)
    r.add_argument("--frames", default=None, help="original frames (directory/video) to blend over instead of the stored ones")
    r.add_argument("--out", required=True, help="output directory for the edited frames (PNG)")
    r.add_argument("--device", default="cpu")
    r.set_defaults(func=run_render)

    e = subparsers.add_parser("export", help="write files for compositing programs: the edit of every frame as "
                                             "RGBA PNGs (straight alpha), per-frame STMaps of each layer (16-bit "
                                             "PNG) and the atlas images they point into")
    e.add_argument("atlas", metavar="FILE.safetensors")
    _edit_options(e)
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=run_export)


def _edit_options(p) -> None:
    """The atlas-edit options of ``render`` and ``export``."""
    p.add_argument("--fg-edit", default=None, help="RGBA PNG painted on the foreground atlas image")
    p.add_argument("--bg-edit", default=None, help="RGBA PNG painted on the background atlas image")
    p.add_argument("--frame-edit", default=None,
                   help="RGBA PNG painted over one frame (alpha = edit opacity): pushed into the atlases, so the "
                        "painted keyframe propagates to the whole video")
    p.add_argument("--frame-index", type=int, default=0, help="which frame --frame-edit was painted on (0-based)")


def run_nla(args) -> int:
    """``nla``: fit an atlas to a video and save it (and its atlas images with ``--save-atlases``).

    Args:
        args: the parsed options.

    Returns:
        The exit status, 0.

    Raises:
        ValueError: an option or input is wrong (printed by :func:`t2l_core.cli.main.main`).
    """
    from ..nla.fit import fit_nla
    from ..nla.atlas_files import save_nla
    from ..progress import Hooks, console_phase_printer, console_printer
    from ..io.frame_sources import image_folder_masks, open_frames
    from ..io.video_files import write_rgba

    if not args.out.endswith(".safetensors"):
        raise ValueError(f"--out must end with .safetensors, got '{args.out}'")
    frames = open_frames(args.source, max_frames=args.max_frames)
    T, _, H, W = frames.shape
    masks = None
    if args.masks:
        masks = image_folder_masks(args.masks, max_frames=T, size=(H, W))
        if masks.shape[0] != T:
            raise ValueError(f"{masks.shape[0]} masks in --masks for {T} frames: give one mask per frame")
    cfg = config_from_args(NLAFitConfig, args)
    stem = args.out[: -len(".safetensors")]
    ckpt, flow_cache = stem + ".checkpoint.safetensors", stem + ".flow.safetensors"
    hooks = Hooks(on_step=console_printer(max(1, cfg.iterations // 20)), on_phase=console_phase_printer())
    nla = fit_nla(frames, masks, cfg, hooks=hooks,
                  device=args.device, checkpoint_path=ckpt, resume=True, flow_search_dirs=args.models_dir,
                  flow_cache_path=flow_cache, keep_checkpoint=args.keep_checkpoint,
                  reconstruction="working_psnr" if args.psnr_at_working_size else "psnr")
    nla.fps = getattr(frames, "fps", None)
    for note in nla.notes:
        print(f"note: {note}")
    save_nla(nla, args.out)
    print(f"fitted {T} frames {W}x{H}: reconstruction PSNR "
          f"{nla.psnr:.2f} dB ({nla.steps} steps, flow: {nla.flow_estimator}) -> {args.out}")
    if args.save_atlases:
        os.makedirs(args.save_atlases, exist_ok=True)
        for layer, img in nla.atlas_images(on_progress=hooks.phase_callback("atlas images (texel chunks)")).items():
            path = os.path.join(args.save_atlases, f"{layer}_atlas.png")
            write_rgba(path, img)
            print(f"{layer} atlas {img.shape[2]}x{img.shape[1]} -> {path}")
    return 0


def _atlas_edits(args, nla) -> dict:
    """The atlas edits the options ask for: ``--fg-edit``/``--bg-edit``, or ``--frame-edit`` pushed into the atlases.

    Returns:
        {layer: AtlasEdit}; bad options raise ValueError, which the command line prints.
    """
    from ..io.video_files import read_rgba
    from ..nla.render import AtlasEdit, frame_edit_to_atlas

    edits = {}
    if args.frame_edit:
        if args.fg_edit or args.bg_edit:
            raise ValueError("give either --frame-edit or --fg-edit/--bg-edit, not both")
        rgb, alpha = read_rgba(args.frame_edit)
        edits = frame_edit_to_atlas(nla, args.frame_index, rgb, alpha)
    for layer, path in (("fg", args.fg_edit), ("bg", args.bg_edit)):
        if path:
            if layer not in nla.bboxes:
                raise ValueError(f"--{layer}-edit given but the atlas has no {layer} layer (it was fitted without masks)")
            rgb, alpha = read_rgba(path)
            edits[layer] = AtlasEdit(rgb=rgb, alpha=alpha, bbox=nla.bboxes[layer])
    return edits


def run_render(args) -> int:
    """``render``: render RGBA atlas edits, or one painted frame, into the video's frames.

    Args:
        args: the parsed ``render`` options (``--fg-edit``/``--bg-edit`` or ``--frame-edit``, never both).

    Returns:
        0; bad options raise ValueError, which the command line prints.
    """
    from ..io.frame_sources import open_frames
    from ..io.image_files import save_png
    from ..io.video_files import frame_png_path
    from ..nla.atlas_files import load_nla
    from ..nla.render import rendered_frames
    from ..progress import Hooks, console_phase_printer

    nla = load_nla(args.atlas, device=args.device)
    frames = nla.frames_u8
    if args.frames:
        frames = open_frames(args.frames)
        nla.check_frames(frames)
    edits = _atlas_edits(args, nla)
    report = Hooks(on_phase=console_phase_printer()).phase_callback("rendering (frames)")
    for t, frame in rendered_frames(nla.model, frames, edits.get("fg"), edits.get("bg")):
        save_png(frame, frame_png_path(args.out, t))
        report(t + 1, nla.num_frames)
    print(f"wrote {nla.num_frames} frames to {args.out}")
    return 0


def run_export(args) -> int:
    """``export``: the edit sequence, the STMaps and the atlas images for a compositing program.

    Args:
        args: the parsed ``export`` options.

    Returns:
        0; bad options raise ValueError, which the command line prints.
    """
    from ..nla.atlas_files import load_nla
    from ..nla.compositing_export import export_for_compositing
    from ..progress import Hooks, console_phase_printer

    nla = load_nla(args.atlas, device=args.device)
    edits = _atlas_edits(args, nla)
    files = export_for_compositing(nla, args.out, edits.get("fg"), edits.get("bg"),
                                   on_frame=Hooks(on_phase=console_phase_printer()).phase_callback("export (frames)"))
    for kind, paths in files.items():
        if paths:
            print(f"{kind}: {len(paths)} file(s) in {os.path.dirname(paths[0])}")
    return 0
