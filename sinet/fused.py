"""SINet's inference graph: the same function with every foldable BatchNorm and the channel shuffle folded away.

:func:`fuse` turns a SINet or SINetEncoder (with its eval-mode statistics) into a :class:`FusedSINet`, which
computes the same logits (to float rounding) with fewer and cheaper operations:

- every BatchNorm that follows a convolution, possibly through a bilinear upsampling (its weights sum to one,
  so a per-channel affine map commutes with it), becomes that convolution's scale and bias;
- the BR unit's BatchNorm after an S2-module's concat is split by channel into the two branches' last
  convolutions; with a residual, its scale on the input is one multiply-add;
- the channel shuffle disappears: everything between it and the branches' pointwise convolutions is per
  channel, so the shuffle becomes a permutation of those weights;
- the decoder's BatchNorm after the ×2 upsampling of the coarse logits folds into the encoder's classifier;
- the 2-channel decoder tensors are NCHW (bilinear upsampling of 2 channels is slow channels-last); the rest
  stays channels-last like :mod:`sinet.model`.

Exported to ONNX (see :mod:`sinet.export`), the graph also avoids the two operations that break ONNX Runtime's
blocked (NCHWc) layout: PReLU is written ``(1 - a)·relu(x) + a·x`` and per-channel scales are
``BatchNormalization`` nodes, so the runtime keeps every convolution, activation and sum in its own layout
instead of reordering around each of the 39 PReLUs (whose CPU kernel is also unvectorised).

The fused module is for inference only (its parameters are detached copies): the model's state-dict and
training forward are untouched. :class:`sinet.model.SINet` runs through one by itself in eval mode when no
gradient is recorded (:func:`inference_graph`). The weight arithmetic is in :mod:`sinet.folding`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from sinet.blocks import ConvBNPReLU, DSConvSE, S2Block, S2Module, encoder_features, upsample
from sinet.folding import biased_conv, bn_affine, permute_channels, scale_output, shuffle_order

CHANNELS_LAST = torch.channels_last


def exporting() -> bool:
    """Whether the forward pass is being traced for an ONNX export (the graph then takes its ONNX form)."""
    return torch.onnx.is_in_onnx_export()


def channel_affine(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """``scale * x + shift`` per channel of ``(N, C, H, W)`` as one BatchNorm (exported: ``BatchNormalization``).

    Args:
        x: the tensor.
        scale: ``(C,)`` factors.
        shift: ``(C,)`` offsets (zero when None).
    """
    zeros = torch.zeros_like(scale)
    return F.batch_norm(x, zeros, torch.ones_like(scale), scale, zeros if shift is None else shift, False, 0.0, 0.0)


class PReLU(nn.PReLU):
    """Per-channel PReLU; on 4-D tensors its ONNX form is ``(1 - a)·relu(x) + a·x`` (the same function).

    Args:
        prelu: the PReLU whose slopes it takes.
    """

    def __init__(self, prelu: nn.PReLU):
        super().__init__(prelu.num_parameters)
        self.weight.data = prelu.weight.data.clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if exporting() and x.dim() == 4:
            return channel_affine(F.relu(x), 1 - self.weight) + channel_affine(x, self.weight)
        return F.prelu(x, self.weight)


class Pointwise(nn.Conv2d):
    """A biased 1×1 convolution run as a matrix product on the channels-last (NHWC) view.

    In eager mode this skips oneDNN's per-call set-up, which costs as much as the product at SINet's sizes;
    exported it stays a ``Conv`` so runtimes keep their own layouts.

    Args:
        conv: the 1×1 convolution (groups 1, with a bias) whose weights it takes.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv.in_channels, conv.out_channels, 1, device=conv.weight.device, dtype=conv.weight.dtype)
        self.load_state_dict(conv.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if exporting() or not x.is_contiguous(memory_format=CHANNELS_LAST):
            return super().forward(x)
        return F.linear(x.permute(0, 2, 3, 1), self.weight[:, :, 0, 0], self.bias).permute(0, 3, 1, 2)


class FusedS2Branch(nn.Module):
    """An S2-block that reads the *unshuffled* reduced tensor, with its BatchNorms and its share of BR folded.

    [AvgPool p] → depthwise k×k (+bias) → PReLU → pointwise (+bias) → [bilinear ×p].

    Args:
        block: the S2-block.
        order: :func:`shuffle_order` of the reduced tensor.
        scale: BR's BatchNorm scale on this block's output channels.
        shift: BR's BatchNorm shift on this block's output channels.
    """

    def __init__(self, block: S2Block, order: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.pool = block.pool
        self.depthwise = permute_channels(biased_conv(block.conv[0], block.conv[1]), order)
        self.act = permute_channels(PReLU(block.act_conv1x1[0]), order)
        pointwise = biased_conv(block.act_conv1x1[1], block.bn)
        pointwise.weight.data = pointwise.weight.data[:, order]
        self.pointwise = Pointwise(scale_output(pointwise, scale, shift))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool, self.pool)
        x = self.pointwise(self.act(self.depthwise(x)))
        return upsample(x, self.pool) if self.pool > 1 else x


class FusedS2Module(nn.Module):
    """An S2-module without shuffle or BatchNorm: reduce → two branches → concat [+ scale·input] → PReLU.

    Args:
        module: the S2-module.
    """

    def __init__(self, module: S2Module):
        super().__init__()
        scale, shift = bn_affine(module.BR.bn)
        half, order = module.half, shuffle_order(module.half)
        self.reduce = copy.deepcopy(module.c1.conv)
        self.branches = nn.ModuleList(
            FusedS2Branch(block, order, scale[i * half:(i + 1) * half], shift[i * half:(i + 1) * half])
            for i, block in enumerate((module.d1, module.d2)))
        self.register_buffer("residual_scale", scale if module.residual else None)
        self.act = PReLU(module.BR.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        out = torch.cat([branch(reduced) for branch in self.branches], 1)
        if self.residual_scale is not None:
            out = out + channel_affine(x, self.residual_scale) if exporting() else torch.addcmul(
                out, x, self.residual_scale.view(1, -1, 1, 1))
        return self.act(out)


def _cbr(module: ConvBNPReLU) -> nn.Sequential:
    return nn.Sequential(biased_conv(module.conv, module.bn), PReLU(module.act))


def _downsampler(module: DSConvSE) -> nn.Sequential:
    depthwise, excite, pointwise = module.conv
    return nn.Sequential(copy.deepcopy(depthwise), copy.deepcopy(excite),
                         Pointwise(biased_conv(pointwise, module.bn)), PReLU(module.act))


class FusedEncoder(nn.Module):
    """SINet's encoder with its BatchNorms folded (the model's attribute names); returns ``(logits at 1/8,
    level-2 output at 1/4)``.

    Args:
        encoder: the :class:`sinet.model.SINetEncoder`.
        logits_bn: a BatchNorm applied to the logits after a bilinear upsampling (the decoder's ``bn_3``),
            folded into the classifier; None for the stage-1 model.
    """

    def __init__(self, encoder: nn.Module, logits_bn: nn.BatchNorm2d | None = None):
        super().__init__()
        self.level1 = _cbr(encoder.level1)
        self.level2_0 = _downsampler(encoder.level2_0)
        self.level2 = nn.ModuleList(FusedS2Module(module) for module in encoder.level2)
        self.BR2 = nn.Sequential(copy.deepcopy(encoder.BR2.bn), PReLU(encoder.BR2.act))
        self.level3_0 = _downsampler(encoder.level3_0)
        self.level3 = nn.ModuleList(FusedS2Module(module) for module in encoder.level3)
        self.BR3 = nn.Sequential(copy.deepcopy(encoder.BR3.bn), PReLU(encoder.BR3.act))
        self.classifier = Pointwise(biased_conv(encoder.classifier.conv, logits_bn))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return encoder_features(self, x)


class FusedSINet(nn.Module):
    """Inference-only SINet (or stage-1 encoder) computing the same logits with folded weights; see :func:`fuse`.

    Args:
        model: a :class:`sinet.model.SINet` or :class:`sinet.model.SINetEncoder` (left untouched).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        decoder = getattr(model, "decoder", None)
        self.has_decoder = decoder is not None
        self.encoder = FusedEncoder(model.encoder if self.has_decoder else model,
                                    decoder.bn_3 if self.has_decoder else None)
        if self.has_decoder:
            self.detail = nn.Sequential(Pointwise(biased_conv(decoder.level2_C.conv, decoder.level2_C.bn)),
                                        PReLU(decoder.level2_C.act))
            self.bn_2 = copy.deepcopy(decoder.bn_2)
            self.classifier = copy.deepcopy(decoder.classifier[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coarse, detail = self.encoder(x)
        if not self.has_decoder:
            return coarse
        # 2-channel tensors from here on: NCHW, where bilinear upsampling is fast (bn_2 commutes with it)
        coarse = upsample(coarse.contiguous())
        gate = 1 - torch.softmax(coarse, dim=1).amax(dim=1, keepdim=True)
        fused = self.bn_2(torch.addcmul(coarse, self.detail(detail).contiguous(), gate))
        return self.classifier(upsample(upsample(fused)).contiguous(memory_format=CHANNELS_LAST))


def fuse(model: nn.Module) -> FusedSINet:
    """The inference graph of ``model`` (a SINet or SINetEncoder) with its current weights and statistics.

    Args:
        model: the model; left untouched (state-dict, mode and weights do not change).
    """
    with torch.inference_mode(False), torch.no_grad():  # plain tensors even when first called for inference
        return FusedSINet(model).to(memory_format=CHANNELS_LAST).eval().requires_grad_(False)


def inference_graph(model: nn.Module) -> FusedSINet:
    """``model``'s fused graph, built on first use and rebuilt whenever one of its weights or statistics changed.

    Changes are seen through the tensors' version counters (bumped by every in-place update: optimizer steps,
    ``load_state_dict``, BatchNorm statistics); moving the model (``.to()``) or assigning new tensors is caught
    by the model dropping the graph (:meth:`sinet.model.SINet._apply`, ``load_state_dict`` hook).

    Args:
        model: a SINet or SINetEncoder.
    """
    cached = model.__dict__.get("_inference_graph")
    if cached is not None:
        tensors, versions, graph = cached
        if _versions(tensors) == versions:
            return graph
    tensors = [*model.parameters(), *model.buffers()]
    graph = fuse(model)
    model.__dict__["_inference_graph"] = (tensors, _versions(tensors), graph)
    return graph


def _versions(tensors: list[torch.Tensor]) -> list[int]:
    try:
        return [t._version for t in tensors]
    except RuntimeError:  # a model built under torch.inference_mode(): its tensors have no version counter
        return [0 if t.is_inference() else t._version for t in tensors]


def drop_inference_graph(model: nn.Module, *_args) -> None:
    """Forget ``model``'s cached fused graph (used as a ``load_state_dict`` post-hook too).

    Args:
        model: a SINet or SINetEncoder.
    """
    model.__dict__.pop("_inference_graph", None)
