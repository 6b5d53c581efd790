"""The review database under races and damage: one data root however two queues interleave; damaged, foreign or
empty files refused with their name and left exactly as they were; a refused queue leaves no file behind.

Real EG1800 photos copied into scratch folders, real SQLite files, real `pipeline` processes.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from review_helpers import eg1800_sample
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.review.queue import QueueError, plan_queue, queue_manifests
from pipeline.review.store import ReviewStoreError, Store

PIPELINE = str(Path(sys.executable).with_name("pipeline"))


def invoke(*args):
    """Run ``pipeline ARGS`` in this process; (exit code, output on one line, the exception it ended with)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, " ".join(result.output.split()), result.exception


@pytest.fixture(scope="module")
def batches(tmp_path_factory, eg1800_dir) -> tuple[Path, Path]:
    """Two manifests of different real photos, each in its own folder."""
    root = tmp_path_factory.mktemp("batches")
    return (eg1800_sample(eg1800_dir, root / "batch-a", 4), eg1800_sample(eg1800_dir, root / "batch-b", 4, start=4))


@pytest.mark.slow
def test_two_queues_started_at_once_on_a_new_database_never_mix_their_roots(batches, tmp_path):
    # 8 rounds: each race lost one way in about 1 of 6 before the store retried its WAL switch and read its
    # version and tables in one snapshot
    for round_ in range(8):
        db = tmp_path / f"round-{round_}.sqlite"
        processes = [subprocess.Popen([PIPELINE, "queue", str(manifest), "--db", str(db)], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True) for manifest in batches]
        outputs = [process.communicate(timeout=300)[0] for process in processes]
        codes = [process.returncode for process in processes]
        assert sorted(codes) == [0, 1], outputs
        winner = batches[codes.index(0)].parent
        assert "data root" in " ".join(outputs[codes.index(1)].split())
        with Store(db) as store:
            assert store.data_root == winner.resolve()
            files = [store.resolve(path) for path in store.items_frame()["image"]]
        assert len(files) == 4 and all(path.is_file() and path.is_relative_to(winner) for path in files)


def test_the_root_is_compared_in_the_transaction_that_adds_items(batches, tmp_path):
    db = tmp_path / "review.sqlite"
    roots = [manifest.parent.resolve() for manifest in batches]
    plans = [plan_queue(manifest, root) for manifest, root in zip(batches, roots)]  # both planned on a new db
    with Store(db, create=True) as first, Store(db, create=True) as second:
        assert first.add_items(plans[0].items, data_root=roots[0]) == 4
        with pytest.raises(ReviewStoreError, match=f"its data root is {roots[0]}"):
            second.add_items(plans[1].items, data_root=roots[1])
        assert second.data_root == roots[0] and len(second.items_frame()) == 4


@pytest.fixture
def damaged(batches, tmp_path) -> Path:
    """A queued database whose item pages were overwritten (what a bad disk or a torn copy leaves)."""
    db = tmp_path / "damaged.sqlite"
    with Store(db, create=True) as store:
        queue_manifests(store, [batches[0]])
    assert not db.with_name(f"{db.name}-wal").exists()  # every page is in the file itself
    data = bytearray(db.read_bytes())
    page = 4096
    for number in range(1, len(data) // page):  # every page but the first: their headers and first cells
        data[number * page:number * page + 300] = b"\xff" * 300
    db.write_bytes(bytes(data))
    return db


def test_a_damaged_database_is_named_by_every_command(damaged, batches, tmp_path):
    for command in (["queue", batches[1]], ["export", "--out", tmp_path / "out.csv"], ["review-stats"]):
        code, output, error = invoke(*command, "--db", damaged)
        assert code == 1 and isinstance(error, SystemExit), (command, output)
        assert str(damaged) in output and "damaged" in output, command


def test_a_foreign_sqlite_file_is_refused_and_left_untouched(batches, tmp_path):
    foreign = tmp_path / "someone-elses.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('mine')")
    before = foreign.read_bytes()
    for command in (["queue", batches[0]], ["export", "--out", tmp_path / "out.csv"], ["review-stats"]):
        code, output, error = invoke(*command, "--db", foreign)
        assert code == 1 and isinstance(error, SystemExit) and "not a review database" in output, command
    assert foreign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(foreign.name)) == [foreign.name]


def test_an_empty_file_is_not_turned_into_a_review_database(tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    for command in (["export", "--out", tmp_path / "out.csv"], ["review-stats"]):
        code, output, _ = invoke(*command, "--db", empty)
        assert code == 1 and "empty file" in output, command
    assert empty.stat().st_size == 0 and not (tmp_path / "out.csv").exists()


def test_a_refused_queue_leaves_no_database_behind(batches, tmp_path):
    outside = tmp_path / "elsewhere"
    with pytest.raises(QueueError, match="outside the data root"):
        queue_manifests(tmp_path / "new.sqlite", [batches[0]], root=outside)
    assert not (tmp_path / "new.sqlite").exists()
    result = queue_manifests(tmp_path / "new.sqlite", [batches[0]], statuses=("rejected",))
    assert result.added == 0 and result.problems and not (tmp_path / "new.sqlite").exists()
