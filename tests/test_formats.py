"""Annotation formats on real photos: every export loads in the tool's own library with the manifest's exact
pixels (including 128 "unknown"), and what comes back reads to identical masks.

The photos are EG1800's raw Flickr photos, whose masks mark the area outside the annotators' crop box as 128.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.formats.convert import write_format
from pipeline.importers import import_folder
from sinet_plus import manifest as mf
from sinet_plus.imageio import IGNORE, STORED_UNKNOWN, read_mask

PIPELINE = str(Path(sys.executable).with_name("pipeline"))


@pytest.fixture(scope="module")
def raw_manifest(tmp_path_factory, eg1800_dir) -> Path:
    """Three raw EG1800 photos with masks that hold 0, 255 and 128, as a manifest in a scratch folder."""
    out = tmp_path_factory.mktemp("raw") / "raw.csv"
    result = import_folder(eg1800_dir / "raw" / "images", eg1800_dir / "raw" / "masks", out, source="raw")
    frame = result.manifest.frame
    unknown = [read_mask(p, STORED_UNKNOWN) for p in result.manifest.paths("mask")[:10]]
    keep = [i for i, mask in enumerate(unknown) if (mask == IGNORE).any() and (mask == 1).any()][:3]
    assert len(keep) == 3, "the raw EG1800 masks should mark pixels outside the crop box as 128"
    mf.write_manifest(mf.Manifest(frame.iloc[keep].reset_index(drop=True), result.manifest.root), out)
    return out


def stored(path: Path) -> np.ndarray:
    """A mask PNG as 0 / 1 / IGNORE."""
    return read_mask(path, unknown_value=STORED_UNKNOWN)


def masks_of(manifest: Path) -> dict[str, np.ndarray]:
    table = mf.load(manifest, check_files=True)
    return {row_id: stored(path) for row_id, path in zip(table.frame["id"], table.paths("mask"))}


def cli(*argv: str) -> subprocess.CompletedProcess:
    done = subprocess.run([PIPELINE, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_coco_contract_pixels_decode_with_pycocotools_and_read_back_identically(raw_manifest, tmp_path, eg1800_dir):
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO

    out = tmp_path / "coco.json"
    cli("manifest", "convert", str(raw_manifest), "--to", "coco", "--out", str(out))
    expected = masks_of(raw_manifest)
    coco = COCO(str(out))
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    for image in coco.dataset["images"]:
        mask = expected[image["manifest_id"]]
        decoded = {names[a["category_id"]]: coco_mask.decode(a["segmentation"]) for a in coco.imgToAnns[image["id"]]}
        assert (decoded["person"] == (mask == 1)).all() and (decoded["unknown"] == (mask == IGNORE)).all()
        assert [a["iscrowd"] for a in coco.imgToAnns[image["id"]]] == [0, 1]

    back = tmp_path / "back" / "manifest.csv"
    cli("manifest", "import-annotations", str(out), "--format", "coco", "--images",
        str(eg1800_dir / "raw" / "images"), "--out", str(back))
    returned = masks_of(back)
    assert returned.keys() == expected.keys()
    assert all((returned[k] == expected[k]).all() for k in expected)


def test_coco_instances_one_annotation_per_person_region(raw_manifest, tmp_path, eg1800_dir):
    import cv2
    from pycocotools.coco import COCO

    out = tmp_path / "instances.json"
    write_format(mf.load(raw_manifest), "coco-instances", out)
    coco = COCO(str(out))
    expected = masks_of(raw_manifest)
    for image in coco.dataset["images"]:
        mask = expected[image["manifest_id"]]
        people = [a for a in coco.imgToAnns[image["id"]] if a["iscrowd"] == 0]
        regions = cv2.connectedComponents((mask == 1).astype(np.uint8), connectivity=8)[0] - 1
        assert len(people) == regions
        union = np.zeros(mask.shape, bool)
        for annotation in people:
            union |= coco.annToMask(annotation) > 0
        assert (union == (mask == 1)).all()


def test_cvat_zip_loads_in_datumaro_as_cvat_reads_it(raw_manifest, tmp_path, eg1800_dir):
    from pipeline.formats.cvat import import_datumaro

    import_datumaro()
    from datumaro.components.annotation import AnnotationType
    from datumaro.components.dataset import Dataset

    out = tmp_path / "cvat.zip"
    cli("manifest", "convert", str(raw_manifest), "--to", "cvat", "--out", str(out))
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "unpacked")
    assert "labelmap.txt" in names and "ImageSets/Segmentation/default.txt" in names
    dataset = Dataset.import_from(str(tmp_path / "unpacked"), "voc_segmentation")
    labels = [c.name for c in dataset.categories()[AnnotationType.label].items]
    expected = {f"raw/{stem}": mask for stem, mask in
                ((key.split("/")[1], mask) for key, mask in masks_of(raw_manifest).items())}
    assert sorted(f"raw/{item.id}" for item in dataset) == sorted(expected)
    for item in dataset:
        by_label = {labels[a.label]: a.image > 0 for a in item.annotations if a.type == AnnotationType.mask}
        mask = expected[f"raw/{item.id}"]
        assert (by_label["person"] == (mask == 1)).all() and (by_label["unknown"] == (mask == IGNORE)).all()

    back = tmp_path / "back.csv"
    cli("manifest", "import-annotations", str(out), "--format", "cvat", "--images", str(eg1800_dir / "raw" / "images"),
        "--out", str(back))
    returned = {key.replace("cvat/", "raw/"): mask for key, mask in masks_of(back).items()}
    assert all((returned[k] == expected[k]).all() for k in expected)


def test_label_studio_tasks_decode_with_label_studios_converter(raw_manifest, tmp_path):
    from label_studio_converter.brush import decode_rle

    out = tmp_path / "tasks.json"
    cli("manifest", "convert", str(raw_manifest), "--to", "label-studio", "--out", str(out))
    tasks = json.loads(out.read_text())
    config = ElementTree.fromstring(out.with_suffix(".xml").read_text())
    assert [label.get("value") for label in config.iter("Label")] == ["person", "unknown"]
    expected = masks_of(raw_manifest)
    for task in tasks:
        mask = expected[task["data"]["manifest_id"]]
        assert task["data"]["image"].startswith("/data/local-files/?d=images/")  # below the photos' parent
        for result in task["predictions"][0]["result"]:
            assert result["from_name"] == config.find(".//BrushLabels").get("name")
            pixels = decode_rle(result["value"]["rle"]).reshape(*mask.shape, 4)[:, :, 3] > 0
            value = {"person": 1, "unknown": IGNORE}[result["value"]["brushlabels"][0]]
            assert (pixels == (mask == value)).all()


def test_fiftyone_loads_the_segmentation_folder(raw_manifest, tmp_path):
    fiftyone = pytest.importorskip("fiftyone", reason="FiftyOne is not installed (an optional extra: it is ~500 MB "
                                                      "and needs a MongoDB binary; see docs/formats.md)")
    out = tmp_path / "fiftyone"
    write_format(mf.load(raw_manifest), "fiftyone", out)
    dataset = fiftyone.Dataset.from_dir(str(out), fiftyone.types.ImageSegmentationDirectory,
                                        label_field="ground_truth")
    try:
        expected = {Path(p).stem: m for p, m in zip(mf.load(raw_manifest).paths("image"),
                                                    masks_of(raw_manifest).values())}
        assert len(dataset) == len(expected)
        for sample in dataset:
            mask = sample.ground_truth.get_mask()
            want = expected[Path(sample.filepath).stem]
            assert (mask == np.where(want == 1, 255, np.where(want == IGNORE, 128, 0))).all()
    finally:
        dataset.delete()


def test_import_refuses_missing_photos_and_names_leaving_the_folder(raw_manifest, tmp_path, eg1800_dir):
    out = tmp_path / "coco.json"
    write_format(mf.load(raw_manifest), "coco", out)
    wrong = subprocess.run([PIPELINE, "manifest", "import-annotations", str(out), "--format", "coco", "--images",
                            str(tmp_path), "--out", str(tmp_path / "back.csv")], capture_output=True, text=True)
    assert wrong.returncode == 1 and "no such photo" in wrong.stderr and not (tmp_path / "back.csv").exists()
    document = json.loads(out.read_text())
    document["images"][0]["file_name"] = "../../etc/passwd"
    out.write_text(json.dumps(document))
    escaping = subprocess.run([PIPELINE, "manifest", "import-annotations", str(out), "--format", "coco", "--images",
                               str(eg1800_dir / "raw" / "images"), "--out", str(tmp_path / "back.csv")],
                              capture_output=True, text=True)
    assert escaping.returncode == 1 and "leaves the images folder" in escaping.stderr
