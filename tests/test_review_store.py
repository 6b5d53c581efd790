"""The review store, queue, export and stats on real EG1800 photos and a real SQLite database."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from review_helpers import check_decisions, decide_until_empty, eg1800_sample
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.review.export import export_manifest
from pipeline.review.queue import queue_manifests
from pipeline.review.schema import SCHEMA_VERSION, migrate
from pipeline.review.stats import review_stats
from pipeline.review.store import DecisionRefused, NewItem, ReviewStoreError, Store
from sinet_plus import manifest as mf
from sinet_plus.imageio import read_mask

runner = CliRunner(env={"COLUMNS": "1000"})


class Clock:
    """A clock the test moves by hand, to age leases without sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def data(tmp_path, eg1800_dir) -> Path:
    """Six real EG1800 pairs under ``tmp_path/data`` with their manifest (pending masks)."""
    return eg1800_sample(eg1800_dir, tmp_path / "data", 6)


@pytest.fixture
def queued(data, tmp_path) -> Path:
    db = tmp_path / "data" / "review.sqlite"
    result = runner.invoke(app, ["queue", str(data), "--db", str(db)])
    assert result.exit_code == 0, result.output
    return db


def test_queue_adds_each_item_once(data, tmp_path, eg1800_dir):
    db = tmp_path / "data" / "review.sqlite"
    first = runner.invoke(app, ["queue", str(data), "--db", str(db)])
    again = runner.invoke(app, ["queue", str(data), "--db", str(db)])
    more = eg1800_sample(eg1800_dir, tmp_path / "data" / "more", 8, start=3)  # 3 known photos, 5 new ones
    newer = runner.invoke(app, ["queue", str(more), "--db", str(db)])
    assert "queued 6 new items (0 were already queued)" in first.output
    assert "queued 0 new items (6 were already queued)" in again.output
    assert newer.exit_code == 0 and "queued 5 new items (3 were already queued)" in newer.output
    with Store(db) as store:
        items = store.items_frame()
        assert len(items) == 11 and store.data_root == (tmp_path / "data").resolve()
        image = store.resolve(items["image"][0])
    assert image.is_file() and image.is_relative_to(tmp_path / "data")


def test_queue_refuses_paths_outside_the_root(data, tmp_path):
    db = tmp_path / "data" / "review.sqlite"
    runner.invoke(app, ["queue", str(data), "--db", str(db)])
    outside = tmp_path / "elsewhere"
    (outside / "images").mkdir(parents=True)
    frame = mf.read_manifest(data).frame
    (outside / "images" / "x.jpg").write_bytes((data.parent / frame["image"][0]).read_bytes())
    rows = frame.head(1).assign(id="other/x", image="images/x.jpg", mask=str(Path("..") / "data" / frame["mask"][0]))
    mf.write_manifest(rows, outside / "manifest.csv")
    result = runner.invoke(app, ["queue", str(outside / "manifest.csv"), "--db", str(db)])
    assert result.exit_code == 1
    assert "outside the data root" in result.output and "other/x" in result.output
    with Store(db) as store:
        assert "other/x" not in store.keys()
        with pytest.raises(ReviewStoreError, match="outside the data root"):
            store.resolve("../elsewhere/images/x.jpg")


def test_queue_names_vanished_files_and_keeps_the_rest(data, tmp_path):
    frame = mf.read_manifest(data).frame
    gone = data.parent / frame["image"][2]
    gone.unlink()
    db = tmp_path / "data" / "review.sqlite"
    result = runner.invoke(app, ["queue", str(data), "--db", str(db)])
    assert result.exit_code == 0
    assert "file vanished" in result.output and gone.name in result.output
    with Store(db) as store:
        assert store.keys() == set(frame["id"]) - {frame["id"][2]}
    for path in frame["image"]:
        (data.parent / path).unlink(missing_ok=True)
    result = runner.invoke(app, ["queue", str(data), "--db", str(tmp_path / "other.sqlite"), "--root",
                                 str(tmp_path)])
    assert result.exit_code == 1 and "nothing to queue" in result.output


def test_leases_are_exclusive_and_expire(queued):
    clock = Clock()
    with Store(queued, clock=clock) as store:
        held_by_ann = store.lease("ann", 2, seconds=60)
        held_by_bob = store.lease("bob", 10, seconds=60)
        assert len(held_by_ann) == 2 and len(held_by_bob) == 4
        assert not {i.key for i in held_by_ann} & {i.key for i in held_by_bob}
        assert store.lease("ann", 2) == held_by_ann  # asking again renews the same items
        clock.now += 61 + 600
        taken = store.lease("cid", 2, seconds=60)  # ann's leases expired: they go to cid
        assert taken == held_by_ann
        with pytest.raises(DecisionRefused, match="expired and it went to another annotator"):
            store.decide("ann", held_by_ann[0].key, "accept")
        store.decide("cid", taken[0].key, "accept")
        decisions = store.decisions_frame()
    assert list(decisions["annotator"]) == ["cid"]


def test_stale_lease_nobody_took_still_counts(queued):
    clock = Clock()
    with Store(queued, clock=clock) as store:
        item = store.lease("ann", 1, seconds=60)[0]
        clock.now += 3600
        store.decide("ann", item.key, "accept")
        assert store.decisions_frame()["key"].tolist() == [item.key]


def test_two_tabs_of_one_annotator_never_decide_twice(queued):
    with Store(queued) as tab1, Store(queued) as tab2:
        first, second = tab1.lease("ann", 1), tab2.lease("ann", 1)
        assert first == second
        tab1.decide("ann", first[0].key, "accept")
        with pytest.raises(DecisionRefused, match="already decided by ann"):
            tab2.decide("ann", second[0].key, "reject", "edge")
        assert tab2.lease("ann", 1) != first
        assert len(tab2.decisions_frame()) == 1


def test_skip_passes_the_item_to_someone_else(queued):
    with Store(queued) as store:
        item = store.lease("ann", 1)[0]
        store.decide("ann", item.key, "skip")
        assert item not in store.lease("ann", 10)
        store.release("ann", store.lease("ann", 10)[0].key)
        assert item in store.lease("bob", 10)
        assert store.items_frame().set_index("key").at[item.key, "done"] == 0


def test_undo_own_recent_decisions_only(queued):
    clock = Clock()
    with Store(queued, clock=clock) as store:
        old, recent = store.lease("ann", 2)
        store.decide("ann", old.key, "reject", "edge", shown_at=clock.now - 2)
        clock.now += 700
        store.decide("ann", recent.key, "accept", shown_at=clock.now - 1.5)
        assert store.undo("bob") is None
        assert store.undo("ann") == recent
        assert store.lease("ann", 1) == [recent]  # the undone item comes back first
        assert store.undo("ann") is None  # the older decision is outside the undo window
        decisions = store.decisions_frame(include_undone=True)
        counting = store.decisions_frame()
        done = store.items_frame().set_index("key")["done"]
    assert decisions.set_index("key").at[recent.key, "undone_at"] > 0
    assert counting["key"].tolist() == [old.key] and counting["seconds"].tolist() == [2.0]
    assert done[recent.key] == 0 and done[old.key] == 1


def test_double_review_goes_to_two_different_people(tmp_path):
    with Store(tmp_path / "r.sqlite", create=True) as store:
        store.add_items([NewItem("twice", "a.jpg", "a.png", needed=2), NewItem("once", "b.jpg", "b.png", rank=1)])
        assert [i.key for i in store.lease("ann", 5)] == ["twice", "once"]
        assert [i.key for i in store.lease("bob", 5)] == ["twice"]
        assert store.lease("cid", 5) == []
        store.decide("ann", "twice", "accept")
        store.decide("bob", "twice", "reject", "missing")
        assert store.lease("cid", 5) == []
        with pytest.raises(DecisionRefused):
            store.decide("cid", "twice", "accept")
        stats = review_stats(store)
    assert stats.agreement.iloc[0].to_dict() == {"double_reviewed": 1, "agreed": 0, "agreement": 0.0}
    assert stats.reasons.to_dict("records") == [{"reason": "missing", "rejections": 1}]


def test_gold_items_are_damaged_copies_written_under_the_root(data, tmp_path):
    db = tmp_path / "data" / "review.sqlite"
    with Store(db, create=True) as store:
        added, _, problems, _ = queue_manifests(store, [data], gold_from=data, gold_count=4)
        items = store.items_frame().set_index("key")
    assert added == 6 + 8 and not problems
    gold = items[items["gold"].notna()]
    assert sorted(gold["gold"].value_counts().items()) == [("chunk", 1), ("dilated", 1), ("eroded", 1),
                                                           ("good", 4), ("shifted", 1)]
    for key, row in gold[gold["gold"] != "good"].iterrows():
        damaged = tmp_path / "data" / row["mask"]
        assert damaged.is_relative_to(tmp_path / "data" / "review-gold")
        good = read_mask(tmp_path / "data" / items.at[key.rsplit(":", 1)[0], "mask"]) == 1
        bad = read_mask(damaged) == 1
        iou = (good & bad).sum() / (good | bad).sum()
        assert 0.5 < iou < 0.97, (row["gold"], iou)
    assert not list((tmp_path / "data" / "review-gold").glob(".*tmp*"))


def test_export_writes_accepted_items_the_trainer_reads(data, tmp_path, eg1800_dir):
    db = tmp_path / "data" / "review.sqlite"
    with Store(db, create=True) as store:
        queue_manifests(store, [data], gold_from=data, gold_count=2)
        items = store.lease("ann", 20)
        for number, item in enumerate(items):
            decision = "accept" if item.gold or number % 3 else "reject"
            store.decide("ann", item.key, decision, None if decision == "accept" else "extra")
        accepted = {i.key for n, i in enumerate(items) if n % 3 and not i.gold}
        rejected = {i.key for n, i in enumerate(items) if not n % 3 and not i.gold}
    base = eg1800_sample(eg1800_dir, tmp_path / "base", 2, start=100)
    out = tmp_path / "exports" / "curated.csv"
    result = runner.invoke(app, ["export", "--db", str(db), "--out", str(out), "--base", str(base)])
    assert result.exit_code == 0, result.output
    exported = mf.load(out, check_files=True)
    frame = exported.frame.set_index("id")
    assert set(frame.index) == accepted | set(mf.read_manifest(base).frame["id"])
    reviewed = frame.loc[sorted(accepted)]
    assert (reviewed["status"] == "accepted").all() and (reviewed["reviewer"] == "ann").all()
    assert reviewed["decided_at"].str.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00").all()
    source = mf.read_manifest(data)
    assert exported.path(frame.at[sorted(accepted)[0], "image"]) == \
        source.path(source.frame.set_index("id").at[sorted(accepted)[0], "image"])
    with Store(db) as store:
        both, _ = export_manifest(store, out, statuses=("accepted", "rejected"))
    statuses = both.frame.set_index("id")["status"]
    assert set(statuses[statuses == "rejected"].index) == rejected
    assert set(both.frame.set_index("id").loc[sorted(rejected), "reason"]) == {"extra"}


def test_review_stats_table_and_png(data, tmp_path):
    db = tmp_path / "data" / "review.sqlite"
    with Store(db, create=True) as store:
        queue_manifests(store, [data], gold_from=data, gold_count=4)
        for item in store.lease("ann", 20):
            store.decide("ann", item.key, "accept", shown_at=time.time() - 2)
    png = tmp_path / "stats.png"
    result = runner.invoke(app, ["review-stats", "--db", str(db), "--png", str(png)])
    assert result.exit_code == 0, result.output
    assert "throughput per annotator" in result.output and "accuracy on gold items" in result.output
    assert png.stat().st_size > 10_000
    with Store(db) as store:
        stats = review_stats(store)
    gold = stats.gold.set_index("gold")
    assert gold.at["good", "accuracy"] == 1.0 and gold.loc[gold.index != "good", "accuracy"].max() == 0.0
    assert stats.throughput.set_index("annotator").at["ann", "accept"] == 14


def test_an_older_schema_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, target=1)
    db.execute("INSERT INTO settings VALUES ('data_root', ?)", (str(tmp_path),))
    db.execute("INSERT INTO items(key, image, mask, done, added_at) VALUES ('a', 'a.jpg', 'a.png', 1, 0)")
    db.execute("INSERT INTO items(key, image, mask, added_at) VALUES ('b', 'b.jpg', 'b.png', 0)")
    db.execute("INSERT INTO decisions(item, annotator, decision, decided_at) VALUES (1, 'ann', 'accept', 5)")
    db.close()
    with Store(path) as store:
        assert store.version == SCHEMA_VERSION
        decisions = store.decisions_frame()
        assert decisions[["key", "annotator", "decision"]].values.tolist() == [["a", "ann", "accept"]]
        assert pd.isna(decisions["seconds"][0]) and decisions["needed"][0] == 1
        assert [i.key for i in store.lease("bob", 5)] == ["b"]
        assert store.data_root == tmp_path


def test_unusable_databases_get_a_clear_message(tmp_path):
    with pytest.raises(ReviewStoreError, match="no review database here"):
        Store(tmp_path / "missing.sqlite")
    newer = tmp_path / "newer.sqlite"
    sqlite3.connect(newer).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ReviewStoreError, match="newer than this program"):
        Store(newer)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(ReviewStoreError, match="not a review database"):
        Store(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ReviewStoreError, match="not a usable review database"):
        Store(junk)
    result = runner.invoke(app, ["export", "--db", str(junk), "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 1 and "not a usable review database" in result.output


def test_confirmed_decisions_survive_a_killed_process(queued):
    script = ("import sys; from pipeline.review.store import Store\n"
              "store = Store(sys.argv[1])\n"
              "while items := store.lease('ann', 1):\n"
              "    store.decide('ann', items[0].key, 'accept'); print(items[0].key, flush=True)\n"
              "    if len(store.decisions_frame()) == 3: input()\n")
    process = subprocess.Popen([sys.executable, "-c", script, str(queued)], stdout=subprocess.PIPE,
                               stdin=subprocess.PIPE, text=True)
    confirmed = [process.stdout.readline().strip() for _ in range(3)]
    process.kill()
    process.wait()
    with Store(queued) as store:
        assert store.decisions_frame()["key"].tolist() == confirmed
        assert [i.key for i in store.lease("ann", 1)] != confirmed[:1]


@pytest.mark.slow
def test_concurrent_processes_lose_nothing_and_decide_nothing_twice(tmp_path):
    db = str(tmp_path / "load.sqlite")
    with Store(db, create=True) as store:
        store.add_items(NewItem(f"k{n:03d}", "a.jpg", "a.png", rank=n, needed=2 if n % 5 == 0 else 1)
                        for n in range(120))
    names = [f"worker-{n}" for n in range(4)]
    with multiprocessing.get_context("spawn").Pool(len(names)) as pool:
        start_at = time.time() + 8
        results = pool.starmap(decide_until_empty, [(db, name, start_at, False) for name in names])
    assert check_decisions(db, dict(zip(names, results))) == (0, 0, 0)
    assert sum(map(len, results)) == 120 + 24
    assert sum(1 for r in results if r) >= 2  # the work really was shared


def test_pipeline_never_imports_the_app():
    code = "import sys, pipeline.cli; sys.exit(any(m.split('.')[0] == 'review_app' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
