"""Weight arithmetic of SINet's fused graph (:mod:`sinet.fused`): eval-mode BatchNorms as per-channel affine maps
folded into the convolutions around them, and the channel shuffle as a permutation of per-channel weights.

The in-place ones work on the copies :func:`biased_conv` makes, never on the model's own modules.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of an eval-mode BatchNorm: ``bn(x) = scale * x + shift`` per channel.

    Args:
        bn: the BatchNorm (its running statistics are used).
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def biased_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None) -> nn.Conv2d:
    """An eval-mode copy of ``conv`` with a bias, with ``bn`` (applied after it) folded in when given.

    Args:
        conv: the convolution.
        bn: the BatchNorm following it, or None.
    """
    conv = copy.deepcopy(conv).eval()
    if bn is not None:
        return fuse_conv_bn_eval(conv, bn)
    if conv.bias is None:
        conv.bias = nn.Parameter(conv.weight.new_zeros(conv.out_channels))
    return conv


def scale_output(conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """Fold ``scale * y + shift`` per output channel of the biased ``conv`` into its weights (in place).

    Args:
        conv: a biased convolution.
        scale: per-output-channel factors.
        shift: per-output-channel offsets.
    """
    conv.weight.data = conv.weight.data * scale.view(-1, 1, 1, 1)
    conv.bias.data = conv.bias.data * scale + shift
    return conv


def permute_channels(module: nn.Module, order: torch.Tensor) -> nn.Module:
    """Reorder the per-channel parameters of a depthwise convolution or a PReLU (in place).

    Args:
        module: depthwise ``nn.Conv2d`` (one filter per channel, with a bias) or PReLU.
        order: new channel index → old channel index.
    """
    for parameter in module.parameters():
        parameter.data = parameter.data[order]
    return module


def shuffle_order(channels: int, groups: int = 2) -> torch.Tensor:
    """Where each channel of a tensor lands after :func:`sinet.blocks.channel_shuffle` (its new index).

    Args:
        channels: number of channels shuffled.
        groups: number of groups interleaved.
    """
    return torch.arange(channels).view(channels // groups, groups).t().reshape(-1)
