"""Two-stage SINet training with the authors' recipe, resumable after a kill, bit for bit.

Stage 1 trains :class:`~sinet.model.SINetEncoder` on labels nearest-downsampled ×8 (batch 36, 5×5 band);
stage 2 trains :class:`~sinet.model.SINet` whose encoder starts from the best stage-1 state (batch 24, 15×15
band). Each stage: Adam with coupled L2 decay in three parameter groups, MultiStepLR at E/2 and E − E/6
(γ 0.5) stepped *before* each epoch as the authors' code does, class-weighted CE + 0.5 · band CE, validation
every epoch with the official metric, model selection from epoch 0.6·E on.

Determinism: the epoch's order comes from ``(seed, stage, epoch)`` and every sample's augmentation from
``(seed, stage, epoch, index)`` (:class:`~sinet.data.EpochSampler`), so the DataLoader's worker count and the
point where a run was killed do not change the batches. ``last.pt`` holds everything needed to continue
(:class:`~sinet.training.state.TrainState`) and is written atomically at the end of every epoch and every
``checkpoint_every`` steps.

Modules (import from them; this package's face stays empty so that reading the options does not load torch):
:mod:`~sinet.training.config` (the options), :mod:`~sinet.training.optim` (optimizer, LR schedule,
time-budget plan), :mod:`~sinet.training.state` (what ``last.pt`` holds), :mod:`~sinet.training.steps` (one
step, validation, loader workers), :mod:`~sinet.training.trainer` (the loop), :mod:`~sinet.training.report`
(metrics, curves), :mod:`~sinet.training.averaging` (weight averaging of the last epochs),
:mod:`~sinet.training.distributed` (``torchrun``).
"""
