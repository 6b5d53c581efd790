"""Every manifest operation, on the real EG1800 folder and on broken manifests."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.importers import import_eg1800, import_folder
from sinet_plus import manifest as mf

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def eg1800_manifest(eg1800_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("manifests") / "eg1800.csv"
    result = import_eg1800(eg1800_dir, out)
    assert result.problems == []
    mf.write_manifest(result.manifest, out)
    return out


@pytest.fixture
def small_dataset(eg1800_dir, tmp_path) -> Path:
    """A copy of five real pairs laid out as images/ + masks/, to break at will."""
    for stem in ("00001", "00002", "00003", "00004", "00005"):
        for sub, suffix in (("images", ".jpg"), ("masks", ".png")):
            (tmp_path / sub).mkdir(exist_ok=True)
            shutil.copy(eg1800_dir / sub / f"{stem}{suffix}", tmp_path / sub / f"{stem}{suffix}")
    return tmp_path


def test_import_eg1800_gives_1473_valid_rows(eg1800_manifest):
    manifest = mf.read_manifest(eg1800_manifest)
    assert len(manifest) == 1473
    assert manifest.frame["split"].value_counts().to_dict() == {"train": 1341, "val": 132}
    assert mf.validate(manifest, check_files=True) == []
    first = manifest.frame.iloc[0]
    assert first["id"] == "eg1800/00001" and first["status"] == "accepted"
    assert manifest.path(first["image"]).name == "00001.jpg"


def test_csv_and_parquet_round_trip_and_move_with_files(eg1800_manifest, tmp_path):
    manifest = mf.read_manifest(eg1800_manifest)
    parquet = tmp_path / "deeper" / "copy.parquet"
    mf.write_manifest(manifest, parquet)
    back = mf.read_manifest(parquet)
    assert back.frame["id"].tolist() == manifest.frame["id"].tolist()
    assert back.paths("image")[:3] == manifest.paths("image")[:3]
    assert back.frame["image"].iloc[0] != manifest.frame["image"].iloc[0]  # rebased to the new folder
    assert mf.validate(back, check_files=True) == []


def test_validation_reports_every_problem(eg1800_manifest, tmp_path):
    frame = mf.read_manifest(eg1800_manifest).frame.head(4).copy()
    root = eg1800_manifest.parent
    frame.loc[1, "id"] = frame.loc[0, "id"]
    frame.loc[2, "status"] = "maybe"
    frame.loc[3, "image"] = "/etc/passwd"
    frame.loc[0, "mask"] = "nowhere/missing.png"
    problems = mf.validate(mf.Manifest(frame, root), check_files=True)
    text = "\n".join(problems)
    assert "duplicate ids: eg1800/00001" in text
    assert "status must be one of" in text and "maybe" in text
    assert "absolute paths" in text and "/etc/passwd" in text
    assert "1 files not found" in text and "missing.png" in text
    no_columns = mf.Manifest(frame.drop(columns=["split", "status"]), root)
    assert mf.validate(no_columns) [0] == "missing columns: split, status"


def test_paths_escaping_a_root_are_refused(eg1800_manifest, eg1800_dir):
    manifest = mf.read_manifest(eg1800_manifest)
    assert mf.validate(manifest, root=eg1800_dir) == []
    problems = mf.validate(manifest, root=eg1800_manifest.parent)
    assert len(problems) == 2 and all("escape the root" in p for p in problems)


def test_concat_rebases_and_refuses_id_clashes(eg1800_manifest, small_dataset, tmp_path):
    eg = mf.select(mf.read_manifest(eg1800_manifest), split="val")
    folder_out = small_dataset / "folder.csv"
    folder = import_folder(small_dataset / "images", small_dataset / "masks", folder_out).manifest
    combined = mf.concat([eg, folder], tmp_path / "all")
    assert len(combined) == 132 + 5
    assert mf.validate(combined, check_files=True) == []
    with pytest.raises(mf.ManifestError, match="id clash .*eg1800/00002"):
        mf.concat([eg, eg], tmp_path)
    prefixed = mf.concat([eg, eg], tmp_path, prefix_ids=True, names=["a", "b"])
    assert prefixed.frame["id"].iloc[0] == "a:eg1800/00002" and prefixed.frame["id"].is_unique


def test_folder_import_skips_broken_pairs_with_reasons(small_dataset):
    (small_dataset / "masks" / "00002.png").unlink()
    (small_dataset / "images" / "00003.jpg").write_bytes(b"garbage")
    from PIL import Image
    Image.open(small_dataset / "masks" / "00004.png").resize((10, 10)).save(small_dataset / "masks" / "00004.png")
    result = import_folder(small_dataset / "images", small_dataset / "masks", small_dataset / "m.csv")
    rows = result.manifest.frame.set_index("origin_stem")
    assert rows.loc["00002", "mask"] == "" and rows.loc["00002", "split"] == "unlabeled"
    assert rows.loc["00001", "split"] == "train" and rows.loc["00001", "status"] == "accepted"
    assert len(result.problems) == 2
    assert any("00003.jpg: not a readable image" in p for p in result.problems)
    assert any("00004.png: mask is 10x10 but the photo is 600x800" in p for p in result.problems)


def test_stats_counts(eg1800_manifest):
    counts = mf.stats(mf.read_manifest(eg1800_manifest))
    assert counts["split"] == {"train": 1341, "val": 132}
    assert counts["mask"] == {"present": 1473, "absent": 0}


def test_unreadable_manifest_files(tmp_path):
    with pytest.raises(mf.ManifestError, match="not found"):
        mf.read_manifest(tmp_path / "none.csv")
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(mf.ManifestError, match="unknown manifest format"):
        mf.read_manifest(tmp_path / "m.json")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(mf.ManifestError, match="cannot read manifest"):
        mf.read_manifest(tmp_path / "bad.parquet")


def test_schema_is_documented_in_manifests_readme():
    readme = (PROJECT / "manifests" / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", readme, flags=re.M))
    assert documented == set(mf.COLUMNS)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, cwd=PROJECT)


def test_cli_import_validate_stats_concat(eg1800_dir, tmp_path):
    out = tmp_path / "eg.csv"
    assert run_cli("manifest", "import-eg1800", str(eg1800_dir), "--out", str(out)).returncode == 0
    valid = run_cli("manifest", "validate", str(out))
    assert valid.returncode == 0 and "valid" in valid.stdout
    stats = run_cli("manifest", "stats", str(out), "--json")
    assert '"val": 132' in stats.stdout
    clash = run_cli("manifest", "concat", str(out), str(out), "--out", str(tmp_path / "both.csv"))
    assert clash.returncode == 1 and "id clash" in clash.stderr
    frame = pd.read_csv(out, dtype=str)
    frame.loc[0, "id"] = frame.loc[1, "id"]
    frame.to_csv(tmp_path / "broken.csv", index=False)
    invalid = run_cli("manifest", "validate", str(tmp_path / "broken.csv"))
    assert invalid.returncode == 1 and "duplicate ids: eg1800/00002" in invalid.stderr
