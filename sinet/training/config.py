"""Every option of a training run, defaults being the authors' recipe where it has one (torch-free, so the
``sinet`` command reads its defaults from here without loading torch)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from sinet.recipe import STAGE1_BAND_KERNEL, STAGE2_BAND_KERNEL, AugmentationConfig


@dataclass
class TrainConfig:
    """Every option of a run; ``sinet train`` reads its defaults from here.

    Args:
        manifests: training manifests (rows of ``split``, accepted, with masks).
        out: run folder.
        val_manifests: manifests holding the validation rows (default: ``manifests``).
        split: training split.
        val_split: validation split (model selection).
        stages: which stages to run, ``(1, 2)`` normally; ``(2,)`` with ``encoder`` starts from a given
            stage-1 checkpoint.
        encoder: stage-1 checkpoint initialising stage 2 when stage 1 is not run.
        init: full SINet checkpoint initialising stage 2 instead (fine-tuning, or a warm restart of an earlier
            run with a new schedule); needs ``stages == (2,)``.
        stage1_epochs, stage2_epochs: epochs E of each stage (300 and 300).
        stage1_batch, stage2_batch: batch sizes (36 and 24).
        lr: Adam learning rate (5e-4, the authors' training config; the paper's 7.5e-3 is a typo).
        betas, eps: Adam's (0.9, 0.999) and 1e-8.
        conv_weight_decay: L2 on non-depthwise conv weights (2e-4).
        depthwise_weight_decay: L2 on depthwise conv weights (0).
        other_weight_decay: L2 on every 1-D/2-D parameter: BN, PReLU, SE FC (2e-6).
        lr_gamma: LR factor at each milestone (0.5).
        lr_milestones: milestones as fractions of E (E/2 and E − E/6).
        boundary_weight: λ of the band term (0.5).
        stage1_band, stage2_band: band kernels (5 on 28² labels, 15 on 224²).
        distill_weight: weight of a distillation term (not in the official recipe): the cross-entropy of the
            model's probabilities against a teacher's, from the manifests' ``soft_mask`` column (written by
            ``pipeline pseudo-label --soft``), on the rows that have one (0 = off).
        teacher_maps: manifests whose ``soft_mask`` column gives training rows their teacher maps by id (e.g.
            ``pipeline pseudo-label --soft`` run over a training manifest); they win over the rows' own column.
        class_weighting: ERFNet class weights 1/ln(1.10 + p_c) from the training labels (the authors' default).
        select_from: model selection considers epochs after this fraction of E (0.6).
        average_epochs: also average the weights at the ends of the last stage's last this many epochs
            (:mod:`~sinet.training.averaging`): the mean, with BatchNorm statistics re-estimated on one epoch of
            training batches, is validated and written to ``averaged.pt`` (0 = no averaging).
        size: square input side (224; multiple of 32).
        preprocessing: name of the :data:`~sinet.preprocess.PRESETS` normalisation stored in checkpoints.
        augmentation: PortraitNet augmentation settings (its ``size`` follows ``size``).
        seed: run seed (model init, order, augmentation).
        workers: DataLoader worker processes (results do not depend on it); None =
            :func:`~sinet.training.steps.auto_workers`.
        threads: torch CPU threads (None = torch's default).
        device: ``auto`` (CUDA, then MPS, then CPU) or a torch device string.
        amp: mixed precision on CUDA (ignored elsewhere).
        compile: ``torch.compile`` the training forward/backward (full batches; a smaller last batch runs
            eagerly on the same weights): minutes of compilation per stage for faster steps (docs/training.md).
            None = where it pays and builds: a stage compiles when it plans enough steps and enough minutes to
            earn the compilation back (:func:`~sinet.training.steps.compiles`), on a CPU or CUDA; a failed
            compilation falls back to eager steps with a warning.
        checkpoint_every: also write ``last.pt`` every this many steps within an epoch (0 = at epoch ends).
        time_budget: minutes for the whole run: each stage's E is cut to what its budget allows, judged from
            the epochs done so far, until the first LR milestone fixes it (None = run every epoch).
        stage1_share: share of ``time_budget`` given to stage 1.
        cache_gb: keep up to this many GB of decoded training photos in memory (0 = decode every time); the
            results do not depend on it.
        epoch_size: samples per epoch (None = each training sample once). Epochs then take consecutive slices
            of a stream of seeded permutations of the training set, so runs on training sets of different sizes
            make the same optimizer steps per epoch while still seeing every sample equally often.
        source_shares: shares of each epoch's samples by the rows' ``source`` (e.g. ``{"baidu_crop": 0.2}``); the
            sources not listed share the rest in proportion to their sizes (None = every sample equally often).
            Sets how much of training the curated data takes, independently of how many rows it has.
    """

    manifests: list[str]
    out: str
    val_manifests: list[str] | None = None
    split: str = "train"
    val_split: str = "val"
    stages: tuple[int, ...] = (1, 2)
    encoder: str | None = None
    init: str | None = None
    stage1_epochs: int = 300
    stage2_epochs: int = 300
    stage1_batch: int = 36
    stage2_batch: int = 24
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    conv_weight_decay: float = 2e-4
    depthwise_weight_decay: float = 0.0
    other_weight_decay: float = 2e-6
    lr_gamma: float = 0.5
    lr_milestones: tuple[float, ...] = (0.5, 5 / 6)
    boundary_weight: float = 0.5
    stage1_band: int = STAGE1_BAND_KERNEL
    stage2_band: int = STAGE2_BAND_KERNEL
    distill_weight: float = 0.0
    teacher_maps: list[str] | None = None
    class_weighting: bool = True
    select_from: float = 0.6
    average_epochs: int = 0
    size: int = 224
    preprocessing: str = "imagenet"
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    seed: int = 0
    workers: int | None = None
    threads: int | None = None
    device: str = "auto"
    amp: bool = True
    compile: bool | None = None
    checkpoint_every: int = 0
    time_budget: float | None = None
    stage1_share: float = 0.4
    cache_gb: float = 4.0
    epoch_size: int | None = None
    source_shares: dict[str, float] | None = None

    RUNTIME = ("workers", "threads", "device", "out", "cache_gb")
    """Options a resumed run may change (None keeps the saved value). Workers never change results; the
    thread count changes float summation order, so a bit-identical resume needs the same ``threads``."""

    def epochs(self, stage: int) -> int:
        return self.stage1_epochs if stage == 1 else self.stage2_epochs

    def batch(self, stage: int) -> int:
        return self.stage1_batch if stage == 1 else self.stage2_batch

    def band(self, stage: int) -> int:
        return self.stage1_band if stage == 1 else self.stage2_band

    @property
    def cache_bytes(self) -> int:
        """:attr:`cache_gb` in bytes."""
        return int(self.cache_gb * 2**30)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["augmentation"] = AugmentationConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                     for k, v in data["augmentation"].items()})
        for key in ("betas", "lr_milestones", "stages"):
            data[key] = tuple(data[key])
        return cls(**data)
