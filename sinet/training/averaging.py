"""Weight averaging of a stage's last epochs (stochastic weight averaging, Izmailov et al. 2018).

Late in training the held-out IoU of single epochs wanders by about a point around a plateau (docs/training.md);
the mean of the weights at several epoch ends sits nearer that plateau's centre than any one of them. BatchNorm's
running statistics belong to the weights they were gathered with, so the averaged model's are estimated afresh
on training batches.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.swa_utils import update_bn


def add_to_average(average: dict[str, torch.Tensor] | None, count: int, model: nn.Module
                   ) -> dict[str, torch.Tensor]:
    """The running mean of the floating-point weights after adding ``model``'s (in place when ``average`` exists).

    Args:
        average: the mean of ``count`` earlier states (None when ``count`` is 0).
        count: how many states ``average`` holds.
        model: the model whose current weights join the mean.
    """
    current = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()
               if value.is_floating_point()}
    if average is None:
        return current
    for key, value in current.items():
        average[key] += (value - average[key]) / (count + 1)
    return average


def averaged_model(model: nn.Module, average: dict[str, torch.Tensor], batches: Iterable,
                   device: torch.device) -> nn.Module:
    """``model`` carrying the mean weights ``average``, with BatchNorm statistics re-estimated on ``batches``.

    Args:
        model: a model of the averaged architecture (changed in place and returned).
        average: the mean weights (:func:`add_to_average`).
        batches: training batches ``(images, labels)``: one epoch is plenty for the statistics.
        device: where the statistics are gathered.
    """
    model.load_state_dict(average, strict=False)
    model.to(device)
    update_bn(batches, model, device)
    return model.eval()
