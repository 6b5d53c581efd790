"""SINet building blocks: CBR, BR, DSConv+SE, S2-block, S2-module and channel shuffle.

Attribute names (``conv``, ``bn``, ``act``, ``dense``, ``c1``, ``d1``/``d2``, ``act_conv1x1``, ``BR``) are the
ones of the authors' ``models/SINet.py`` on purpose: the released checkpoint then loads with ``strict=True``
without any renaming. Class names say what each block is. Every convolution is bias-free, every
BatchNorm uses eps 1e-3, every PReLU is per-channel; PyTorch default initialisation throughout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BatchNorm with the official eps (1e-3) and momentum (0.1).

    Args:
        channels: number of channels normalised.
    """
    return nn.BatchNorm2d(channels, eps=BN_EPS)


def upsample(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Bilinear upsampling with ``align_corners=True`` (the official ``UpsamplingBilinear2d``).

    Args:
        x: tensor ``(N, C, H, W)``.
        factor: integer scale factor.
    """
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=True)


def channel_shuffle(x: torch.Tensor, groups: int, channels: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups (ShuffleNet), returning a channels-last tensor.

    The shuffle is done on the NHWC view, so a channels-last input (SINet's layout) stays channels-last and the
    next convolution needs no reorder.

    Args:
        x: tensor ``(N, channels, H, W)``.
        groups: number of groups to interleave.
        channels: the channel count as a Python int, so that an ONNX export carries static sizes instead of
            ``Shape``/``Gather`` nodes, which break ONNX runtimes and converters that need static shapes.
    """
    height, width = x.shape[-2:]
    nhwc = x.permute(0, 2, 3, 1).reshape(-1, height, width, groups, channels // groups).transpose(3, 4)
    return nhwc.reshape(-1, height, width, channels).permute(0, 3, 1, 2)


class Conv(nn.Module):
    """A bare bias-free convolution (official ``C``), kept as a module so its key is ``<name>.conv.weight``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size, padding ``(k - 1) // 2``.
        stride: stride.
        groups: convolution groups.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                              groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConvBNPReLU(nn.Module):
    """CBR: k×k convolution → BatchNorm → PReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size, padding ``(k - 1) // 2``.
        stride: stride.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, bias=False)
        self.bn = batch_norm(out_channels)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class BNPReLU(nn.Module):
    """BR: BatchNorm → PReLU.

    Args:
        channels: number of channels.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.bn = batch_norm(channels)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class SqueezeExcite(nn.Module):
    """SINet's squeeze-and-excitation: global average → FC+PReLU (→ FC+PReLU), **no sigmoid**.

    The PReLU output multiplies the input channel-wise, so the gate is unbounded; this is what the released
    weights were trained with.

    Args:
        channels: channels of the input (and of the gate).
        reduction: hidden width = ``channels / reduction``; ``1`` means a single FC(C→C) + PReLU.
    """

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        if reduction > 1:
            hidden = channels // reduction
            self.dense = nn.Sequential(nn.Linear(channels, hidden), nn.PReLU(hidden),
                                       nn.Linear(hidden, channels), nn.PReLU(channels))
        else:
            self.dense = nn.Sequential(nn.Linear(channels, channels), nn.PReLU(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.dense(x.mean(dim=(2, 3)))
        return x * gate[:, :, None, None]


class DSConvSE(nn.Module):
    """Depthwise-separable downsampler with SE (official ``SEseparableCBR``).

    Depthwise 3×3 stride 2 (no BN/activation after it) → SE → pointwise → BatchNorm → PReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        reduction: SE reduction (1 in the first downsampler, 2 in the second).
        stride: depthwise stride.
    """

    def __init__(self, in_channels: int, out_channels: int, reduction: int, stride: int = 2):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
            SqueezeExcite(in_channels, reduction),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )
        self.bn = batch_norm(out_channels)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class S2Block(nn.Module):
    """S2-block: [AvgPool p] → depthwise k×k → BN → PReLU → pointwise → [bilinear ×p] → BN (no activation).

    Args:
        channels: input = output channels.
        kernel_size: depthwise kernel size ``k``.
        pool: pooling factor ``p`` (1 = no pooling); the input H and W must be divisible by it.
    """

    def __init__(self, channels: int, kernel_size: int, pool: int):
        super().__init__()
        self.pool = pool
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, 1, (kernel_size - 1) // 2, groups=channels, bias=False),
            batch_norm(channels),
        )
        self.act_conv1x1 = nn.Sequential(nn.PReLU(channels), nn.Conv2d(channels, channels, 1, bias=False))
        self.bn = batch_norm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool, self.pool)
        x = self.act_conv1x1(self.conv(x))
        if self.pool > 1:
            x = upsample(x, self.pool)
        return self.bn(x)


class S2Module(nn.Module):
    """S2-module: group pointwise (2 groups) → shuffle → two S2-blocks on the same tensor → concat [+ input] → BR.

    Args:
        in_channels: input channels.
        out_channels: output channels (each S2-block gives half).
        block_configs: ``((k1, p1), (k2, p2))``, kernel size and pooling of the two S2-blocks.
        residual: add the module input before BR (False for the first module of each bottleneck).
    """

    def __init__(self, in_channels: int, out_channels: int,
                 block_configs: tuple[tuple[int, int], tuple[int, int]], residual: bool):
        super().__init__()
        half = out_channels // 2
        self.residual = residual
        self.half = half
        self.c1 = Conv(in_channels, half, 1, 1, groups=2)
        (k1, p1), (k2, p2) = block_configs
        self.d1 = S2Block(half, k1, p1)
        self.d2 = S2Block(half, k2, p2)
        self.BR = BNPReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = channel_shuffle(self.c1(x), 2, self.half)
        out = torch.cat([self.d1(reduced), self.d2(reduced)], 1)
        if self.residual:
            out = out + x
        return self.BR(out)


def encoder_features(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SINet's encoder wiring, shared by :class:`sinet.model.SINetEncoder` and its fused graph.

    ``encoder`` has the authors' attribute names: ``level1``, ``level2_0``, ``level2``, ``BR2``, ``level3_0``,
    ``level3``, ``BR3``, ``classifier``. Returns ``(logits at 1/8, output of the last level-2 module at 1/4)``.

    Args:
        encoder: the encoder (or its fused graph).
        x: normalised images ``(N, 3, H, W)``; converted to channels-last on entry.
    """
    down2 = encoder.level2_0(encoder.level1(x.contiguous(memory_format=torch.channels_last)))
    level2 = down2
    for module in encoder.level2:
        level2 = module(level2)
    down3 = encoder.level3_0(encoder.BR2(torch.cat([down2, level2], 1)))
    level3 = down3
    for module in encoder.level3:
        level3 = module(level3)
    logits = encoder.classifier(encoder.BR3(torch.cat([down3, level3], 1)))
    return logits, level2
