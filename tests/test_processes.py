"""Processes the project starts die with their parent, and the files it writes are as readable as the umask says.

Real commands as real subprocesses, real signals, real photos from ../shared.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from review_helpers import eg1800_sample, free_port, stop_app, wait_healthy

from sinet.checkpoint import save_checkpoint
from sinet.model import SINetEncoder
from sinet.preprocess import PRESETS
from sinet.weights import SINET_EG1800
from sinet_plus import manifest as mf
from sinet_plus.imageio import write_jpeg, write_mask

PIPELINE = str(Path(sys.executable).with_name("pipeline"))

pytestmark = pytest.mark.slow


def children(pid: int) -> set[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    """True for a running process; a zombie waiting for its reaper is dead."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_when_working(argv: list[str], journal: Path, workers: int) -> set[int]:
    """Start ``argv``; once it journaled an item and has ``workers`` children, SIGKILL it; return the children."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    try:
        while time.time() < deadline and process.poll() is None:
            started = children(process.pid)
            if len(started) >= workers and journal.is_file() and journal.read_bytes().count(b"\n"):
                break
            time.sleep(0.1)
        assert process.poll() is None, "the command ended before it could be killed"
        started = children(process.pid)
    finally:
        process.kill()
        process.wait()
    return started


def outlive(pids: set[int], seconds: float) -> list[int]:
    """The processes of ``pids`` still alive after up to ``seconds``; they are killed (they are ours)."""
    deadline = time.time() + seconds
    while time.time() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    survivors = [pid for pid in pids if alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    return survivors


def test_pseudo_label_loader_workers_die_with_a_killed_command(eg1800_dir, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in sorted((eg1800_dir / "images").glob("*.jpg"))[:40]:
        os.symlink(photo, photos / photo.name)
    out = tmp_path / "out"
    workers = kill_when_working([PIPELINE, "pseudo-label", str(photos), "--teacher",
                                 str(SINET_EG1800), "--out", str(out),
                                 "--workers", "2", "--batch-size", "2", "--long-side", "256", "--device", "cpu"],
                                out / ".journal.jsonl", 2)
    assert len(workers) >= 2
    assert outlive(workers, 10) == []


def test_crop_pool_workers_die_with_a_killed_command(fullbody_dir, tmp_path):
    for kind, suffix in (("images", ".jpg"), ("masks", ".png")):
        (tmp_path / kind).mkdir()
        for photo in sorted((fullbody_dir / kind).glob(f"*{suffix}"))[:40]:
            os.symlink(photo, tmp_path / kind / photo.name)
    out = tmp_path / "out"
    workers = kill_when_working([PIPELINE, "crop-baidu", str(tmp_path / "images"), str(tmp_path / "masks"),
                                 "--out", str(out), "--workers", "2"], out / ".journal.jsonl", 2)
    assert len(workers) >= 2
    assert outlive(workers, 10) == []


@pytest.fixture(scope="module")
def review_db(eg1800_dir, tmp_path_factory) -> Path:
    """A review database of three real photos."""
    folder = tmp_path_factory.mktemp("review")
    manifest = eg1800_sample(eg1800_dir, folder / "data", 3)
    db = folder / "review.sqlite"
    subprocess.run([PIPELINE, "queue", str(manifest), "--db", str(db)], check=True, capture_output=True)
    return db


def start_review(db: Path, port: int, log: Path, *options: str, password: bytes | None = None):
    """``pipeline review`` in its own session (typing ``password`` at its prompt), once the app answers."""
    env = {key: value for key, value in os.environ.items() if key != "REVIEW_PASSWORD"}
    with open(log, "ab") as sink:
        process = subprocess.Popen([PIPELINE, "review", "--db", str(db), "--port", str(port), *options],
                                   stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    if password is not None:
        process.stdin.write(password + b"\n" + password + b"\n")
    process.stdin.close()
    try:
        wait_healthy(port)
    except RuntimeError:
        stop_app(process, kill=True)
        raise
    return process


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_review_server_stops_with_its_command(review_db, tmp_path, sig):
    port = free_port()
    command = start_review(review_db, port, tmp_path / "review.log")
    servers = children(command.pid)
    command.send_signal(sig)
    command.wait(timeout=60)
    assert servers and outlive(servers, 30) == []
    again = start_review(review_db, port, tmp_path / "review.log")  # the port is free again
    stop_app(again)


def test_the_review_password_is_typed_at_a_prompt_never_shown_in_ps(review_db, tmp_path):
    port = free_port()
    command = start_review(review_db, port, tmp_path / "review.log", "--password", password=b"s3cret words")
    try:
        (server,) = children(command.pid)
        for pid in (command.pid, server):
            assert b"s3cret" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"REVIEW_PASSWORD=s3cret words" in Path(f"/proc/{server}/environ").read_bytes().split(b"\0")
    finally:
        stop_app(command)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_are_as_readable_as_the_umask_allows(eg1800_dir, tmp_path, umask):
    previous = os.umask(umask)
    try:
        mask = (np.arange(64 * 48).reshape(64, 48) % 2).astype(np.uint8)
        write_mask(tmp_path / "masks" / "m.png", mask)
        write_jpeg(tmp_path / "images" / "p.jpg", np.zeros((64, 48, 3), np.uint8))
        rows = mf.new_rows([{"id": "t/p", "image": "images/p.jpg", "mask": "masks/m.png", "source": "t",
                             "split": "train"}])
        mf.write_manifest(rows, tmp_path / "manifest.csv")
        mf.write_manifest(rows, tmp_path / "manifest.parquet")
        save_checkpoint(tmp_path / "model.pt", SINetEncoder(), PRESETS["imagenet"])
    finally:
        os.umask(previous)
    written = ["masks/m.png", "images/p.jpg", "manifest.csv", "manifest.parquet", "model.pt"]
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in written}
    assert modes == {name: 0o666 & ~umask for name in written}
    assert torch.load(tmp_path / "model.pt", weights_only=True)["arch"] == "SINetEncoder"
