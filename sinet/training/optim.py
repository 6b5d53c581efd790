"""The optimizer and its learning-rate schedule: Adam in three weight-decay groups, MultiStepLR at E/2 and E − E/6,
and the time-budget plan that fits E to the minutes a stage has."""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from sinet.training.config import TrainConfig
from sinet.training.state import TrainState


def parameter_groups(model: nn.Module, conv: float, depthwise: float, other: float) -> list[dict]:
    """Adam parameter groups with the authors' weight decays: mixing convolutions are decayed most, depthwise ones
    (a 3x3 filter per channel, few weights) not at all, and BatchNorm, PReLU and SE weights barely.

    Args:
        model: the model to train.
        conv: decay of conv weights that mix channels.
        depthwise: decay of depthwise conv weights (one input channel per group).
        other: decay of every other parameter (BN, PReLU, SE linear weights and biases, conv biases).
    """
    groups: dict[str, list[nn.Parameter]] = {"conv": [], "depthwise": [], "other": []}
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            if isinstance(module, nn.Conv2d) and name == "weight":
                groups["depthwise" if parameter.shape[1] == 1 else "conv"].append(parameter)
            else:
                groups["other"].append(parameter)
    decays = {"conv": conv, "depthwise": depthwise, "other": other}
    return [{"params": params, "weight_decay": decays[name], "name": name}
            for name, params in groups.items() if params]


def milestones(epochs: int, fractions: Sequence[float], not_before: int = 0) -> list[int]:
    """MultiStepLR milestones ``round(E · f)``: E/2 and E − E/6 (150 and 250 at E = 300) by default.

    Args:
        epochs: the epochs E of the stage.
        fractions: milestones as fractions of E.
        not_before: earliest milestone (a plan revised mid-stage cannot drop the LR in the past).
    """
    return [max(round(epochs * f), not_before) for f in fractions]


def make_optimizer(model: nn.Module, config: TrainConfig, epochs: int
                   ) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.MultiStepLR]:
    """Adam (coupled L2, as the authors' code) over :func:`parameter_groups`, and its MultiStepLR for ``epochs``."""
    optimizer = torch.optim.Adam(parameter_groups(model, config.conv_weight_decay, config.depthwise_weight_decay,
                                                  config.other_weight_decay),
                                 lr=config.lr, betas=config.betas, eps=config.eps)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones(epochs, config.lr_milestones),
                                                     gamma=config.lr_gamma)
    return optimizer, scheduler


def step_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Advance the LR schedule at the start of an epoch, as the authors' code does (so E/2 − 1 epochs at the full
    rate); PyTorch's warning about stepping before the optimizer is expected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()


def stage_budget(config: TrainConfig, state: TrainState) -> float | None:
    """Seconds the stage in progress may take in all under the time budget (None without a budget): stage 1 of a
    two-stage run gets ``stage1_share`` of it, the last stage what the earlier one left.

    Args:
        config: the run's options.
        state: the run's state (its stage and the seconds spent).
    """
    if config.time_budget is None:
        return None
    if state.stage == config.stages[0] and len(config.stages) > 1:
        return config.time_budget * 60 * config.stage1_share
    return config.time_budget * 60 - (state.run_seconds - state.stage_seconds)


def plan_epochs(config: TrainConfig, state: TrainState, first_milestone: float) -> int:
    """The epochs E the stage in progress should run, judged after an epoch ends.

    Under a time budget E is fitted to what the stage's share leaves, at the median pace of the epochs after the
    first (which carries start-up costs, e.g. compilation). The plan is made after epoch 2 and revised after
    every epoch until the schedule reaches its first LR milestone; then, or without a budget, E stays
    ``state.planned_epochs``. The stage's share is :func:`stage_budget`.

    Args:
        config: the run's options (``time_budget``, ``stage1_share``, the stage's epochs).
        state: the run's state after the epoch (epochs done, seconds spent, epoch durations).
        first_milestone: the scheduler's first milestone (its count of epoch starts where the LR first drops).
    """
    epoch, budget = state.epoch, stage_budget(config, state)
    if budget is None or epoch < 2 or epoch + 1 >= first_milestone:
        return state.planned_epochs
    pace = statistics.median(state.epoch_seconds[1:])  # the first epoch carries start-up costs
    fits = int((budget - state.stage_seconds) // pace)
    return max(epoch, min(config.epochs(state.stage), epoch + fits))
