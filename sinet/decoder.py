"""SINet's information-blocking decoder.

The encoder's coarse logits are upsampled; where they are confident, the level-2 detail is blocked; where they
are not (boundaries), it flows in. Attribute names match the official ``Dnc_SINet`` (``bn_3``, ``level2_C``,
``bn_2``, ``classifier.1``) so the released checkpoint loads unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from sinet.blocks import ConvBNPReLU, batch_norm, upsample


class InformationBlockingDecoder(nn.Module):
    """Fuse 1/8 logits with 1/4 features, gated by ``1 - confidence``, and return full-resolution logits.

    Args:
        detail_channels: channels of the level-2 feature map (48 in SINet).
        num_classes: number of classes.
    """

    def __init__(self, detail_channels: int, num_classes: int):
        super().__init__()
        self.bn_3 = batch_norm(num_classes)
        self.level2_C = ConvBNPReLU(detail_channels, num_classes, 1)
        self.bn_2 = batch_norm(num_classes)
        # Index 0 is the official parameter-free UpsamplingBilinear2d; the conv must stay at index 1 (its key).
        self.classifier = nn.Sequential(nn.UpsamplingBilinear2d(scale_factor=2),
                                        nn.Conv2d(num_classes, num_classes, 3, 1, 1, bias=False))

    def forward(self, coarse_logits: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
        """Args:
            coarse_logits: encoder logits ``(N, classes, H/8, W/8)``.
            detail: output of the last level-2 S2-module ``(N, 48, H/4, W/4)`` (not the BR2 concat).
        """
        coarse = self.bn_3(upsample(coarse_logits))
        confidence = torch.softmax(coarse, dim=1).amax(dim=1, keepdim=True)
        fused = self.level2_C(detail) * (1 - confidence) + coarse
        return self.classifier(self.bn_2(upsample(fused)))
