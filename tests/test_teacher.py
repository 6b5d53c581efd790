"""train-teacher on real EG1800 photos: checkpoint contents, resume, refused checkpoints, offline ImageNet weights."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from teacher_helpers import TINY, TRAIN_STEMS, VAL_STEMS, invoke, small_manifest

from pipeline.teacher.checkpoint import FORMAT, load_teacher, read_checkpoint, teacher_hash
from pipeline.teacher.inference import model_shape, resize_for_model
from pipeline.teacher.model import EncoderWeightsUnavailable, TeacherConfig, _hub_unreachable, build_model
from pipeline.teacher.pseudo_label import LabelOptions
from pipeline.teacher.train import TrainOptions, cosine_lr, split_rows
from sinet_plus import manifest as mf
from sinet_plus.errors import UserError
from sinet_plus.torch_utils import CheckpointError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, eg1800_dir):
    """A tiny teacher trained for 2 steps, then resumed for 1 more; one training photo is corrupt."""
    folder = tmp_path_factory.mktemp("teacher")
    manifest = small_manifest(eg1800_dir, folder / "small.csv")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    rows = mf.read_manifest(manifest).frame.to_dict("records")
    rows.append({**rows[0], "id": "eg1800/broken", "image": "broken.jpg"})
    mf.write_manifest(mf.new_rows(rows), manifest)
    out = folder / "teacher.pt"
    first = invoke("train-teacher", "--manifest", manifest, "--out", out, *TINY, "--epochs", "3", "--max-steps", "2")
    assert first.exit_code == 0, first.output
    after_first = read_checkpoint(out)
    resumed = invoke("train-teacher", "--manifest", manifest, "--out", out, *TINY, "--epochs", "3", "--resume",
                     "--max-steps", "1")
    assert resumed.exit_code == 0, resumed.output
    return manifest, out, after_first


def test_checkpoint_carries_its_config_and_loads_weights_only(trained, eg1800_dir):
    manifest, out, _ = trained
    payload = torch.load(out, map_location="cpu", weights_only=True)
    assert payload["format"] == FORMAT
    config = payload["config"]
    assert (config["encoder"], config["classes"], config["input_size"]) == ("mobilenet_v2", 1, 96)
    assert config["mean"] == pytest.approx([0.485, 0.456, 0.406]) and len(config["std"]) == 3
    assert config["encoder_weights"] == "none"
    assert len(payload["data_hash"]) == 16
    assert payload["val"]["photos"] == len(VAL_STEMS) and 0.0 <= payload["val"]["iou"] <= 1.0
    teacher = load_teacher(out)
    assert teacher.hash == teacher_hash(out) and not teacher.model.training
    train, val = split_rows([manifest])
    assert len(train) == len(TRAIN_STEMS) + 1 and len(val) == len(VAL_STEMS)
    skipped = read_checkpoint(out)["train"]["skipped"]
    assert len(skipped) == 1 and "broken.jpg" in skipped[0], "the corrupt photo is recorded, training went on"


def test_resume_continues_the_step_count_and_optimizer(trained):
    _, out, after_first = trained
    resumed = read_checkpoint(out)
    assert after_first["train"]["step"] == 2 and resumed["train"]["step"] == 3
    assert resumed["data_hash"] == after_first["data_hash"]
    assert resumed["train"]["optimizer"]["state"], "optimizer moments were not carried over"
    changed = [k for k, v in resumed["state_dict"].items()
               if v.is_floating_point() and not torch.equal(v, after_first["state_dict"][k])]
    assert changed, "the resumed step did not update any weight"


def test_init_from_a_local_checkpoint(trained, tmp_path):
    manifest, out, _ = trained
    result = invoke("train-teacher", "--manifest", manifest, "--out", tmp_path / "init.pt", *TINY,
                    "--init", out, "--max-steps", "1")
    assert result.exit_code == 0, result.output
    assert read_checkpoint(tmp_path / "init.pt")["config"]["encoder_weights"] == f"init:{teacher_hash(out)}"
    wrong = invoke("train-teacher", "--manifest", manifest, "--out", tmp_path / "x.pt", "--encoder", "resnet18",
                   "--init", out, "--max-steps", "1", "--workers", "0")
    assert wrong.exit_code == 1 and "mobilenet_v2" in wrong.output


def test_another_architecture_is_refused_with_the_reason(official_weights, trained, tmp_path):
    with pytest.raises(CheckpointError, match="not a DeepLabV3\\+ teacher checkpoint"):
        load_teacher(official_weights)  # the authors' SINet weights: a real checkpoint of another model
    _, out, _ = trained
    payload = read_checkpoint(out)
    payload["config"]["encoder"] = "resnet18"  # config and weights disagree
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_teacher(tmp_path / "mismatch.pt")


def test_a_pickle_that_weights_only_refuses_is_not_executed(tmp_path, unlabeled_dir):
    marker = tmp_path / "executed"
    torch.save({"format": FORMAT, "payload": _Exploit(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_teacher(tmp_path / "evil.pt")
    result = invoke("pseudo-label", unlabeled_dir, "--teacher", tmp_path / "evil.pt", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "weights_only" in result.output
    assert not marker.exists() and not (tmp_path / "out" / "manifest.csv").exists()


class _Exploit:
    """Unpickling this would create a file: what a malicious checkpoint would do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_offline_imagenet_weights_fail_fast_with_a_clear_message(trained):
    if not _hub_unreachable(timeout=2):
        pytest.skip("the Hugging Face hub is reachable here: the weights would download")
    started = time.perf_counter()
    with pytest.raises(EncoderWeightsUnavailable, match="--encoder-weights none"):
        build_model(TeacherConfig(encoder="mobilenet_v2"), imagenet=True)
    assert time.perf_counter() - started < 15, "the 25-second hub retry loop was not avoided"
    manifest, _, _ = trained
    result = invoke("train-teacher", "--manifest", manifest, "--out", "unused.pt", "--encoder", "mobilenet_v2",
                    "--encoder-weights", "imagenet")
    assert result.exit_code == 1 and "not in the Hugging Face cache" in " ".join(result.output.split())


def test_resize_keeps_aspect_and_multiples_of_32(eg1800_dir):
    assert model_shape(800, 600, 512) == (512, 384)
    assert model_shape(3000, 200, 512) == (512, 32)
    photo = np.zeros((877, 550, 3), np.uint8)
    height, width = resize_for_model(photo, 512).shape[:2]
    assert height % 32 == 0 and width % 32 == 0 and abs(width / height - 550 / 877) < 0.05


def test_learning_rate_anneals():
    assert cosine_lr(1e-3, 0) == pytest.approx(1e-3) and cosine_lr(1e-3, 1) == pytest.approx(2e-5)


def test_unknown_option_values_are_refused_with_the_value():
    with pytest.raises(UserError, match="encoder_weights must be one of none, imagenet, not 'imagnet'"):
        TrainOptions(manifests=[], out=Path("t.pt"), encoder_weights="imagnet")
    with pytest.raises(UserError, match="engine must be one of local, ray, not 'spark'"):
        LabelOptions(engine="spark")
