"""Videos too long to hold in memory: uint8 frames or masks read from their source a few at a time.

A :class:`StreamedVideo` stands where a uint8 tensor ``[T,3,H,W]`` (frames) or ``[T,H,W]`` (masks) would be: it
has the tensor's ``shape``, ``dtype`` (uint8) and ``ndim``, and indexing it with an int or a slice (step 1),
optionally followed by indices of the other dimensions, reads just those frames. An atlas fit (:func:`t2l_core.nla.fit.fit_nla`) given one reads the video twice, in
order: once to make its working-size copy, once to measure the full-size reconstruction; rendering reads one
frame at a time. A minute of 1080p is 11 GB as uint8 and four times that as float, so this is how such a video
is fitted at all.

Sources: a video file decoded with PyAV (:func:`video_file_frames`), a folder of images
(:func:`image_folder_frames`, :func:`image_folder_masks`), the ``frames_u8`` tensor of an atlas file
(:func:`safetensors_frames`), or any function of the frame index (:class:`StreamedVideo` itself).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: image file name endings read as frames or masks
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class StreamedVideo:
    """A read-only uint8 video whose frames are read on demand.

    Args:
        shape: (T, 3, H, W) for frames or (T, H, W) for masks.
        read: ``read(start, stop)`` -> uint8 tensor ``[stop - start, *shape[1:]]`` (CPU), frames ``start`` to
            ``stop - 1``; called with ``0 <= start < stop <= T``.
        describe: where the frames come from, for messages.
    """

    dtype = torch.uint8
    device = torch.device("cpu")

    def __init__(self, shape: Sequence[int], read: Callable[[int, int], torch.Tensor], describe: str = "") -> None:
        self.shape = torch.Size(int(s) for s in shape)
        self._read = read
        self.describe = describe or "a streamed video"

    @property
    def ndim(self) -> int:
        """3 for masks, 4 for frames."""
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"StreamedVideo(shape={tuple(self.shape)}, {self.describe})"

    def element_size(self) -> int:
        """Bytes per value in memory once read (1)."""
        return 1

    def detach(self) -> "StreamedVideo":
        """Itself (it holds no graph)."""
        return self

    def cpu(self) -> "StreamedVideo":
        """Itself (frames are read to the CPU)."""
        return self

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, tuple):  # frames first, then the rest applied to what was read
            head, rest = index[0], index[1:]
            x = self[head]
            return x[(slice(None),) + rest] if isinstance(head, slice) else x[rest]
        T = self.shape[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(T)
            if step != 1:
                raise IndexError("a streamed video is read in order: slices must have step 1")
            if stop <= start:
                return torch.empty((0,) + tuple(self.shape[1:]), dtype=torch.uint8)
            return self._checked(self._read(start, stop), stop - start)
        t = int(index)
        if t < 0:
            t += T
        if not 0 <= t < T:
            raise IndexError(f"frame {index} of a {T}-frame video")
        return self._checked(self._read(t, t + 1), 1)[0]

    def _checked(self, x: torch.Tensor, n: int) -> torch.Tensor:
        want = (n,) + tuple(self.shape[1:])
        if tuple(x.shape) != want or x.dtype != torch.uint8:
            raise ValueError(f"{self.describe} gave frames {tuple(x.shape)} {x.dtype}, expected {want} uint8: "
                             "every frame must have the first frame's size")
        return x


def frame_chunks(video, size: int = 8) -> Iterator[tuple]:
    """``(start, frames)`` for consecutive runs of at most ``size`` frames of a tensor or a
    :class:`StreamedVideo`, in order (a streamed video is read once)."""
    for s in range(0, video.shape[0], size):
        yield s, video[s:s + size]


def as_uint8_frames(x, size: Optional[tuple] = None) -> torch.Tensor:
    """A decoded picture as uint8, optionally resized.

    Args:
        x: [H,W,3] or [H,W] uint8 numpy array.
        size: None, or (h, w) to resize to (antialiased bilinear, pixel centres aligned, rounded to uint8).

    Returns:
        [3,H,W] for a colour picture or [H,W] for a mask, uint8.
    """
    t = torch.from_numpy(np.require(x, np.uint8, ["C", "W"]))
    t = t.permute(2, 0, 1) if t.ndim == 3 else t
    if size is not None and tuple(t.shape[-2:]) != tuple(size):
        f = t.float()[None] if t.ndim == 3 else t.float()[None, None]
        f = F.interpolate(f, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        t = f.clamp(0, 255).round().to(torch.uint8)[0]
        t = t if x.ndim == 3 else t[0]
    return t.contiguous()


def list_images(directory: str | Path) -> list:
    """The image files of a folder, sorted by name (FileNotFoundError naming the folder when there are none)."""
    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMAGE_EXTS)}) in {directory}")
    return files


def _image_array(path: Path, mask: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if mask:
            band = im.getchannel("A") if "A" in im.getbands() else im.convert("L")
            return np.asarray(band, dtype=np.uint8)
        return np.asarray(im.convert("RGB"))


def _folder_video(directory: str | Path, mask: bool, max_frames: Optional[int], size: Optional[tuple]) -> StreamedVideo:
    files = list_images(directory)[: max_frames or None]
    first = _image_array(files[0], mask)
    hw = tuple(size) if size is not None else first.shape[:2]

    def read(start: int, stop: int) -> torch.Tensor:
        out = []
        for f in files[start:stop]:
            a = _image_array(f, mask)
            if size is None and a.shape[:2] != first.shape[:2]:
                raise ValueError(f"{f.name} in {directory} is {a.shape[1]}x{a.shape[0]} but {files[0].name} is "
                                 f"{first.shape[1]}x{first.shape[0]}; give images of one size")
            out.append(as_uint8_frames(a, size))
        return torch.stack(out)

    shape = (len(files),) + (() if mask else (3,)) + hw
    return StreamedVideo(shape, read, f"the images in {directory}")


def image_folder_frames(directory: str | Path, max_frames: Optional[int] = None,
                        size: Optional[tuple] = None) -> StreamedVideo:
    """Frames from a folder of images of one size (sorted by name), read when needed.

    Args:
        directory: the folder.
        max_frames: at most this many frames (None or 0: all).
        size: None, or (H, W) to resize every image to.

    Returns:
        A :class:`StreamedVideo` [T,3,H,W].
    """
    return _folder_video(directory, False, max_frames, size)


def image_folder_masks(directory: str | Path, max_frames: Optional[int] = None,
                       size: Optional[tuple] = None) -> StreamedVideo:
    """Masks from a folder of images (the alpha channel if present, else the luminance; white = 255 = 1).

    Args:
        directory: the folder.
        max_frames: at most this many masks (None or 0: all).
        size: None, or (H, W) to resize every mask to.

    Returns:
        A :class:`StreamedVideo` [T,H,W] uint8.
    """
    return _folder_video(directory, True, max_frames, size)


class _Decoder:
    """Decodes a video file forward from its start; reading an earlier frame starts again."""

    def __init__(self, path: str, size: Optional[tuple]) -> None:
        self.path, self.size = path, size
        self.container = None
        self.frames: Optional[Iterator] = None
        self.next_index = 0

    def _restart(self) -> None:
        import av

        self.close()
        self.container = av.open(self.path)
        self.container.streams.video[0].thread_type = "AUTO"
        self.frames = self.container.decode(video=0)
        self.next_index = 0

    def read(self, start: int, stop: int) -> torch.Tensor:
        if self.frames is None or start < self.next_index:
            self._restart()
        out = []
        while self.next_index < stop:
            frame = next(self.frames, None)
            if frame is None:
                raise ValueError(f"{self.path} ended after {self.next_index} frames while frame {stop - 1} was "
                                 "read: the file changed or is damaged")
            if self.next_index >= start:
                out.append(as_uint8_frames(frame.to_ndarray(format="rgb24"), self.size))
            self.next_index += 1
        return torch.stack(out)

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
        self.container, self.frames = None, None


def video_file_info(path: str | Path) -> tuple:
    """Frame count, size and frame rate of a video file, from its packets (no picture is decoded).

    Args:
        path: the video file.

    Returns:
        (frames, height, width, fps or None).
    """
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        h, w = stream.codec_context.height, stream.codec_context.width
        fps = float(stream.average_rate) if stream.average_rate else None
        count = sum(1 for packet in container.demux(stream) if packet.size > 0)
    return count, h, w, fps


def video_file_frames(path: str | Path, max_frames: Optional[int] = None,
                      size: Optional[tuple] = None) -> StreamedVideo:
    """Frames of a video file, decoded with PyAV when read (in order; going back decodes from the start).

    Args:
        path: the video file.
        max_frames: at most this many frames (None or 0: all).
        size: None, or (H, W) to resize every frame to.

    Returns:
        A :class:`StreamedVideo` [T,3,H,W] with ``fps`` set (None when the file does not say).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no video file at {path}")
    count, h, w, fps = video_file_info(path)
    if count == 0:
        raise ValueError(f"no video frames could be decoded from {path}")
    T = min(count, max_frames) if max_frames else count
    decoder = _Decoder(str(path), size)
    video = StreamedVideo((T, 3) + (tuple(size) if size is not None else (h, w)), decoder.read, f"the video {path}")
    video.fps = fps
    return video


def _file_stamp(path: str | Path) -> Optional[tuple]:
    """(size, modification time in ns) of a file, None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def safetensors_frames(path: str | Path, name: str) -> StreamedVideo:
    """A uint8 tensor of a safetensors file, read a few frames at a time (the file must stay as it is).

    Args:
        path: the file.
        name: the tensor, [T,...] uint8.

    Returns:
        A :class:`StreamedVideo` of that tensor's shape.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        shape = f.get_slice(name).get_shape()
    stamp = _file_stamp(path)

    def read(start: int, stop: int) -> torch.Tensor:
        if _file_stamp(path) != stamp:
            raise ValueError(f"{path} changed (or went) after it was loaded, so its frames are not the ones "
                             "loaded: load the file again")
        with safe_open(str(path), framework="pt") as f:
            return f.get_slice(name)[start:stop]

    return StreamedVideo(shape, read, f"the frames stored in {path}")


def open_frames(source: str | Path, max_frames: Optional[int] = None, size: Optional[tuple] = None) -> StreamedVideo:
    """Frames from a folder of images or a video file, read when needed.

    Args:
        source: a folder of images of one size (sorted by name), or a video file.
        max_frames: at most this many frames (None or 0: all).
        size: None, or (H, W) to resize every frame to.

    Returns:
        A :class:`StreamedVideo` [T,3,H,W] (a video file's also has ``fps``).
    """
    if os.path.isdir(source):
        return image_folder_frames(source, max_frames, size)
    if os.path.isfile(source):
        return video_file_frames(source, max_frames, size)
    raise FileNotFoundError(f"no frames directory or video file at {source}")

