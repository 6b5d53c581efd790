"""Helpers shared by the review tests and benches: real EG1800 photos copied into a scratch folder (never into
the project), the review app started as a real server, and key-press timing in a real browser."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline.importers import import_eg1800
from sinet_plus import manifest as mf

PROJECT = Path(__file__).resolve().parents[1]
PIPELINE = str(Path(sys.executable).parent / "pipeline")
"""The ``pipeline`` command of the running environment."""


def eg1800_sample(eg1800: Path, dest: Path, count: int, start: int = 0) -> Path:
    """Copy ``count`` EG1800 pairs into ``dest`` and write ``dest/manifest.csv`` with them as pending masks.

    The copies make ``dest`` a self-contained data root (the review store writes gold masks under it), and
    ``pending`` is what generated masks look like when they reach the review queue.
    """
    stems = sorted(p.stem for p in (eg1800 / "masks").glob("*.png"))[start:start + count]
    for folder, suffix in (("images", ".jpg"), ("masks", ".png")):
        (dest / folder).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            shutil.copyfile(eg1800 / folder / f"{stem}{suffix}", dest / folder / f"{stem}{suffix}")
    (dest / "split.csv").write_text("stem,split\n" + "".join(f"{s},train\n" for s in stems))
    out = dest / "manifest.csv"
    result = import_eg1800(dest, out)
    frame = result.manifest.frame.assign(status="pending", reviewer="")
    mf.write_manifest(mf.Manifest(frame, result.manifest.root), out)
    return out


def start_app(db: Path, port: int, log: Path, password: str | None = None) -> subprocess.Popen:
    """Start ``pipeline review`` on ``db`` and wait until Streamlit answers its health check."""
    env = {k: v for k, v in os.environ.items() if k != "REVIEW_PASSWORD"}
    if password:
        env["REVIEW_PASSWORD"] = password
    with open(log, "ab") as out:
        process = subprocess.Popen([PIPELINE, "review", "--db", str(db),
                                    "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    try:
        wait_healthy(port)
    except RuntimeError:
        stop_app(process)
        raise RuntimeError(f"the review app did not start; see {log}") from None
    return process


def wait_healthy(port: int, seconds: float = 60) -> None:
    """Wait until the Streamlit server on ``port`` answers its health check."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no Streamlit server answered on port {port}")


def stop_app(process: subprocess.Popen, kill: bool = False) -> None:
    """Stop a server started in its own session by :func:`start_app` (its process group; SIGKILL when ``kill``)."""
    os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
    process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

SHOWN = """([selector, old]) => {
    const img = document.querySelector(selector);
    if (!img || img.alt === old || !img.complete || img.naturalWidth === 0) return false;
    return performance.now() - window.__pressed;
}"""
"""In the page: milliseconds since the last key press once ``selector`` shows another item, fully decoded."""

TIMER = "document.addEventListener('keydown', () => { window.__pressed = performance.now(); }, true);"


def sign_in(page, url: str, name: str, password: str | None = None) -> None:
    """Open the app, give the password and name, and wait for the first picture."""
    page.add_init_script(TIMER)
    page.goto(url)
    if password:
        page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Your name", exact=True).fill(name)
    page.get_by_role("button", name="Start reviewing").click()
    page.wait_for_selector("img[alt]", timeout=60_000)


def press(page, key: str, selector: str = "img[alt]") -> tuple[str, float]:
    """Press ``key`` and wait for ``selector`` to show a new item; return the new item's key and the milliseconds."""
    old = page.get_attribute(selector, "alt")
    page.keyboard.press(key)
    elapsed = page.wait_for_function(SHOWN, arg=[selector, old], polling="raf", timeout=30_000).json_value()
    return page.get_attribute(selector, "alt"), float(elapsed)


def decide_until_empty(db: str, annotator: str, start_at: float = 0.0, durable: bool = True) -> list[str]:
    """A worker process: lease one item at a time and decide it until the queue has nothing for ``annotator``.

    Waits until ``start_at`` (so all workers start together), rejects every seventh item so both decisions
    occur, and returns the keys whose decision was confirmed.
    """
    from pipeline.review.store import DecisionRefused, Store

    confirmed = []
    with Store(db, durable=durable) as store:
        time.sleep(max(0.0, start_at - time.time()))
        while items := store.lease(annotator, 1):
            key = items[0].key
            try:
                store.decide(annotator, key, "reject" if len(confirmed) % 7 == 6 else "accept", shown_at=time.time())
            except DecisionRefused:
                continue
            confirmed.append(key)
    return confirmed


def check_decisions(db: str, confirmed: dict[str, list[str]]) -> tuple[int, int, int]:
    """(lost, decided too often, items left undecided) after workers ran; all three are 0 when the store is right.

    Args:
        db: the database.
        confirmed: the keys each annotator's worker saw confirmed.
    """
    from pipeline.review.store import Store

    with Store(db) as store:
        decisions = store.decisions_frame()
        items = store.items_frame()
    recorded = set(zip(decisions["annotator"], decisions["key"]))
    lost = sum((name, key) not in recorded for name, keys in confirmed.items() for key in keys)
    per_item = decisions[decisions["decision"] != "skip"].groupby("key")["annotator"].agg(["count", "nunique"])
    needed = items.set_index("key")["needed"]
    too_often = int(((per_item["count"] > needed.reindex(per_item.index)) |
                     (per_item["count"] != per_item["nunique"])).sum())
    undecided = int((items["done"] < items["needed"]).sum())
    return lost, too_often, undecided
