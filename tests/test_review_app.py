"""Every control of the review app, driven by Streamlit's AppTest against a real store and real EG1800 photos."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from review_helpers import PROJECT, eg1800_sample
from streamlit.testing.v1 import AppTest

from pipeline.review.queue import queue_manifests
from pipeline.review.store import REASONS, Store
from sinet_plus import manifest as mf

APP = str(PROJECT / "review_app" / "app.py")


@pytest.fixture
def db(tmp_path, eg1800_dir, monkeypatch) -> Path:
    """A queue of 12 real photos; the app finds it through REVIEW_DB."""
    manifest = eg1800_sample(eg1800_dir, tmp_path / "data", 12)
    path = tmp_path / "data" / "review.sqlite"
    with Store(path, create=True) as store:
        queue_manifests(store, [manifest], order="file")
    monkeypatch.setenv("REVIEW_DB", str(path))
    monkeypatch.delenv("REVIEW_PASSWORD", raising=False)
    return path


def signed_in(name: str = "ann", password: str | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    if password is not None:
        app.text_input[0].input(password)
    app.text_input[-1].input(name)
    app.button[0].click().run()
    return app


def button(app: AppTest, label: str):
    return next(b for b in app.button if b.label.startswith(label))


def shown(app: AppTest) -> str:
    """The key of the photo on screen (the big picture's alt text)."""
    body = app.get("html")[0].proto.body
    return body.split('alt="', 1)[1].split('"', 1)[0]


def captions(app: AppTest) -> str:
    return " | ".join(c.value for c in app.caption)


def decisions(db: Path) -> list[tuple]:
    with Store(db) as store:
        frame = store.decisions_frame(include_undone=True)[["key", "annotator", "decision", "reason"]]
    return list(frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None))


def test_sign_in_asks_for_the_password_and_a_name(db, monkeypatch):
    monkeypatch.setenv("REVIEW_PASSWORD", "s3cret")
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert [t.label for t in app.text_input] == ["Password", "Your name"]
    app.text_input[0].input("wrong")
    app.text_input[1].input("ann")
    app.button[0].click().run()
    assert [e.value for e in app.error] == ["Wrong password."] and not app.get("html")
    app.text_input[0].input("s3cret")
    app.text_input[1].input("  ")
    app.button[0].click().run()
    assert [e.value for e in app.error] == ["Please give your name."]
    app.text_input[1].input("ann")
    app.button[0].click().run()
    assert not app.exception and shown(app).startswith("eg1800/")
    assert "Reviewer: **ann**" in [m.value for m in app.sidebar.markdown]


def test_without_a_database_the_app_says_how_to_start(monkeypatch):
    monkeypatch.delenv("REVIEW_DB", raising=False)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert "pipeline review --db DB" in app.error[0].value


def test_every_single_mode_control_records_what_it_says(db):
    app = signed_in("ann")
    assert [b.label for b in app.button] == ["Accept (A)", "Reject (X)", "Skip (S)", "Undo (U)",
                                            "View: overlay (V)", *(f"{n} {c}" for n, c in enumerate(REASONS, 1)),
                                            "Grid mode (G)"]
    expected = []
    for label, decision, reason in [("Accept", "accept", None), ("Reject", "reject", None), ("Skip", "skip", None),
                                    *((f"{n} {code}", "reject", code) for n, code in enumerate(REASONS, 1))]:
        key = shown(app)
        button(app, label).click().run()
        expected.append((key, "ann", decision, reason))
        assert shown(app) != key and f"saved: {decision}" in captions(app)
    assert decisions(db) == expected
    assert app.get("progress")[0].proto.text == "8 / 12 reviews done"
    assert "ann: 8 decided" in captions(app) and "s/image" in captions(app)
    last = expected[-1][0]
    button(app, "Undo").click().run()
    assert shown(app) == last and f"undone: {last}" in captions(app)
    with Store(db) as store:
        assert len(store.decisions_frame()) == 8
    pictures = []
    for view in ("contour", "cutout", "photo", "overlay"):
        pictures.append(app.get("html")[0].proto.body)
        button(app, "View").click().run()
        assert button(app, "View").label == f"View: {view} (V)"
    assert len(set(pictures)) == 4 and app.get("html")[0].proto.body == pictures[0]


def test_grid_mode_rejects_the_marked_and_accepts_the_rest(db):
    app = signed_in("bob")
    button(app, "Grid mode").click().run()
    thumbs = [h.proto.body for h in app.get("html")]
    assert len(thumbs) == 9 and all('class="review-thumb"' in t for t in thumbs)
    keys = [t.split('alt="', 1)[1].split('"', 1)[0] for t in thumbs]
    button(app, "ok (2)").click().run()
    button(app, "ok (5)").click().run()
    button(app, "✗ bad (5)").click().run()  # unmark
    button(app, "ok (7)").click().run()
    assert "2 of 9 marked bad" in captions(app)
    assert 'data-marked="1"' in app.get("html")[1].proto.body
    button(app, "Accept the rest").click().run()
    recorded = {key: (decision, reason) for key, _, decision, reason in decisions(db)}
    assert recorded == {key: ("reject", "grid") if n in (1, 6) else ("accept", None) for n, key in enumerate(keys)}
    assert "saved 9 decisions" in captions(app)
    assert len(app.get("html")) == 3  # the 3 photos left
    button(app, "Single mode").click().run()
    assert button(app, "Accept").label == "Accept (A)"


def test_two_sessions_of_one_annotator_do_not_decide_twice(db):
    first, second = signed_in("ann"), signed_in("ann")
    assert shown(first) == shown(second)
    key = shown(first)
    button(first, "Accept").click().run()
    button(second, "Reject").click().run()
    assert f"not saved: {key}: already decided by ann" in captions(second)
    assert shown(second) != key
    assert decisions(db) == [(key, "ann", "accept", None)]


def test_a_vanished_photo_is_named_and_can_be_skipped(db, tmp_path):
    frame = mf.read_manifest(tmp_path / "data" / "manifest.csv").frame
    (tmp_path / "data" / frame["image"][0]).unlink()
    app = signed_in("cid")
    assert "eg1800/00001: cannot show it" in app.error[0].value and "file not found" in app.error[0].value
    button(app, "Skip").click().run()
    assert not app.error and decisions(db) == [("eg1800/00001", "cid", "skip", None)]


def test_a_path_outside_the_data_root_is_never_served(db):
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE items SET image = '../../../../etc/hostname' WHERE key = 'eg1800/00001'")
    app = signed_in("dan")
    assert "outside the data root" in app.error[0].value and not app.get("html")
