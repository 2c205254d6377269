"""The edit-layer generator: Deep-Image-Prior "skip" encoder-decoder (paper appendix A.1).

Input: RGB ``[B,3,H,W]`` in 0..1 (not normalised). Output: ``[B,4,H,W]`` in 0..1, channels 0-2 the edit
colour C and channel 3 the opacity α. Any ``H,W`` of at least :data:`MIN_SIZE` on one side returns the
same ``H,W`` (center-crop concatenation). Default configuration: 7 scales, 128 channels, 4-channel skips,
exactly 3,115,548 parameters.

Why BatchNorm always uses the statistics of the current input
------------------------------------------------------------
The authors never call ``model.eval()``: training, logging and the published results all run BatchNorm in
training mode with batch size 1, i.e. every channel is normalised by the mean/variance of the image being
processed (an affine instance norm). The learned affine parameters were fitted under that normalisation;
running statistics are never used and switching to them changes the output completely. We therefore build
every BatchNorm with ``track_running_stats=False``: it normalises with batch statistics in train *and* eval
mode, keeps no running buffers, and inference never mutates the module. Process one image per forward
(batch size 1) to reproduce the authors' behaviour.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

# Smallest side the generator accepts: 7 stride-2 levels reduce 129 px to 2 px (128 px would reach 1×1,
# where a batch-1 BatchNorm has a single value per channel and reflection padding is impossible).
MIN_SIZE = 129


def decorrelation_matrix() -> torch.Tensor:
    """The authors' DecorrelatedColorsToRGB matrix M (out_c = sum_k M[c,k] · x_k), computed as they do in
    float32: the square root of the SVD colour correlation, first column divided by 1.6 (saturation), divided
    by the largest column norm (paper appendix A.1).

    Returns:
        [3,3] float32, about ((0.5628, 0.3117, 0.0693), (0.5845, 0, -0.1732), (0.5845, -0.3117, 0.1039)).
    """
    sqrt_corr = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32)
    sqrt_corr = sqrt_corr / torch.tensor([1.6, 1.0, 1.0])
    return sqrt_corr / sqrt_corr.norm(dim=0).max()


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of :class:`SkipGenerator` (authors' image_config defaults)."""

    num_scales: int = 7
    channels_down: int = 128
    channels_up: int = 128
    channels_skip: int = 4
    in_channels: int = 3
    out_channels: int = 4
    leaky_slope: float = 0.2
    decorrelate_rgb: bool = True

    def to_dict(self) -> dict:
        """``{field: value}``, as layer files and checkpoints store it."""
        return asdict(self)


class BatchStatNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with the statistics of its input, in train and eval mode
    (``track_running_stats=False``: no running buffers, inference never mutates the module)."""

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, track_running_stats=False)


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    """Reflection-padded convolution with bias (padding (k-1)//2)."""
    pad = (k - 1) // 2
    layers: list[nn.Module] = [nn.ReflectionPad2d(pad)] if pad > 0 else []
    layers.append(nn.Conv2d(cin, cout, k, stride=stride, padding=0, bias=True))
    return nn.Sequential(*layers)


def center_crop_concat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Concatenate on channels after center-cropping both to the smaller spatial size.

    Args:
        a: [B,Ca,Ha,Wa].
        b: [B,Cb,Hb,Wb].

    Returns:
        [B,Ca+Cb,min(Ha,Hb),min(Wa,Wb)].
    """
    h = min(a.shape[-2], b.shape[-2])
    w = min(a.shape[-1], b.shape[-1])

    def crop(t: torch.Tensor) -> torch.Tensor:
        dh = (t.shape[-2] - h) // 2
        dw = (t.shape[-1] - w) // 2
        return t[..., dh : dh + h, dw : dw + w]

    return torch.cat([crop(a), crop(b)], dim=1)


class _Level(nn.Module):
    """One scale: skip branch ‖ (down, conv, deeper level, upsample), then the post-concat convs."""

    def __init__(self, cfg: GeneratorConfig, index: int, in_ch: int, deeper: Optional[nn.Module]) -> None:
        super().__init__()
        act = lambda: nn.LeakyReLU(cfg.leaky_slope, inplace=False)  # noqa: E731
        d, u, s = cfg.channels_down, cfg.channels_up, cfg.channels_skip
        self.skip = nn.Sequential(_conv(in_ch, s, 1), BatchStatNorm2d(s), act())
        down: list[nn.Module] = [
            _conv(in_ch, d, 3, stride=2), BatchStatNorm2d(d), act(),
            _conv(d, d, 3), BatchStatNorm2d(d), act(),
        ]
        if deeper is not None:
            down.append(deeper)
        down.append(nn.Upsample(scale_factor=2, mode="bilinear"))
        self.deeper = nn.Sequential(*down)
        k = u if deeper is not None else d
        post: list[nn.Module] = [
            BatchStatNorm2d(s + k),
            _conv(s + k, u, 3), BatchStatNorm2d(u), act(),
            _conv(u, u, 1),
        ]
        if index > 0:  # the authors' network has no BatchNorm after the 1×1 conv of the top level
            post.append(BatchStatNorm2d(u))
        post.append(act())
        self.post = nn.Sequential(*post)
        self.recompute_tail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B,C,H,W] -> this level's output features at the same H,W."""
        return self.post_forward(center_crop_concat(self.skip(x), self.deeper(x)))

    def post_forward(self, cat: torch.Tensor, tail: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """The post-concat layers on ``cat``, then ``tail`` (the generator's head, for the top level).

        Args:
            cat: [B,s+k,H,W], the skip branch concatenated with the deeper branch.
            tail: None, or a function applied to the result (inside the recomputed part).

        Returns:
            [B,channels_up,H,W], or what ``tail`` returns.

        With ``recompute_tail`` and gradients on, everything after the 3×3 convolution (BatchNorm, activations,
        1×1 convolution, ``tail``) is recomputed in the backward pass from the convolution's output, which its
        BatchNorm keeps anyway: two or three feature maps fewer are saved, for one more 1×1 convolution.
        """
        h = self.post[1](self.post[0](cat))  # BatchNorm, reflection pad + 3×3 convolution

        def rest(t: torch.Tensor) -> torch.Tensor:
            y = self.post[2:](t)
            return tail(y) if tail is not None else y

        if self.recompute_tail and torch.is_grad_enabled() and h.requires_grad:
            return checkpoint(rest, h, use_reentrant=False)
        return rest(h)


class SkipGenerator(nn.Module):
    """DIP skip network producing an RGBA edit layer (paper appendix A.1).

    Args:
        config: the architecture.
    """

    def __init__(self, config: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        self.config = config
        deeper: Optional[nn.Module] = None
        for i in reversed(range(config.num_scales)):
            in_ch = config.in_channels if i == 0 else config.channels_down
            deeper = _Level(config, i, in_ch, deeper)
        self.body = deeper
        self.head = nn.Conv2d(config.channels_up, config.out_channels, 1, bias=True)
        self.register_buffer("decorrelation", decorrelation_matrix(), persistent=False)
        # How the network computes, never what (set through set_recompute / set_memory_layout):
        # recompute_top: the full-resolution part (top level's post-concat convs, head, colours, sigmoid) is
        # recomputed in the backward pass instead of keeping its activations (more than half of the saved memory)
        self.recompute_top = False
        self.channels_last = False  # convolutions in channels-last layout (inputs converted in forward)

    @property
    def min_size(self) -> int:
        """The smallest side, in px, the network accepts: 2**num_scales + 1."""
        return 2 ** self.config.num_scales + 1

    def check_input(self, x: torch.Tensor) -> None:
        """Check an input's shape.

        Args:
            x: the input the network is about to get.

        Raises:
            ValueError: ``x`` is not [B,in_channels,H,W] or a side is below :attr:`min_size`.
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"generator input must be [B,{self.config.in_channels},H,W], got {tuple(x.shape)}"
            )
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"generator input is {x.shape[-2]}x{x.shape[-1]} px; both sides must be at least "
                f"{self.min_size} px (the network halves the size {self.config.num_scales} times). "
                "Upscale the image or raise the working size."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The edit layer of an image.

        Args:
            x: [B,3,H,W] in 0..1 (not normalised), both sides at least :attr:`min_size`.

        Returns:
            [B,4,H,W] in 0..1: the colour C (channels 0-2) and the opacity α (channel 3).
        """
        self.check_input(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        top = self.body
        deeper = top.deeper[:-1](x)  # everything below the top level, before the final 2x upsampling
        if self.recompute_top and torch.is_grad_enabled():
            return checkpoint(self._top_output, top.skip(x), deeper, use_reentrant=False)
        return self._top_output(top.skip(x), deeper)

    def set_recompute(self, top: bool = False, tails: bool = False) -> "SkipGenerator":
        """Recompute activations in the backward pass instead of keeping them (less memory, same values).

        Args:
            top: the full-resolution part after the top level's concatenation.
            tails: each level's layers after its 3×3 convolution (BatchNorm, activation, 1×1 convolution).

        Returns:
            ``self``.
        """
        self.recompute_top = bool(top)
        for level in self.levels():
            level.recompute_tail = bool(tails)
        return self

    @property
    def recompute_tails(self) -> bool:
        """Whether each level's layers after its 3×3 convolution are recomputed in the backward pass."""
        return all(level.recompute_tail for level in self.levels())

    def set_memory_layout(self, channels_last: bool = False, inplace_activations: bool = False) -> "SkipGenerator":
        """Memory layout of the network (same values up to float summation order).

        Args:
            channels_last: convolutions in channels-last layout; inputs are converted in :meth:`forward`.
            inplace_activations: LeakyReLUs in place. Safe here: each follows a BatchNorm or a convolution,
                whose backward passes do not need their outputs (autograd's version check would raise
                otherwise); saves one feature map per activation.

        Returns:
            ``self``, converted to channels-last when asked.
        """
        for m in self.modules():
            if isinstance(m, nn.LeakyReLU):
                m.inplace = bool(inplace_activations)
        self.channels_last = bool(channels_last)
        return self.to(memory_format=torch.channels_last) if channels_last else self

    def levels(self) -> list["_Level"]:
        """The network's scales, top (full resolution) first."""
        return [m for m in self.modules() if isinstance(m, _Level)]

    def _top_output(self, skip: torch.Tensor, deeper: torch.Tensor) -> torch.Tensor:
        """Top level: skip ‖ upsample(deeper half-resolution features) -> RGBA in 0..1 (full resolution)."""
        up = self.body.deeper[-1](deeper)
        cat = center_crop_concat(skip, up)
        del up  # a full-resolution map: free it before the layers after the concatenation allocate theirs
        return self.body.post_forward(cat, tail=self._rgba)

    def _rgba(self, features: torch.Tensor) -> torch.Tensor:
        """Head: top-level features -> RGBA in 0..1 (1×1 convolution, colour decorrelation, sigmoid)."""
        y = self.head(features)
        if self.config.decorrelate_rgb and self.config.out_channels >= 3:
            rgb = torch.einsum("ck,bkhw->bchw", self.decorrelation.to(y.dtype), y[:, :3])
            y = torch.cat([rgb, y[:, 3:]], dim=1)
        return torch.sigmoid(y)

    def norm_layers(self) -> list[BatchStatNorm2d]:
        """Every normalisation layer of the network."""
        return [m for m in self.modules() if isinstance(m, BatchStatNorm2d)]


def count_parameters(module: nn.Module) -> int:
    """The number of parameter values of ``module`` (3,115,548 for the default generator)."""
    return sum(p.numel() for p in module.parameters())


def build_generator(config: Optional[GeneratorConfig] = None, *, device: torch.device | str = "cpu",
                    seed: Optional[int] = None) -> SkipGenerator:
    """Build a generator.

    Args:
        config: the architecture; None = :class:`GeneratorConfig` defaults.
        device: where the weights go.
        seed: None, or the seed of a local RNG the initial weights come from (the global RNG is untouched).

    Returns:
        The generator on ``device``.
    """
    config = config or GeneratorConfig()
    if seed is None:
        gen = SkipGenerator(config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            gen = SkipGenerator(config)
    return gen.to(device)
