"""Shared fixtures: where the real data lives (``../shared`` beside the project) and skips when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SINET_SHARED", PROJECT.parent / "shared"))
DATA = SHARED / "data"


def shared_path(*parts: str) -> Path:
    """A path inside ``../shared``; the calling test is skipped with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the real data in ../shared (set SINET_SHARED to move it)")
    return path


@pytest.fixture(scope="session")
def eg1800_dir() -> Path:
    """The EG1800 folder: images/, masks/, split.csv, raw/."""
    return shared_path("data", "eg1800")


@pytest.fixture(scope="session")
def fullbody_dir() -> Path:
    """Full-body photos with person masks (our Baidu stand-in): images/, masks/."""
    return shared_path("data", "fullbody")


@pytest.fixture(scope="session")
def unlabeled_dir() -> Path:
    """Full-body photos without masks."""
    return shared_path("data", "fullbody-unlabeled", "images")


@pytest.fixture(scope="session")
def official_weights() -> Path:
    """The authors' released SINet+ checkpoint."""
    return shared_path("reference", "SINet-official.pth")
