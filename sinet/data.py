"""Datasets over manifests: labelled, accepted rows of chosen splits, augmented and normalised for SINet.

Rows are read through ``sinet_plus.manifest`` as :class:`Sample` s (what training and evaluation both take) and
photos through ``sinet_plus.imageio``. A dataset item is ``(image, label)``: a float32 (3, S, S) tensor
normalised by the checkpoint's :class:`Preprocessing` and an int64 (S/stride, S/stride) label (0 background,
1 person, 255 ignored: the masks' 128, "unknown"); with ``soft_targets`` a third float32 (S/stride, S/stride)
tensor carries a teacher's person probability (the manifest's ``soft_mask``), -1 where the row has none.
Training keys are ``(index, seed)`` pairs from :class:`EpochSampler`, so each sample's augmentation depends on
its seed alone and not on the DataLoader's worker count or on where a resumed run restarts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from rich.progress import Progress
from torch.utils.data import Dataset, Sampler

from sinet.loss import label_pixel_counts
from sinet.preprocess import Preprocessing
from sinet.transforms import downsample_labels, sample_seed, seed_transform
from sinet_plus import manifest as mf
from sinet_plus.errors import PathError
from sinet_plus.imageio import STORED_UNKNOWN, ImageReadError, read_pair, read_probability


@dataclass(frozen=True)
class Sample:
    """One labelled photo of a manifest.

    Args:
        key: manifest id.
        image: photo path.
        mask: mask path.
        soft: path of a teacher's probability PNG (``soft_mask``; 0..255 = P(person)), when the row has one.
        source: the row's ``source`` (e.g. ``eg1800``, ``baidu_crop``, ``pseudo``), for per-source sampling shares.
    """

    key: str
    image: Path
    mask: Path
    soft: Path | None = None
    source: str = ""


def read_labelled(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """A labelled photo and its mask (0 background, 1 person, IGNORE where the PNG holds 128, "unknown"), so
    unknown pixels count nowhere in the loss or the metrics."""
    return read_pair(sample.image, sample.mask, unknown_value=STORED_UNKNOWN)


def manifest_samples(manifests: Sequence[str | os.PathLike], split: str | None,
                     statuses: tuple[str, ...] = ("accepted",)) -> list[Sample]:
    """Rows with a mask, of ``split`` (None = every split) and of the given review ``statuses``, over manifests.

    Args:
        manifests: manifest files (CSV or Parquet); rows of all of them are used, in order.
        split: the ``split`` value to keep, e.g. ``train`` or ``val``.
        statuses: review states whose masks count as ground truth; only ``accepted`` ones by default (pending
            pseudo-labels do not).
    """
    samples = []
    for path in manifests:
        manifest = mf.select(mf.load(path), split=split, status=statuses, with_mask=True)
        frame = manifest.frame
        softs = frame["soft_mask"] if "soft_mask" in frame else [None] * len(frame)
        samples += [Sample(key, manifest.path(image), manifest.path(mask),
                           manifest.path(soft) if isinstance(soft, str) and soft else None, source)
                    for key, image, mask, soft, source in zip(frame["id"], frame["image"], frame["mask"], softs,
                                                              frame["source"])]
    return samples


def epoch_shares(counts: dict[str, int], shares: dict[str, float]) -> dict[str, float]:
    """Each source's share of an epoch's samples, from its number of samples and the shares given.

    Args:
        counts: the number of training samples of each source.
        shares: shares of the listed sources (each in (0, 1], summing to at most 1); the sources not listed
            share the rest in proportion to their numbers of samples.

    Raises:
        ValueError: naming the problem: a listed source with no sample, shares out of range, a rest that no
            unlisted source takes, or unlisted sources left without a share.
    """
    found = ", ".join(f"{name} ({count})" for name, count in counts.items())
    missing = sorted(set(shares) - {name for name, count in counts.items() if count})
    if missing:
        raise ValueError(f"no training row has source {', '.join(missing)}; sources found: {found}")
    if any(not 0 < share <= 1 for share in shares.values()) or sum(shares.values()) > 1 + 1e-9:
        raise ValueError(f"source shares must lie in (0, 1] and sum to at most 1, got {shares}")
    rest = 1 - sum(shares.values())
    unlisted = {name: count for name, count in counts.items() if name not in shares}
    if unlisted and rest <= 1e-9:
        raise ValueError(f"the shares sum to 1, leaving nothing for {', '.join(unlisted)}; sources found: {found}")
    if not unlisted and rest > 1e-9:
        raise ValueError(f"the shares sum to {1 - rest:g} and every source is listed; sources found: {found}")
    unlisted_total = sum(unlisted.values())
    return {name: shares[name] if name in shares else rest * count / unlisted_total for name, count in counts.items()}


def source_groups(samples: Sequence[Sample], shares: dict[str, float]) -> list[tuple[list[int], float]]:
    """Sample indices by ``source`` with each source's share of an epoch (:func:`epoch_shares`), for
    :class:`EpochSampler`."""
    by_source: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        by_source.setdefault(sample.source, []).append(index)
    share = epoch_shares({name: len(rows) for name, rows in by_source.items()}, shares)
    return [(rows, share[name]) for name, rows in by_source.items()]


def teacher_maps(manifests: Sequence[str | os.PathLike]) -> dict[str, Path]:
    """Teacher probability maps by row id, from the ``soft_mask`` column of manifests (what ``pipeline
    pseudo-label --soft`` writes when it labels a training manifest's photos)."""
    maps: dict[str, Path] = {}
    for path in manifests:
        manifest = mf.load(path)
        if "soft_mask" not in manifest.frame:
            raise PathError(path, "no soft_mask column to distil from (pipeline pseudo-label --soft writes one)")
        maps.update({key: soft for key, soft in zip(manifest.frame["id"], manifest.paths("soft_mask")) if soft})
    return maps


@dataclass
class ScanResult:
    """What a pass over the samples found: the readable ones, per-class label pixels, and the problems."""

    samples: list[Sample]
    pixel_counts: np.ndarray
    problems: list[tuple[str, str]]


def scan_samples(samples: Sequence[Sample], description: str = "checking photos and masks") -> ScanResult:
    """Read every pair (and teacher map) once: drop unreadable ones (recording why) and count label pixels per
    class.

    The counts feed the class weights of the loss (official: over the training labels, before augmentation).
    """
    readable, problems, counts = [], [], np.zeros(2, np.int64)
    with Progress(transient=True) as progress:
        for sample in progress.track(samples, description=description):
            try:
                _, mask = read_labelled(sample)
                if sample.soft is not None:
                    read_probability(sample.soft, mask.shape)
            except ImageReadError as error:
                problems.append((sample.key, str(error)))
                continue
            counts += label_pixel_counts([mask])
            readable.append(sample)
    return ScanResult(readable, counts, problems)


class SegmentationDataset(Dataset):
    """Photo/label pairs through a transform, the checkpoint's normalisation and optional label downsampling.

    Args:
        samples: the pairs to serve.
        transform: an albumentations pipeline producing ``size``² images and masks (see ``sinet.transforms``).
        preprocessing: normalisation stored in the checkpoint (its ``size`` must match the transform's output).
        label_stride: labels are nearest-downsampled by this factor (8 for the stage-1 encoder, 1 otherwise).
        decoded: decoded pairs by sample index, shared with another dataset over the same samples (the next
            training stage), so :meth:`preload` decodes them once.
        soft_targets: also serve each sample's teacher probabilities, warped with its mask (distillation).

    ``dataset[i]`` serves sample ``i`` with the transform's current random state (fine for deterministic
    transforms); ``dataset[(i, seed)]`` reseeds the transform with ``seed`` first (training).
    """

    def __init__(self, samples: Sequence[Sample], transform: A.Compose, preprocessing: Preprocessing,
                 label_stride: int = 1, decoded: dict[int, tuple[np.ndarray, ...]] | None = None,
                 soft_targets: bool = False):
        self.samples = list(samples)
        self.transform = transform
        self.preprocessing = preprocessing
        self.label_stride = label_stride
        self.decoded = {} if decoded is None else decoded
        self.soft_targets = soft_targets

    def _read(self, index: int) -> tuple[np.ndarray, ...]:
        """Photo and mask of sample ``index``, and with ``soft_targets`` its probability map (None without)."""
        sample = self.samples[index]
        pair = read_labelled(sample)
        if not self.soft_targets:
            return pair
        return (*pair, None if sample.soft is None else read_probability(sample.soft, pair[1].shape))

    def preload(self, max_bytes: int) -> int:
        """Keep decoded photos, masks (and teacher maps) in memory, in sample order, up to ``max_bytes``; returns
        how many samples.

        Decoding is most of what a training sample costs (docs/training.md), and it is the same every epoch.
        Call it before the DataLoader starts its workers: they are forked and share
        the arrays. Unreadable pairs are left out (``__getitem__`` then raises as without the cache).

        Args:
            max_bytes: memory budget for the decoded arrays (0 = none).
        """
        if self.decoded:
            return len(self.decoded)  # filled already, e.g. by the previous stage's dataset
        used = 0
        with Progress(transient=True) as progress:
            for index in progress.track(range(len(self.samples)), description="decoding photos into memory"):
                try:
                    arrays = self._read(index)
                except ImageReadError:
                    continue
                size = sum(array.nbytes for array in arrays if array is not None)
                if used + size > max_bytes:
                    break
                self.decoded[index] = arrays
                used += size
        return len(self.decoded)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, ...]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, mask, *soft = self.decoded[index] if index in self.decoded else self._read(index)
        if seed is not None:
            seed_transform(self.transform, seed)
        maps = [mask] if not soft or soft[0] is None else [mask, soft[0]]
        out = self.transform(image=image, masks=maps)
        maps = [m if self.label_stride == 1 else downsample_labels(m, self.label_stride) for m in out["masks"]]
        served = (torch.from_numpy(self.preprocessing.normalise(out["image"])),
                  torch.from_numpy(maps[0].astype(np.int64)))
        if not self.soft_targets:
            return served
        probability = maps[1].astype(np.float32) / 255 if len(maps) > 1 else np.full(maps[0].shape, -1, np.float32)
        return (*served, torch.from_numpy(probability))


CYCLE_KEY = 2**31 - 1
"""Seed key that tells the permutations of a fixed-size epoch stream from the per-epoch ones."""
GROUP_KEY = 2**31 - 2
"""Seed key of the per-source streams and of the mixing of an epoch drawn with source shares."""


class EpochSampler(Sampler):
    """Keys ``(index, augmentation seed)`` of one epoch: a permutation drawn from ``(seed, stage, epoch)``.

    Args:
        size: number of samples.
        seed: the run's seed.
        stage: training stage (1 or 2), so the two stages see different augmentations.
        epoch: 0-based epoch.
        start: number of this process's keys to skip (resuming in the middle of an epoch).
        rank, world_size: under DDP each process takes every ``world_size``-th key of the permutation.
        shuffle: False keeps manifest order (throughput measurements, debugging).
        epoch_size: samples per epoch (None = ``size``): epoch ``e`` takes positions ``e·k .. (e+1)·k`` of the
            stream of permutations ``(seed, stage, cycle)``, cycle after cycle (see ``TrainConfig.epoch_size``).
        groups: per-source ``(indices, share)`` from :func:`source_groups` (None = one pool): each epoch takes
            ``share`` of its samples from each group's own stream of permutations, so a group is seen evenly
            whatever its size, and then mixes them with a permutation of the epoch.
    """

    def __init__(self, size: int, seed: int, stage: int, epoch: int, start: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True, epoch_size: int | None = None,
                 groups: Sequence[tuple[Sequence[int], float]] | None = None):
        self.size, self.seed, self.stage, self.epoch = size, seed, stage, epoch
        self.start, self.rank, self.world_size, self.shuffle = start, rank, world_size, shuffle
        self.epoch_size, self.groups = epoch_size, groups

    def _permutation(self, size: int, *keys: int) -> list[int]:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.stage, *keys))
        return torch.randperm(size, generator=generator).tolist()

    def _stream(self, size: int, first: int, count: int, *keys: int) -> list[int]:
        """Positions ``first .. first + count`` of a stream of seeded permutations of ``range(size)``."""
        cycles = range(first // size, (first + count - 1) // size + 1)
        stream = [index for cycle in cycles for index in self._permutation(size, *keys, cycle)]
        offset = first - cycles[0] * size
        return stream[offset:offset + count]

    def _mixed(self, total: int) -> list[int]:
        """An epoch of ``total`` samples drawn from the groups by share (largest remainders round the counts)."""
        wanted = [share * total for _, share in self.groups]
        counts = [math.floor(w) for w in wanted]
        for g in sorted(range(len(counts)), key=lambda g: counts[g] - wanted[g])[:total - sum(counts)]:
            counts[g] += 1
        order = [indices[i] for g, ((indices, _), count) in enumerate(zip(self.groups, counts)) if count
                 for i in self._stream(len(indices), self.epoch * count, count, GROUP_KEY, g)]
        return [order[i] for i in self._permutation(total, GROUP_KEY, self.epoch)]

    def order(self) -> list[int]:
        """This process's sample indices for the whole epoch (before skipping ``start``)."""
        if not self.shuffle:
            order = list(range(self.size))
        elif self.groups is not None:
            order = self._mixed(self.epoch_size or self.size)
        elif self.epoch_size is None:
            order = self._permutation(self.size, self.epoch)
        else:
            order = self._stream(self.size, self.epoch * self.epoch_size, self.epoch_size, CYCLE_KEY)
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.order()[self.start:]:
            yield index, sample_seed(self.seed, self.stage, self.epoch, index)

    def __len__(self) -> int:
        total = self.size if self.epoch_size is None or not self.shuffle else self.epoch_size
        return max(0, math.ceil((total - self.rank) / self.world_size) - self.start)
