"""A minute of full-HD video through the command line: an atlas fit that never holds the video in memory.

    python bench/minute_video.py [--frames 1800] [--size 1920x1080] [--fps 30] [--working-size 384]
                                 [--iters 300] [--check-frames 12] [--keep DIR]

Writes a synthetic clip frame by frame (a photograph panned behind a photo cut-out that crosses the frame,
integer offsets, so the foreground masks are exact) as an H.264 mp4 and a folder of mask PNGs, then
runs ``python -m t2l_core nla CLIP.mp4 --masks MASKS --working-size N --psnr-at-working-size`` in a child
process: the frames and masks are read from the files a few at a time (t2l_core.io.frame_sources), the fit
runs at the working size, and the atlas file is written with the frames streamed into it. Reported: the
child's peak RSS (``wait4``'s ru_maxrss, the whole process), its wall time, the size of the uint8 video it
did not hold, the atlas file's size, the PSNR the command printed (at the working size), and the full-size
PSNR of ``--check-frames`` evenly spaced frames, reconstructed from the saved atlas (loaded with its frames
left in the file) against the decoded mp4.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from report import add_no_write_option, parse_bench_args, publish, table  # noqa: E402


def _photo(name: str, height: int) -> np.ndarray:
    """A scikit-image photograph scaled to ``height`` rows (uint8 [h,w,3])."""
    import skimage.data
    from PIL import Image

    img = Image.fromarray(getattr(skimage.data, name)())
    return np.asarray(img.resize((round(img.width * height / img.height), height), Image.BICUBIC))


class MinuteClip:
    """Frame ``t`` of the synthetic clip and its exact foreground mask, made on demand (uint8): a camera that pans
    a third of the frame width across a photograph over the clip (eased, with a vertical sway) while a photo
    cut-out crosses the frame one and a half times."""

    def __init__(self, frames: int, height: int, width: int) -> None:
        self.T, self.H, self.W = frames, height, width
        strip = np.concatenate([_photo(n, int(height * 1.1)) for n in ("rocket", "coffee")], 1)
        self.pan_x, self.pan_y = min(strip.shape[1] - width, width // 3), strip.shape[0] - height
        self.background = strip
        r = int(min(height, width) * 0.22)
        cat = _photo("chelsea", 2 * r)[:, :2 * r]
        yy, xx = np.mgrid[-r:r, -r:r]
        self.cutout, self.shape = cat, (xx / r) ** 2 + (yy / (0.8 * r)) ** 2 <= 1.0
        self.r = r

    def offsets(self, t: int) -> tuple:
        """(background x, y, object left, top) at frame ``t``, integers."""
        s = t / max(self.T - 1, 1)
        bx = round(self.pan_x * (0.5 - 0.5 * np.cos(np.pi * s)))
        by = round(self.pan_y * (0.5 + 0.5 * np.sin(2 * np.pi * s)))
        ox = round((self.W - 2 * self.r) * (0.5 + 0.45 * np.sin(2 * np.pi * s * 1.5)))
        oy = round((self.H - 2 * self.r) * (0.5 + 0.45 * np.sin(2 * np.pi * s + 1)))
        return bx, by, ox, oy

    def frame(self, t: int) -> tuple:
        """(rgb [H,W,3], mask [H,W]) uint8 of frame ``t``."""
        bx, by, ox, oy = self.offsets(t)
        rgb = self.background[by:by + self.H, bx:bx + self.W].copy()
        mask = np.zeros((self.H, self.W), np.uint8)
        d = 2 * self.r
        region = rgb[oy:oy + d, ox:ox + d]
        region[self.shape] = self.cutout[self.shape]
        mask[oy:oy + d, ox:ox + d][self.shape] = 255
        return rgb, mask


def write_clip(clip: MinuteClip, folder: str, fps: int) -> tuple:
    """The clip as ``folder/clip.mp4`` (H.264, crf 16) and ``folder/masks/NNNNN.png``; returns their paths."""
    import av
    from PIL import Image

    path, masks = os.path.join(folder, "clip.mp4"), os.path.join(folder, "masks")
    os.makedirs(masks, exist_ok=True)
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": "16", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = clip.W, clip.H, "yuv420p"
        for t in range(clip.T):
            rgb, mask = clip.frame(t)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
            Image.fromarray(mask).convert("1").save(os.path.join(masks, f"{t:05d}.png"))
        for packet in stream.encode():
            out.mux(packet)
    return path, masks


def run_cli(args: list) -> tuple:
    """Run ``python -m t2l_core ARGS``; returns (output, wall s, peak RSS GiB of that process)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "t2l_core"] + args, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        print(f"{time.perf_counter() - t0:8.1f}s  {line}", end="", flush=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the nla command failed (exit {proc.returncode})")
    return "".join(lines), time.perf_counter() - t0, usage.ru_maxrss / 1024 ** 2


def full_size_psnr(atlas: str, video: str, count: int) -> tuple:
    """PSNR over ``count`` evenly spaced frames reconstructed at full size from the saved atlas (its frames
    left in the file) against the decoded mp4; returns (dB, frame indices)."""
    from t2l_core.io.frame_sources import video_file_frames
    from t2l_core.nla.atlas_files import load_nla
    from t2l_core.nla.losses import psnr
    from t2l_core.nla.reconstruction import reconstruct_frame

    nla = load_nla(atlas, stream_frames=True)
    frames = video_file_frames(video)
    T = nla.num_frames
    idx = sorted({round(i * (T - 1) / max(count - 1, 1)) for i in range(count)})
    se = 0.0
    for t in idx:
        rgb, _ = reconstruct_frame(nla.model, t)
        se += float(((rgb.double() - frames[t].double() / 255) ** 2).mean())
    return psnr(se / len(idx)), idx


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1800)
    p.add_argument("--size", default="1920x1080", help="WxH of the clip")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--working-size", type=int, default=384)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--check-frames", type=int, default=12, help="frames whose full-size PSNR is measured after")
    p.add_argument("--keep", default=None, help="write the clip and atlas here and keep them (default: a temp dir)")
    add_no_write_option(p)
    a = parse_bench_args(p)
    w, h = (int(s) for s in a.size.lower().split("x"))
    with tempfile.TemporaryDirectory(dir=a.keep) as tmp:
        t0 = time.perf_counter()
        clip_path, masks = write_clip(MinuteClip(a.frames, h, w), tmp, a.fps)
        gen_s = time.perf_counter() - t0
        print(f"wrote {a.frames} frames {w}x{h} ({os.path.getsize(clip_path) / 2**20:.0f} MiB mp4) in {gen_s:.0f}s",
              flush=True)
        atlas = os.path.join(tmp, "atlas.safetensors")
        out, wall, peak = run_cli(["nla", clip_path, "--masks", masks, "--working-size", str(a.working_size),
                                   "--iters", str(a.iters), "--flow", "lk", "--psnr-at-working-size",
                                   "--out", atlas])
        m = re.search(r"reconstruction PSNR ([0-9.]+) dB", out)
        atlas_gib = os.path.getsize(atlas) / 2 ** 30
        t1 = time.perf_counter()
        check_psnr, idx = full_size_psnr(atlas, clip_path, a.check_frames)
        check_s = time.perf_counter() - t1
    video_gib = a.frames * h * w * 3 / 2 ** 30
    rows = [[f"{a.frames}x{w}x{h}", a.working_size, a.iters, f"{peak:.2f}", f"{video_gib:.1f}", f"{wall / 60:.1f}",
             f"{atlas_gib:.1f}", m.group(1) if m else "-", f"{check_psnr:.2f}", f"{gen_s / 60:.1f}"]]
    publish("A minute of 1080p: the nla command on an mp4, frames streamed from the file",
            table(["frames x W x H", "working size", "steps", "nla command peak RSS GiB",
                   "uint8 video GiB (not held)", "nla command wall min", "atlas file GiB",
                   "PSNR dB (working size, printed)", f"PSNR dB (full size, {len(idx)} frames)",
                   "clip writing min"], rows),
            notes=f"Synthetic clip (bench/minute_video.py: a photograph panned by a third of the frame width behind a "
                  f"photo cut-out crossing the frame, exact masks) as H.264 mp4 (crf 16, {a.fps} fps) and mask PNGs. The command: `python -m t2l_core nla "
                  f"clip.mp4 --masks masks --working-size {a.working_size} --iters {a.iters} --flow lk "
                  "--psnr-at-working-size --out atlas.safetensors`; its wall time covers decoding the mp4 twice "
                  "(working copy, then the frames streamed into the atlas file), the optical flow, the steps, the "
                  f"PSNR at the working size and writing the atlas file. Full-size PSNR: frames {idx} reconstructed "
                  f"from the saved atlas against the decoded mp4 ({check_s:.0f}s). Threads: torch's default "
                  f"({torch.get_num_threads()}). CPU: named on the line above (lscpu model name).")


if __name__ == "__main__":
    main()
