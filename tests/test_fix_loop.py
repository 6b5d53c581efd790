"""The fix loop end to end on real EG1800 photos, for CVAT and Label Studio.

Damaged masks stand in for the teacher's misses: an annotator rejects them in the review store, they go out in
the tool's format with the damaged mask as the starting point, the "tool" hands back the true mask with an
unknown (128) border painted on, and one command takes the fixes back. The corrected files are made the way
the tools make them: CVAT's through datumaro's exporter (CVAT's own format code), Label Studio's as its JSON
export with brush annotations encoded by its converter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from review_helpers import eg1800_sample

from pipeline.formats.convert import write_format
from pipeline.review.export import export_manifest, review_manifest
from pipeline.review.gold import damage
from pipeline.review.queue import queue_manifests
from pipeline.review.store import Store
from sinet_plus import manifest as mf
from sinet_plus.imageio import IGNORE, STORED_UNKNOWN, read_mask, write_mask

PIPELINE = str(Path(sys.executable).with_name("pipeline"))


def fixed_version(truth: np.ndarray) -> np.ndarray:
    """The person's fix: the true mask, with a 12-pixel unknown border the annotator was unsure about."""
    fixed = truth.copy()
    fixed[:12, :] = IGNORE
    return fixed


@pytest.fixture()
def reviewed(tmp_path, eg1800_dir):
    """Six EG1800 photos queued; three carry damaged masks and are rejected, three are accepted."""
    manifest = eg1800_sample(eg1800_dir, tmp_path / "data", 6)
    table = mf.load(manifest)
    truths = {}
    for index, (key, path) in enumerate(zip(table.frame["id"], table.paths("mask"))):
        truth = read_mask(path, STORED_UNKNOWN)
        if index % 2 == 0:
            truths[key] = truth
            write_mask(path, damage(truth, "chunk", seed=index))
    db = tmp_path / "data" / "review.sqlite"
    with Store(db, create=True) as store:
        queue_manifests(store, [manifest], order="file")
        for key in table.frame["id"]:
            store.decide("ann", key, "reject" if key in truths else "accept",
                         reason="missing" if key in truths else None)
    return db, truths


def decisions(db: Path):
    with Store(db) as store:
        return store.decisions_frame()[["key", "annotator", "decision", "reason", "decided_at"]]


def cvat_fixes(exported: Path, truths: dict[str, np.ndarray], out: Path) -> None:
    """What CVAT exports after the fixes: the same items, annotations only (no photos)."""
    from pipeline.formats.cvat import LABEL_MAP, import_datumaro

    import_datumaro()
    from datumaro.components.annotation import Mask
    from datumaro.components.dataset import Dataset
    from datumaro.components.dataset_base import DatasetItem

    with tempfile.TemporaryDirectory() as unpacked, tempfile.TemporaryDirectory() as written:
        zipfile.ZipFile(exported).extractall(unpacked)
        names = Path(unpacked, "ImageSets", "Segmentation", "default.txt").read_text().split()
        assert sorted(names) == sorted(key.split("/")[1] for key in truths)  # named like the photos
        labels = list(LABEL_MAP)
        items = []
        for name in names:
            fixed = fixed_version(truths[f"eg1800/{name}"])
            items.append(DatasetItem(id=name, annotations=[
                Mask(image=(fixed == 1).astype(np.uint8), label=labels.index("person")),
                Mask(image=(fixed == IGNORE).astype(np.uint8), label=labels.index("unknown"))]))
        Dataset.from_iterable(items, categories=labels).export(written, "voc_segmentation", apply_colormap=True,
                                                              label_map=LABEL_MAP)
        with zipfile.ZipFile(out, "w") as archive:
            for path in Path(written).rglob("*"):
                if path.is_file():
                    archive.write(path, path.relative_to(written).as_posix())


def label_studio_fixes(exported: Path, truths: dict[str, np.ndarray], out: Path) -> None:
    """What Label Studio exports after the fixes: each task with a cancelled try and bob's submitted fix."""
    from label_studio_converter.brush import mask2rle

    tasks = json.loads(exported.read_text())
    assert sorted(task["data"]["manifest_id"] for task in tasks) == sorted(truths)
    for number, task in enumerate(tasks):
        fixed = fixed_version(truths[task["data"]["manifest_id"]])
        height, width = fixed.shape
        result = [{**task["predictions"][0]["result"][0], "origin": "manual",
                   "value": {"format": "rle", "rle": mask2rle((fixed == value).astype(np.uint8) * 255),
                             "brushlabels": [label]}}
                  for label, value in (("person", 1), ("unknown", IGNORE))]
        assert result[0]["original_width"] == width and result[0]["original_height"] == height
        task["id"] = number + 1
        task["annotations"] = [
            {"id": 10 * number + 1, "completed_by": {"id": 3, "email": "carol@example.org"}, "was_cancelled": True,
             "updated_at": "2026-01-01T10:00:00Z", "result": task["predictions"][0]["result"]},
            {"id": 10 * number + 2, "completed_by": {"id": 7, "email": "bob@example.org"}, "was_cancelled": False,
             "updated_at": "2026-01-01T11:00:00Z", "result": result}]
    out.write_text(json.dumps(tasks))


@pytest.mark.parametrize("tool", ["cvat", "label-studio"])
def test_rejected_masks_go_out_and_come_back_fixed_as_accepted_items(reviewed, tmp_path, tool):
    db, truths = reviewed
    before = decisions(db)
    exported = tmp_path / ("rejected.zip" if tool == "cvat" else "rejected.json")
    done = subprocess.run([PIPELINE, "export", "--db", str(db), "--status", "rejected", "--format", tool, "--out",
                           str(exported)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and f"wrote {len(truths)} masks as {tool}" in done.stdout, done.stdout + done.stderr
    corrected = tmp_path / ("corrected.zip" if tool == "cvat" else "corrected.json")
    (cvat_fixes if tool == "cvat" else label_studio_fixes)(exported, truths, corrected)

    argv = [PIPELINE, "import-fixes", str(corrected), "--format", tool, "--db", str(db)]
    if tool == "cvat":
        missing = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert missing.returncode == 1 and "--annotator" in missing.stderr  # CVAT's file does not say who
        argv += ["--annotator", "alice"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and f"added {len(truths)} fixed masks" in done.stdout, done.stdout + done.stderr
    fixer = "alice" if tool == "cvat" else "bob@example.org"

    after = decisions(db)
    assert after.iloc[:len(before)].equals(before)  # no earlier decision touched
    added = after.iloc[len(before):]
    assert sorted(added["key"]) == sorted(f"fixed/{key}" for key in truths)
    assert set(added["annotator"]) == {fixer} and set(added["decision"]) == {"accept"}

    with Store(db) as store:
        curated, _ = export_manifest(store, tmp_path / "curated.csv")
    frame = curated.frame.set_index("id")
    for key, truth in truths.items():
        row = frame.loc[f"fixed/{key}"]
        assert (row["status"], row["reviewer"], row["reason"]) == ("accepted", fixer, f"fixed in {tool}")
        assert (row["fixed_from"], row["fixed_with"], row["fixed_by"]) == (key, tool, fixer)
        assert (read_mask(curated.path(row["mask"]), STORED_UNKNOWN) == fixed_version(truth)).all()
        assert key not in frame.index  # the rejected item stays rejected

    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"({len(truths)} were added before" in again.stdout
    assert decisions(db).equals(after)


def test_fixes_of_items_that_were_not_rejected_are_refused(reviewed, tmp_path):
    db, truths = reviewed
    with Store(db) as store:
        accepted = review_manifest(store, ("accepted",))
    out = tmp_path / "accepted.json"
    write_format(accepted, "coco", out)
    done = subprocess.run([PIPELINE, "import-fixes", str(out), "--format", "coco", "--db", str(db),
                           "--annotator", "alice"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "not rejected" in done.stderr
    with Store(db) as store:
        assert not any(key.startswith("fixed/") for key in store.keys())
