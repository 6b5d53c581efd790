"""Datasets over manifests: labelled, accepted rows of chosen splits, augmented and normalised for SINet.

Rows are read through ``pipeline.manifest`` and photos through ``pipeline.imageio``. A sample is
``(image, label)``: a float32 (3, S, S) tensor normalised by the checkpoint's :class:`Preprocessing` and an
int64 (S/stride, S/stride) label (0 background, 1 person, 255 ignored: the masks' 128 "unknown"). Training keys are ``(index, seed)``
pairs from :class:`EpochSampler`, so each sample's augmentation depends on its seed alone and not on the
DataLoader's worker count or on where a resumed run restarts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch
from rich.progress import Progress
from torch.utils.data import Dataset, Sampler

from pipeline.imageio import ImageReadError
from sinet.evaluate import EvalItem, manifest_items, read_labelled
from sinet.loss import label_pixel_counts
from sinet.preprocess import Preprocessing
from sinet.transforms import downsample_labels, sample_seed, seed_transform


def manifest_samples(manifests: Sequence[str | os.PathLike], split: str | None,
                     statuses: tuple[str, ...] = ("accepted",)) -> list[EvalItem]:
    """Rows with a mask, of ``split`` (None = every split) and of the given review ``statuses``, over manifests.

    Args:
        manifests: manifest files (CSV or Parquet); rows of all of them are used, in order.
        split: the ``split`` value to keep, e.g. ``train`` or ``val``.
        statuses: review states to keep; only ``accepted`` masks are trusted by default.
    """
    return [item for path in manifests for item in manifest_items(path, split, statuses)]


@dataclass
class ScanResult:
    """What a pass over the samples found: the readable ones, per-class label pixels, and the problems."""

    samples: list[EvalItem]
    pixel_counts: np.ndarray
    problems: list[tuple[str, str]]


def scan_samples(samples: Sequence[EvalItem], description: str = "checking photos and masks") -> ScanResult:
    """Read every pair once: drop unreadable ones (recording why) and count label pixels per class.

    The counts feed the class weights of the loss (official: over the training labels, before augmentation).
    """
    readable, problems, counts = [], [], np.zeros(2, np.int64)
    with Progress(transient=True) as progress:
        for sample in progress.track(samples, description=description):
            try:
                _, mask = read_labelled(sample)
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

    ``dataset[i]`` serves sample ``i`` with the transform's current random state (fine for deterministic
    transforms); ``dataset[(i, seed)]`` reseeds the transform with ``seed`` first (training).
    """

    def __init__(self, samples: Sequence[EvalItem], transform: A.Compose, preprocessing: Preprocessing,
                 label_stride: int = 1, decoded: dict[int, tuple[np.ndarray, np.ndarray]] | None = None):
        self.samples = list(samples)
        self.transform = transform
        self.preprocessing = preprocessing
        self.label_stride = label_stride
        self.decoded = {} if decoded is None else decoded

    def preload(self, max_bytes: int) -> int:
        """Keep decoded photo/mask pairs in memory, in sample order, up to ``max_bytes``; returns how many.

        Decoding a 600x800 JPEG and its PNG took 4.3 of the 6.3 ms a training sample costs on this CPU, and it
        is the same every epoch. Call it before the DataLoader starts its workers: they are forked and share
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
                    pair = read_labelled(self.samples[index])
                except ImageReadError:
                    continue
                size = pair[0].nbytes + pair[1].nbytes
                if used + size > max_bytes:
                    break
                self.decoded[index] = pair
                used += size
        return len(self.decoded)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        sample = self.samples[index]
        image, mask = self.decoded[index] if index in self.decoded else read_labelled(sample)
        if seed is not None:
            seed_transform(self.transform, seed)
        out = self.transform(image=image, mask=mask)
        label = out["mask"] if self.label_stride == 1 else downsample_labels(out["mask"], self.label_stride)
        return (torch.from_numpy(self.preprocessing.normalise(out["image"])),
                torch.from_numpy(label.astype(np.int64)))


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
    """

    def __init__(self, size: int, seed: int, stage: int, epoch: int, start: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True):
        self.size, self.seed, self.stage, self.epoch = size, seed, stage, epoch
        self.start, self.rank, self.world_size, self.shuffle = start, rank, world_size, shuffle

    def order(self) -> list[int]:
        """This process's sample indices for the whole epoch (before skipping ``start``)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, self.stage, self.epoch))
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        return order[self.rank::self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.order()[self.start:]:
            yield index, sample_seed(self.seed, self.stage, self.epoch, index)

    def __len__(self) -> int:
        return max(0, math.ceil((self.size - self.rank) / self.world_size) - self.start)
