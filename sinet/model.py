"""Assemble SINet as the authors' code does: the encoder (stage-1 model) and the full encoder-decoder model.

``SINetEncoder`` alone is the stage-1 model (``Enc_SINet``, 86,764 parameters, logits at 1/8).
``SINet`` = encoder + information-blocking decoder (``Dnc_SINet``, 86,910 parameters, 63.87 M MACs at 224²,
logits at full resolution). Both take ``(N, 3, H, W)`` with H and W multiples of 32 and return raw logits.

Both keep their weights and activations in the channels-last (NHWC) memory format: it is oneDNN's native layout,
so none of SINet's 52 small convolutions pays a layout reorder (faster CPU inference: docs/sinet.md). Shapes,
state-dict keys and values are unchanged; only strides differ, and NCHW inputs are accepted (converted on entry).

In eval mode, when no gradient is recorded (``torch.inference_mode()`` / ``torch.no_grad()``), both run their
fused inference graph (:mod:`sinet.fused`: BatchNorm and channel shuffle folded into the weights, same logits
to float rounding), rebuilt whenever a weight changes. Training, and eval mode with autograd on, run the
modules below as they are.
"""

from __future__ import annotations

import torch
from torch import nn

from sinet.blocks import BNPReLU, Conv, ConvBNPReLU, DSConvSE, S2Module, encoder_features
from sinet.decoder import InformationBlockingDecoder
from sinet.fused import drop_inference_graph, inference_graph

CHANNELS_LAST = torch.channels_last

# (kernel, pool) of the two S2-blocks of every S2-module: 2 modules at 1/4, 8 at 1/8 (paper Table 2 = code).
LEVEL2_BLOCKS = (((3, 1), (5, 1)), ((3, 1), (3, 1)))
LEVEL3_BLOCKS = (((3, 1), (5, 1)), ((3, 1), (3, 1)), ((5, 1), (3, 2)), ((5, 2), (3, 4)),
                 ((3, 1), (3, 1)), ((5, 1), (5, 1)), ((3, 2), (3, 4)), ((3, 1), (5, 2)))
STEM_CHANNELS, LEVEL2_IN, LEVEL2_CHANNELS, LEVEL3_CHANNELS = 12, 16, 48, 96


class FusedInference(nn.Module):
    """Base of the two SINet models: in eval mode without autograd, ``forward`` runs the fused graph."""

    def __init__(self):
        super().__init__()
        self.register_load_state_dict_post_hook(drop_inference_graph)

    def runs_fused(self) -> bool:
        """Whether this call should run the fused inference graph: eval mode and no gradient recorded."""
        return not self.training and not torch.is_grad_enabled()

    def train(self, mode: bool = True):
        drop_inference_graph(self)
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        drop_inference_graph(self)  # .to(), .float(), ... may give the parameters new storage
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return inference_graph(self)(x) if self.runs_fused() else self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's own forward (the modules as trained)."""
        raise NotImplementedError


class SINetEncoder(FusedInference):
    """SINet encoder with its 1×1 classifier; on its own it is the stage-1 model (output at 1/8).

    Args:
        num_classes: number of output classes (2: background, person).
    """

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.num_classes = num_classes
        self.level1 = ConvBNPReLU(3, STEM_CHANNELS, 3, 2)
        self.level2_0 = DSConvSE(STEM_CHANNELS, LEVEL2_IN, reduction=1)
        self.level2 = nn.ModuleList(
            S2Module(LEVEL2_IN if i == 0 else LEVEL2_CHANNELS, LEVEL2_CHANNELS, blocks, residual=i > 0)
            for i, blocks in enumerate(LEVEL2_BLOCKS))
        self.BR2 = BNPReLU(LEVEL2_IN + LEVEL2_CHANNELS)
        self.level3_0 = DSConvSE(LEVEL2_IN + LEVEL2_CHANNELS, LEVEL2_CHANNELS, reduction=2)
        self.level3 = nn.ModuleList(
            S2Module(LEVEL2_CHANNELS if i == 0 else LEVEL3_CHANNELS, LEVEL3_CHANNELS, blocks, residual=i > 0)
            for i, blocks in enumerate(LEVEL3_BLOCKS))
        self.BR3 = BNPReLU(LEVEL2_CHANNELS + LEVEL3_CHANNELS)
        self.classifier = Conv(LEVEL2_CHANNELS + LEVEL3_CHANNELS, num_classes, 1)
        self.to(memory_format=CHANNELS_LAST)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits at 1/8, output of the last level-2 module at 1/4)``; the decoder needs both.

        Args:
            x: normalised images ``(N, 3, H, W)``.
        """
        return encoder_features(self, x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The stage-1 logits at 1/8 through the modules as trained.

        Args:
            x: normalised images ``(N, 3, H, W)``.
        """
        return self.features(x)[0]


class SINet(FusedInference):
    """SINet: encoder + information-blocking decoder; logits at the input resolution.

    Args:
        num_classes: number of output classes (2: background, person). The released weights are 2-class.
    """

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = SINetEncoder(num_classes)
        self.decoder = InformationBlockingDecoder(LEVEL2_CHANNELS, num_classes)
        self.to(memory_format=CHANNELS_LAST)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Full-resolution logits through the modules as trained.

        Args:
            x: normalised images ``(N, 3, H, W)``.
        """
        coarse, detail = self.encoder.features(x)
        return self.decoder(coarse, detail)
