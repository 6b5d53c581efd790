"""SINet commands on awkward real input: "unknown" mask pixels, nothing scorable, damaged or foreign checkpoints.

Real EG1800 photos from ../shared, the shipped SINet checkpoint, real ``sinet`` commands.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sinet.checkpoint import FORMAT, load_model, save_checkpoint
from sinet.cli import app
from sinet.data import SegmentationDataset, manifest_samples
from sinet.model import SINet, SINetEncoder
from sinet.preprocess import IMAGENET
from sinet.transforms import eval_transform
from sinet.weights import SINET_EG1800
from sinet_plus import manifest as mf
from sinet_plus.imageio import IGNORE
from sinet_plus.torch_utils import CheckpointError

SHIPPED_SINET = SINET_EG1800
TOP_BACKGROUND = ("00011", "00073", "00076")
"""EG1800 val photos whose top 150 rows are background in the human mask."""
BAND = 150


def manifest_with_masks(eg1800_dir: Path, folder: Path, encoding: str) -> Path:
    """A val manifest of :data:`TOP_BACKGROUND` whose masks mark their top ``BAND`` rows unknown: with the gray
    value 128 (``gray``), or with palette index 255 (``palette``, read as unknown without any gray value)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for stem in TOP_BACKGROUND:
        mask = np.asarray(Image.open(eg1800_dir / "masks" / f"{stem}.png")).copy()
        assert not mask[:BAND].any()
        if encoding == "gray":
            mask[:BAND] = 128
            Image.fromarray(mask).save(folder / f"{stem}.png")
        else:
            index = (mask > 127).astype(np.uint8)
            index[:BAND] = 255
            palette = Image.fromarray(index, mode="P")
            palette.putpalette([0, 0, 0, 255, 255, 255] + [128] * 762)
            palette.save(folder / f"{stem}.png")
        rows.append({"id": f"eg1800/{stem}", "image": os.path.relpath(eg1800_dir / "images" / f"{stem}.jpg", folder),
                     "mask": f"{stem}.png", "source": "eg1800", "split": "val", "status": "accepted"})
    mf.write_manifest(mf.new_rows(rows), folder / "manifest.csv")
    return folder / "manifest.csv"


def evaluate(manifest: Path, out: Path) -> dict:
    result = CliRunner().invoke(app, ["eval", "--weights", str(SHIPPED_SINET), "--manifest", str(manifest),
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


@pytest.mark.slow
def test_unknown_pixels_count_nowhere_in_the_metrics(eg1800_dir, tmp_path):
    gray = evaluate(manifest_with_masks(eg1800_dir, tmp_path / "gray", "gray"), tmp_path / "gray.json")
    palette = evaluate(manifest_with_masks(eg1800_dir, tmp_path / "palette", "palette"), tmp_path / "palette.json")
    assert gray["per_image"] == palette["per_image"]  # 128 read as person scores tens of points lower
    assert {key: gray[key] for key in ("iou", "miou", "boundary_f1")} == {
        key: palette[key] for key in ("iou", "miou", "boundary_f1")}


def test_unknown_pixels_are_ignored_labels_for_training(eg1800_dir, tmp_path):
    items = manifest_samples([manifest_with_masks(eg1800_dir, tmp_path, "gray")], "val")
    dataset = SegmentationDataset(items, eval_transform(224), IMAGENET)
    _, label = dataset[0]
    top = BAND * 224 // 800
    assert (label[:top - 1] == IGNORE).all() and set(label[top + 1:].unique().tolist()) <= {0, 1}


def test_eval_with_nothing_scorable_fails_instead_of_writing_nan(eg1800_dir, tmp_path):
    (tmp_path / "broken.jpg").write_bytes((eg1800_dir / "images" / "00002.jpg").read_bytes()[:2000])
    (tmp_path / "broken.png").write_bytes((eg1800_dir / "masks" / "00002.png").read_bytes())
    Image.fromarray(np.full((800, 600), 128, np.uint8)).save(tmp_path / "unknown.png")
    os.symlink(eg1800_dir / "images" / "00005.jpg", tmp_path / "unknown.jpg")
    rows = [{"id": f"t/{stem}", "image": f"{stem}.jpg", "mask": f"{stem}.png", "source": "t", "split": "val",
             "status": "accepted"} for stem in ("broken", "unknown")]
    mf.write_manifest(mf.new_rows(rows), tmp_path / "manifest.csv")
    result = CliRunner().invoke(app, ["eval", "--weights", str(SHIPPED_SINET), "--manifest",
                                      str(tmp_path / "manifest.csv"), "--json", str(tmp_path / "report.json")])
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "could be scored" in output and "broken.jpg" in output and "every pixel is unknown" in output
    assert not (tmp_path / "report.json").exists()


def test_a_checkpoint_without_preprocessing_is_named(tmp_path):
    path = tmp_path / "no-preprocessing.pt"
    save_checkpoint(path, SINet(), IMAGENET)
    payload = torch.load(path, weights_only=True)
    del payload["preprocessing"]
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"no-preprocessing.pt: .*without a usable preprocessing"):
        load_model(path)


def test_a_wrong_architecture_is_summarised(tmp_path):
    path = tmp_path / "encoder-as-sinet.pt"
    save_checkpoint(path, SINetEncoder(), IMAGENET)
    payload = torch.load(path, weights_only=True)
    payload["arch"] = "SINet"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as refused:
        load_model(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: weights do not fit SINet: ") and len(message) < 800
    assert "393 missing keys (e.g. encoder.level1." in message and "375 unexpected keys (e.g. level1." in message


class _Exploit:
    """Unpickling this would create a file: what a malicious checkpoint would do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_an_unsafe_pickle_is_refused_without_suggesting_to_trust_it(tmp_path):
    marker = tmp_path / "executed"
    torch.save({"format": FORMAT, "arch": "SINet", "extra": _Exploit(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as refused:
        load_model(tmp_path / "evil.pt")
    message = str(refused.value)
    assert "not a checkpoint this project wrote" in message and "will not be unpickled" in message
    assert "likely succeed" not in message and "weights_only=False" not in message and not marker.exists()
