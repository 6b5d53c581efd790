"""The review app in real headless Chromium: real photos reviewed by keyboard, checked in the database, then the
server is killed and every decision the page confirmed must still be there."""

from __future__ import annotations

import shutil

import pytest
from review_helpers import CHROMIUM_ARGS, eg1800_sample, free_port, press, sign_in, start_app, stop_app

from pipeline.review.queue import queue_manifests
from pipeline.review.store import Store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.slow
def test_keyboard_review_in_chromium_survives_a_killed_server(tmp_path, eg1800_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian chromium is not installed (make system-deps)")
    manifest = eg1800_sample(eg1800_dir, tmp_path / "data", 8)
    db = tmp_path / "data" / "review.sqlite"
    with Store(db, create=True) as store:
        queue_manifests(store, [manifest], order="file")
    port = free_port()
    server = start_app(db, port, tmp_path / "app.log", password="pw")
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            sign_in(page, f"http://127.0.0.1:{port}", "web", password="pw")
            confirmed = []
            for key, decision, reason in [("a", "accept", None), ("x", "reject", None), ("2", "reject", "missing"),
                                          ("s", "skip", None), ("a", "accept", None)]:
                old = page.get_attribute("img[alt]", "alt")
                new, _ = press(page, key)
                page.get_by_text(f"saved: {decision}{f' ({reason})' if reason else ''} {old}").wait_for()
                confirmed.append((old, decision, reason))
                assert new != old
            back, _ = press(page, "u")
            page.get_by_text(f"undone: {back}").wait_for()
            assert back == confirmed[-1][0]
            new, _ = press(page, "x")
            page.get_by_text(f"saved: reject {back}").wait_for()
            confirmed[-1] = (back, "reject", None)
            stop_app(server, kill=True)
            browser.close()
    finally:
        if server.poll() is None:
            stop_app(server)
    with Store(db) as store:
        frame = store.decisions_frame()[["key", "decision", "reason"]]
        undone = store.decisions_frame(include_undone=True)
    recorded = list(frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None))
    assert recorded == confirmed
    assert undone["undone_at"].notna().sum() == 1 and (undone["annotator"] == "web").all()
