"""SINet training: augmentation, data, optimizer groups, schedule, and a real two-stage run killed mid-epoch and
resumed (it must end exactly where an unbroken run ends)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance
from teacher_helpers import small_manifest
from typer.testing import CliRunner

from pipeline.cli import app as pipeline_app
from pipeline.importers import import_eg1800
from sinet.checkpoint import load_checkpoint, load_model, save_checkpoint
from sinet.cli import app as sinet_app
from sinet.data import EpochSampler, Sample, SegmentationDataset, manifest_samples, source_groups, teacher_maps
from sinet.loss import distillation_loss
from sinet.model import SINet, SINetEncoder
from sinet.preprocess import IMAGENET
from sinet.recipe import AugmentationConfig
from sinet.training.config import TrainConfig
from sinet.training.optim import make_optimizer, milestones, parameter_groups, plan_epochs, step_schedule
from sinet.training.state import EpochSums, TrainState
from sinet.training.trainer import Trainer, train
from sinet.training_bench import training_throughput
from sinet.transforms import (
    PilSharpness,
    PortraitWarp,
    downsample_labels,
    seed_transform,
    train_transform,
    warp_matrix,
)
from sinet.weights import SINET_EG1800
from sinet_plus.errors import UserError
from sinet_plus.imageio import IGNORE, read_image, read_pair
from sinet_plus.manifest import Manifest, write_manifest

PROJECT = Path(__file__).resolve().parents[1]
IMAGENET_64 = IMAGENET.__class__.from_dict({**IMAGENET.to_dict(), "size": [64, 64]})


@pytest.fixture(scope="module")
def tiny_manifest(eg1800_dir, tmp_path_factory) -> Path:
    """12 train and 4 val EG1800 photos, plus one truncated JPEG in train that must be skipped, not fatal."""
    folder = tmp_path_factory.mktemp("tiny")
    imported = import_eg1800(eg1800_dir, folder / "all.csv").manifest
    frame = imported.frame
    rows = pd.concat([frame[frame["split"] == "train"].head(13), frame[frame["split"] == "val"].head(4)])
    broken = folder / "broken.jpg"
    broken.write_bytes((eg1800_dir / "images" / "00001.jpg").read_bytes()[:3000])
    rows.iloc[12, rows.columns.get_loc("image")] = os.path.relpath(broken, imported.root)
    rows.iloc[12, rows.columns.get_loc("id")] = "eg1800/broken"
    path = folder / "tiny.csv"
    write_manifest(Manifest(rows.reset_index(drop=True), imported.root), path)
    return path


# ---- augmentation ----

def test_warp_puts_the_photo_centre_at_the_canvas_centre():
    matrix = warp_matrix(600, 800, 224, angle=30.0, scale=1.2, shift=(0.0, 0.0))
    centre = matrix @ np.array([299.5, 399.5, 1.0])
    assert centre == pytest.approx([112.0, 112.0])
    unrotated = warp_matrix(600, 800, 224, angle=0.0, scale=1.0, shift=(0.0, 0.0))
    assert unrotated[0, 0] == pytest.approx((224 / 599 + 224 / 799) / 2)  # one isotropic fit-to-canvas scale
    assert unrotated[0, 0] == pytest.approx(unrotated[1, 1])


def test_warp_borders_are_gray_and_background(eg1800_dir):
    image, mask = read_pair(eg1800_dir / "images" / "00001.jpg", eg1800_dir / "masks" / "00001.png")
    warp = PortraitWarp(size=224, rotation=0.0, scale=(0.5, 0.5), shift=0.0)  # half size: a wide border
    out = warp(image=image, mask=mask)
    assert out["image"].shape == (224, 224, 3) and out["mask"].shape == (224, 224)
    assert (out["image"][:, :5] == 128).all() and (out["mask"][:, :5] == 0).all()
    assert set(np.unique(out["mask"])) <= {0, 1}


def test_augmentation_depends_on_the_seed_alone(eg1800_dir):
    image, mask = read_pair(eg1800_dir / "images" / "00003.jpg", eg1800_dir / "masks" / "00003.png")
    first, second = train_transform(), train_transform()
    a = seed_transform(first, 7)(image=image, mask=mask)
    seed_transform(second, 99)(image=image, mask=mask)  # a different history does not matter
    b = seed_transform(second, 7)(image=image, mask=mask)
    c = seed_transform(first, 8)(image=image, mask=mask)
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
    assert not np.array_equal(a["image"], c["image"])


def test_sharpness_matches_pil(eg1800_dir):
    image = read_image(eg1800_dir / "images" / "00004.jpg")[200:424, 200:424]
    for factor in (0.8, 1.2):
        ours = PilSharpness((factor, factor))(image=image)["image"]
        pil = np.asarray(ImageEnhance.Sharpness(Image.fromarray(image)).enhance(factor))
        assert np.abs(ours.astype(int) - pil.astype(int)).max() <= 1


def test_stage1_labels_are_nearest_downsampled():
    mask = np.zeros((224, 224), np.uint8)
    mask[::8, ::8] = 1  # exactly the pixels nearest-neighbour keeps
    assert downsample_labels(mask).shape == (28, 28) and downsample_labels(mask).all()


# ---- data ----

def test_dataset_serves_normalised_photos_and_labels(tiny_manifest):
    samples = manifest_samples([tiny_manifest], "train")
    assert len(samples) == 13 and manifest_samples([tiny_manifest], "val")[0].key.startswith("eg1800/")
    preprocessing = IMAGENET.__class__.from_dict({**IMAGENET.to_dict(), "size": [64, 64]})
    dataset = SegmentationDataset(samples, train_transform(AugmentationConfig(size=64)), preprocessing,
                                  label_stride=8)
    image, label = dataset[(0, 123)]
    again, _ = dataset[(0, 123)]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and torch.equal(image, again)
    assert label.shape == (8, 8) and label.dtype == torch.int64
    assert set(label.unique().tolist()) <= {0, 1, IGNORE}
    assert abs(image.mean().item()) < 2  # normalised, not 0..255


def test_preloaded_photos_give_the_same_samples_within_the_memory_budget(tiny_manifest):
    samples = manifest_samples([tiny_manifest], "train")  # 12 readable photos and one truncated JPEG (index 12)
    preprocessing = IMAGENET.__class__.from_dict({**IMAGENET.to_dict(), "size": [64, 64]})

    def dataset() -> SegmentationDataset:
        return SegmentationDataset(samples, train_transform(AugmentationConfig(size=64)), preprocessing)

    cached, fresh = dataset(), dataset()
    assert cached.preload(2**34) == 12 and 12 not in cached.decoded  # the unreadable pair is left out
    for key in [(0, 7), (5, 8), (11, 9)]:
        assert all(torch.equal(a, b) for a, b in zip(cached[key], fresh[key]))
    with pytest.raises(Exception, match="broken.jpg"):
        cached[(12, 1)]  # not cached: it fails as without the cache
    pair_bytes = sum(array.nbytes for array in read_pair(samples[0].image, samples[0].mask))
    budgeted = dataset()  # every EG1800 pair is 600x800: exactly three fit
    assert budgeted.preload(3 * pair_bytes) == 3 and sorted(budgeted.decoded) == [0, 1, 2]
    assert dataset().preload(0) == 0


def test_epoch_sampler_is_seeded_resumable_and_shards():
    whole = EpochSampler(10, seed=1, stage=2, epoch=3)
    keys = list(whole)
    assert sorted(i for i, _ in keys) == list(range(10))
    assert keys == list(EpochSampler(10, seed=1, stage=2, epoch=3))
    assert [i for i, _ in keys] != [i for i, _ in EpochSampler(10, seed=1, stage=2, epoch=4)]
    assert list(EpochSampler(10, seed=1, stage=2, epoch=3, start=4)) == keys[4:]
    shards = [list(EpochSampler(10, seed=1, stage=2, epoch=3, rank=r, world_size=3)) for r in range(3)]
    assert sorted(k for shard in shards for k in shard) == sorted(keys)
    assert [len(EpochSampler(10, 1, 2, 3, rank=r, world_size=3)) for r in range(3)] == [4, 3, 3]


def test_fixed_epoch_size_gives_equal_steps_and_fair_coverage():
    # a pool of 10 drawn 4 per epoch: every epoch has 4 keys, 5 epochs see every sample exactly twice
    epochs = [[i for i, _ in EpochSampler(10, seed=1, stage=2, epoch=e, epoch_size=4)] for e in range(5)]
    assert [len(e) for e in epochs] == [4] * 5
    counts = np.bincount([i for e in epochs for i in e], minlength=10)
    assert counts.tolist() == [2] * 10
    assert epochs == [[i for i, _ in EpochSampler(10, seed=1, stage=2, epoch=e, epoch_size=4)] for e in range(5)]
    assert len(EpochSampler(10, seed=1, stage=2, epoch=1, epoch_size=4, start=3)) == 1
    # a pool smaller than an epoch: each epoch is longer than the pool and still balanced over cycles
    big = [i for i, _ in EpochSampler(3, seed=1, stage=2, epoch=0, epoch_size=7)]
    assert len(big) == 7 and max(np.bincount(big)) - min(np.bincount(big)) <= 1


def test_source_shares_fix_each_epochs_mix_and_cover_each_source_evenly():
    samples = [Sample(f"s{i}", Path("p.jpg"), Path("m.png"), source="crop" if i in (2, 5, 8) else "eg1800")
               for i in range(10)]
    groups = source_groups(samples, {"crop": 0.2})
    assert groups == [([0, 1, 3, 4, 6, 7, 9], pytest.approx(0.8)), ([2, 5, 8], 0.2)]

    def epoch(e, **options):
        return [i for i, _ in EpochSampler(10, seed=1, stage=2, epoch=e, epoch_size=10, groups=groups, **options)]

    epochs = [epoch(e) for e in range(6)]
    # 2 of every 10 samples are crops (30 % of the rows), and over 6 epochs each crop comes 4 times, each other
    # photo 6 or 7 times: every source's rows are drawn evenly, cycle after cycle
    assert [sum(i in (2, 5, 8) for i in e) for e in epochs] == [2] * 6
    counts = np.bincount([i for e in epochs for i in e], minlength=10)
    assert counts[[2, 5, 8]].tolist() == [4, 4, 4] and set(np.delete(counts, [2, 5, 8])) <= {6, 7}
    assert epochs == [epoch(e) for e in range(6)] and epochs[0] != epochs[1]
    assert epoch(3, start=4) == epochs[3][4:]
    assert sorted(i for r in range(3) for i in epoch(3, rank=r, world_size=3)) == sorted(epochs[3])
    # without an epoch size an epoch has one sample per row, mixed by the same shares
    assert len([i for i, _ in EpochSampler(10, seed=1, stage=2, epoch=0, groups=groups)]) == 10


@pytest.mark.parametrize("shares, problem", [
    ({"pseudo": 0.2}, "no training row has source pseudo; sources found: eg1800 (7), crop (3)"),
    ({"crop": 1.5}, "must lie in (0, 1]"),
    ({"crop": 0.6, "eg1800": 0.6}, "sum to at most 1"),
    ({"crop": 0.3, "eg1800": 0.5}, "sum to 0.8 and every source is listed"),
    ({"crop": 1.0}, "leaving nothing for eg1800"),
])
def test_source_shares_that_cannot_be_met_are_refused_with_the_reason(shares, problem):
    samples = [Sample(f"s{i}", Path("p.jpg"), Path("m.png"), source="crop" if i in (2, 5, 8) else "eg1800")
               for i in range(10)]
    with pytest.raises(ValueError, match=re.escape(problem)):
        source_groups(samples, shares)


def test_train_takes_source_shares_from_the_manifests_source_column(tiny_manifest, tmp_path):
    manifest = Manifest(pd.read_csv(tiny_manifest), tiny_manifest.parent)
    manifest.frame.loc[manifest.frame.index[:4], "source"] = "baidu_crop"  # 4 of 12 readable train rows
    mixed = tmp_path / "mixed.csv"
    write_manifest(manifest, mixed)
    samples = manifest_samples([mixed], "train")
    assert [s.source for s in samples[:5]] == ["baidu_crop"] * 4 + ["eg1800"]
    args = ["--manifest", str(mixed), "--stage", "2", "--init", str(SINET_EG1800), "--stage2-epochs", "1",
            "--stage2-batch", "4", "--size", "64", "--workers", "0", "--threads", "1", "--epoch-size", "8"]
    run = _cli("train", *args, "--out", str(tmp_path / "run"), "--source-share", "baidu_crop=0.25")
    assert run.returncode == 0, run.stderr
    assert "baidu_crop 25% (4 rows), eg1800 75% (8 rows)" in " ".join((run.stdout + run.stderr).split())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["source_shares"] == {"baidu_crop": 0.25}
    wrong = _cli("train", *args, "--out", str(tmp_path / "wrong"), "--source-share", "pseudo=0.2")
    assert wrong.returncode != 0 and "no training row has source pseudo" in wrong.stderr + wrong.stdout
    malformed = _cli("train", *args, "--out", str(tmp_path / "bad"), "--source-share", "baidu_crop:0.2")
    said = " ".join((malformed.stderr + malformed.stdout).split())
    assert malformed.returncode != 0 and "'baidu_crop:0.2' is not SOURCE=SHARE" in said


# ---- optimizer and schedule ----

def test_weight_decay_groups_follow_the_official_code():
    model = SINet()
    groups = {g["name"]: g for g in parameter_groups(model, conv=2e-4, depthwise=0.0, other=2e-6)}
    grouped = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    depthwise = {id(m.weight) for m in model.modules()
                 if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels and m.in_channels > 1}
    assert {id(p) for p in groups["depthwise"]["params"]} == depthwise
    assert all(p.ndim == 4 for p in groups["conv"]["params"]) and all(p.ndim <= 2 for p in groups["other"]["params"])
    assert [groups[n]["weight_decay"] for n in ("conv", "depthwise", "other")] == [2e-4, 0.0, 2e-6]


def test_schedule_halves_at_the_official_epochs():
    assert milestones(300, (0.5, 5 / 6)) == [150, 250]
    config = TrainConfig(manifests=[], out="")
    optimizer, scheduler = make_optimizer(SINetEncoder(), config, 300)
    rates = []
    for _ in range(300):
        step_schedule(scheduler)  # before each epoch, as the official code
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[0] == rates[148] == 5e-4  # epochs 1-149
    assert rates[149] == rates[248] == 2.5e-4  # epochs 150-249
    assert rates[249] == rates[299] == 1.25e-4  # epochs 250-300


# ---- a real run, killed and resumed ----

def _tiny_config(manifest: Path, out: Path, workers: int) -> TrainConfig:
    return TrainConfig(manifests=[str(manifest)], out=str(out), stage1_epochs=2, stage2_epochs=2, stage1_batch=4,
                       stage2_batch=4, size=64, workers=workers, threads=1, checkpoint_every=2)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).parent / "sinet"), *args]
    return subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=300)


KILLED_AT_STEP_6 = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_sinet_train import _tiny_config
from sinet.training.trainer import Trainer, train

def kill_after_step_6(state):  # exactly like an external kill -9, after any checkpoint due at that step
    if state.global_step == 6:
        os.kill(os.getpid(), signal.SIGKILL)

train(_tiny_config(Path(sys.argv[1]), Path(sys.argv[2]), workers=2), after_step=kill_after_step_6)
"""

STATE_KEYS = {"config", "stage", "epoch", "step", "global_step", "planned_epochs", "stage_seconds", "run_seconds",
              "epoch_seconds", "sums", "history", "best", "skipped", "pixel_counts", "class_weights", "optimizer",
              "scheduler", "scaler", "rng", "average", "averaged_epochs"}
"""The keys of ``last.pt``'s ``extra`` (a last.pt of an earlier version, without the last two, must resume)."""


def _equal(a, b) -> bool:
    """Deep equality of checkpoint values (tensors compared element-wise)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here


@pytest.mark.slow
def test_killed_and_resumed_run_ends_like_an_unbroken_one(tiny_manifest, tmp_path):
    unbroken = tmp_path / "unbroken"
    args = ["train", "--manifest", str(tiny_manifest), "--stage1-epochs", "2", "--stage2-epochs", "2",
            "--stage1-batch", "4", "--stage2-batch", "4", "--size", "64", "--threads", "1", "--checkpoint-every", "2"]
    run = CliRunner().invoke(sinet_app, [*args, "--out", str(unbroken), "--workers", "0"])
    assert run.exit_code == 0, run.output
    assert "stage 1: best val IoU" in run.output and "stage 2: best val IoU" in run.output
    # the command's defaults are the dataclass's: the config it ran is TrainConfig with the flags given
    expected = replace(_tiny_config(tiny_manifest, unbroken, workers=0), augmentation=AugmentationConfig(size=64))
    assert json.loads((unbroken / "config.json").read_text()) == json.loads(json.dumps(expected.to_dict()))

    # 12 readable photos, batch 4: 3 steps per epoch. Step 6 is the last step of stage 1's second epoch,
    # after the mid-epoch checkpoint at its step 2, so the resumed run has to redo that step.
    resumed = tmp_path / "resumed"
    killed = subprocess.run([sys.executable, "-c", KILLED_AT_STEP_6.format(tests=str(PROJECT / "tests")),
                             str(tiny_manifest), str(resumed)], cwd=PROJECT, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr
    state = load_checkpoint(resumed / "last.pt")["extra"]
    assert set(state) == STATE_KEYS
    assert _equal(TrainState.from_dict(state).to_dict(), state)
    assert (state["stage"], state["epoch"], state["step"], state["global_step"]) == (1, 1, 2, 5)
    assert not (resumed / "best.pt").exists()
    finished = _cli("train", "--out", str(resumed), "--resume", "--workers", "1")
    assert finished.returncode == 0, finished.stderr

    a, b = load_checkpoint(unbroken / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["arch"] == b["arch"] == "SINet"
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    moments = [(s["exp_avg"], s["exp_avg_sq"]) for s in a["extra"]["optimizer"]["state"].values()]
    moments_b = [(s["exp_avg"], s["exp_avg_sq"]) for s in b["extra"]["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for pair, pair_b in zip(moments, moments_b) for x, y in zip(pair, pair_b))
    assert a["extra"]["global_step"] == b["extra"]["global_step"] == 12

    history_a, history_b = pd.read_csv(unbroken / "metrics.csv"), pd.read_csv(resumed / "metrics.csv")
    assert list(history_a["stage"]) == [1, 1, 2, 2]
    columns = ["lr", "train_loss", "train_band_loss", "val_loss", "val_band_loss", "val_iou", "val_miou",
               "val_boundary_f1"]
    assert history_a[columns].equals(history_b[columns])
    skipped = pd.read_csv(resumed / "skipped.csv")
    assert list(skipped["id"]) == ["eg1800/broken"] and "broken.jpg" in skipped["reason"][0]
    for name in ("curves.png", "config.json", "stage1_best.pt"):
        assert (resumed / name).stat().st_size > 0
    model, preprocessing, meta = load_model(resumed / "best.pt")
    assert isinstance(model, SINet) and preprocessing.size == (64, 64) and meta["extra"]["stage"] == 2


def test_train_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    state = TrainState(config=TrainConfig(manifests=["m.csv"], out="run").to_dict(), stage=2, planned_epochs=7,
                       skipped=[{"id": "a", "split": "val", "reason": "unreadable"}], pixel_counts=[300, 100],
                       class_weights=[1.2, 3.4], epoch=3, step=5, global_step=41, stage_seconds=12.5,
                       run_seconds=80.25, epoch_seconds=[4.0, 3.5, 5.0],
                       sums=EpochSums(loss=1.5, band_loss=0.25, images=20, seconds=2.0),
                       history=[{"stage": 2, "epoch": 1, "val_iou": 70.0, "selected": True}],
                       best={"2": {"epoch": 1, "iou": 70.0}}, optimizer={"state": {}, "param_groups": []},
                       scheduler={"milestones": {4: 1, 6: 1}}, scaler={})
    stored = state.to_dict()
    assert set(stored) == STATE_KEYS and stored["sums"] == {"loss": 1.5, "band_loss": 0.25, "images": 20,
                                                            "seconds": 2.0}
    torch.save(stored, tmp_path / "state.pt")
    assert TrainState.from_dict(torch.load(tmp_path / "state.pt", weights_only=True)) == state


def test_init_starts_stage_2_from_a_full_checkpoint(tiny_manifest, tmp_path):
    torch.manual_seed(5)
    start = SINet()
    save_checkpoint(tmp_path / "start.pt", start, IMAGENET.__class__.from_dict({**IMAGENET.to_dict(),
                                                                               "size": [64, 64]}))
    config = TrainConfig(manifests=[str(tiny_manifest)], out=str(tmp_path / "run"), stages=(2,),
                         init=str(tmp_path / "start.pt"), stage2_epochs=1, stage2_batch=4, size=64, workers=0,
                         threads=1, lr=0.0)  # lr 0: Adam leaves the weights where --init put them
    train(config)
    trained = load_checkpoint(tmp_path / "run" / "last.pt")["state_dict"]
    assert all(torch.equal(trained[name], parameter) for name, parameter in start.named_parameters())

    save_checkpoint(tmp_path / "encoder.pt", SINetEncoder(), IMAGENET)
    wrong = TrainConfig(**{**config.__dict__, "out": str(tmp_path / "wrong"), "init": str(tmp_path / "encoder.pt")})
    with pytest.raises(UserError, match="a SINet checkpoint is needed, found SINetEncoder"):
        train(wrong)
    refused = _cli("train", "--manifest", str(tiny_manifest), "--out", str(tmp_path / "cli"), "--init",
                   str(tmp_path / "start.pt"))
    assert refused.returncode != 0 and "--stage 2" in refused.stderr + refused.stdout


def test_averaging_the_last_epochs_writes_a_validated_mean(tiny_manifest, tmp_path):
    config = TrainConfig(manifests=[str(tiny_manifest)], out=str(tmp_path / "run"), stages=(2,),
                         init=str(SINET_EG1800), stage2_epochs=3, stage2_batch=4, size=64, workers=0, threads=1,
                         average_epochs=2, lr=1e-3)
    snapshots = []
    trainer = Trainer(config, after_step=lambda state: state.step == 3 and snapshots.append(
        {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}))  # 12 photos, batch 4: epoch ends
    best = trainer.run()
    assert best["averaged"]["epochs"] == 2 and 0 < best["averaged"]["iou"] <= 100
    averaged = load_checkpoint(tmp_path / "run" / "averaged.pt")
    assert averaged["extra"]["averaged_epochs"] == 2 and averaged["extra"]["val"]["iou"] == best["averaged"]["iou"]
    weights = averaged["state_dict"]
    for name in ("encoder.level1.conv.weight", "encoder.level1.bn.weight"):  # the mean of epochs 2 and 3 alone
        assert torch.allclose(weights[name], (snapshots[1][name] + snapshots[2][name]) / 2, atol=1e-6)
        assert not torch.allclose(weights[name], snapshots[2][name], atol=1e-6)
    # BatchNorm statistics are the averaged weights' own, not the last epoch's
    stats = [k for k in weights if k.endswith("running_mean")]
    assert stats and not all(torch.equal(weights[k], snapshots[2][k]) for k in stats)
    # a rerun of the finished run does not average again
    assert Trainer(replace(config, threads=None), resume=True).run()["averaged"] == best["averaged"]


def test_distillation_loss_is_the_cross_entropy_against_the_teacher():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    labels = torch.randint(0, 2, (2, 8, 8))
    assert torch.allclose(distillation_loss(logits, labels.float(), labels), F.cross_entropy(logits, labels))
    assert distillation_loss(torch.zeros(1, 2, 4, 4), torch.full((1, 4, 4), 0.5), labels[:1, :4, :4]).item() == \
        pytest.approx(math.log(2))
    one_map = labels.float()
    one_map[1] = -1  # the second photo has no teacher map: it counts nowhere
    assert torch.allclose(distillation_loss(logits, one_map, labels), F.cross_entropy(logits[:1], labels[:1]))
    unknown = labels.clone()
    unknown[0] = IGNORE  # unknown pixels stay out as in the official loss
    assert torch.allclose(distillation_loss(logits, labels.float(), unknown), F.cross_entropy(logits[1:], labels[1:]))
    nothing = distillation_loss(logits, torch.full((2, 8, 8), -1.0), labels)
    nothing.backward()  # no teacher pixel at all: 0, and the graph still runs
    assert nothing.item() == 0


@pytest.mark.slow
def test_distillation_trains_on_the_teachers_maps_warped_with_the_masks(eg1800_dir, tmp_path):
    manifest = small_manifest(eg1800_dir, tmp_path / "small.csv")
    labelled = tmp_path / "teacher"
    result = CliRunner().invoke(pipeline_app, ["pseudo-label", str(manifest), "--out", str(labelled), "--soft",
                                               "--no-faces", "--long-side", "128", "--workers", "0"])
    assert result.exit_code == 0, result.output
    maps = teacher_maps([labelled / "manifest.csv"])
    assert len(maps) == 7 and all(path.is_file() for path in maps.values())  # 00008 is missing from EG1800

    samples = [replace(s, soft=maps[s.key]) for s in manifest_samples([manifest], "train") if s.key in maps]
    samples[-1] = replace(samples[-1], soft=None)  # a row without a map
    for stride in (1, 8):
        plain = SegmentationDataset(samples, train_transform(AugmentationConfig(size=64)), IMAGENET_64, stride)
        soft = SegmentationDataset(samples, train_transform(AugmentationConfig(size=64)), IMAGENET_64, stride,
                                   soft_targets=True)
        for index in range(len(samples)):
            image, label = plain[(index, 7 + index)]
            image_soft, label_soft, teacher = soft[(index, 7 + index)]
            assert torch.equal(image, image_soft) and torch.equal(label, label_soft)  # same draw with the map
            if index == len(samples) - 1:
                assert (teacher == -1).all()
                continue
            known = label != IGNORE
            agreement = ((teacher >= 0.5) == (label == 1))[known].float().mean()
            assert 0 <= teacher.min() and teacher.max() <= 1 and agreement > 0.9, (stride, index, agreement)

    broken = pd.read_csv(labelled / "manifest.csv")
    broken.loc[broken["id"] == "eg1800/00003", "soft_mask"] = "soft/missing.png"
    broken.to_csv(labelled / "broken.csv", index=False)  # beside manifest.csv: its relative paths still hold
    config = TrainConfig(manifests=[str(manifest)], out=str(tmp_path / "run"), stages=(2,), init=str(SINET_EG1800),
                         stage2_epochs=1, stage2_batch=3, size=64, workers=0, threads=1, distill_weight=1.0,
                         teacher_maps=[str(labelled / "broken.csv")])
    assert "2" in train(config)
    skipped = pd.read_csv(tmp_path / "run" / "skipped.csv").set_index("id")["reason"]
    assert "missing.png" in skipped["eg1800/00003"] and "00008.jpg" in skipped["eg1800/00008"]
    with pytest.raises(UserError, match="--distill-weight needs teacher maps"):
        train(replace(config, out=str(tmp_path / "no-maps"), teacher_maps=None))


def test_throughput_runs_real_photos_through_the_real_pipeline(tiny_manifest):
    assert training_throughput(tiny_manifest, stage=1, batches=1, workers=0, batch_size=2, threads=1) > 0


def test_time_budget_fits_epochs_to_the_pace_until_the_first_milestone():
    config = TrainConfig(manifests=[], out="", time_budget=10, stage1_share=0.5)  # 300 s per stage
    first = milestones(300, config.lr_milestones)[0]
    state = TrainState(config={}, stage=1, planned_epochs=300, epoch=1, stage_seconds=100.0, run_seconds=100.0,
                       epoch_seconds=[100.0])
    assert plan_epochs(config, state, first) == 300  # no plan from the first epoch alone
    state = replace(state, epoch=2, stage_seconds=130.0, epoch_seconds=[100.0, 30.0])
    # the first epoch was slow (start-up): the pace is the later epochs' 30 s
    assert plan_epochs(config, state, first) == 2 + (300 - 130) // 30 == 7
    assert milestones(7, config.lr_milestones, not_before=3) == [4, 6]  # the revised schedule of that plan
    state = replace(state, epoch=4, planned_epochs=7, stage_seconds=190.0, epoch_seconds=[100.0, 30.0, 30.0, 30.0])
    assert plan_epochs(config, state, first_milestone=4) == 7  # the LR has been cut at epoch 4: the plan stays
    # stage 2 gets what stage 1 left of the whole budget: 600 - (450 - 100) s
    state = TrainState(config={}, stage=2, planned_epochs=300, epoch=2, stage_seconds=100.0, run_seconds=450.0,
                       epoch_seconds=[50.0, 50.0])
    assert plan_epochs(config, state, first) == 2 + (250 - 100) // 50
