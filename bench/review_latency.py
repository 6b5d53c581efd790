"""Key press to next photo shown, in real Chromium, for the review app in single and grid mode.

Copies real EG1800 photos (600x800) into a scratch folder, queues them, starts ``pipeline review`` and
drives Debian's chromium with Playwright: each key press is timed in the page from the ``keydown`` event
to the first animation frame in which the next item's picture is in the DOM and fully decoded. The bench
looks at each photo for ``--think`` seconds before pressing (the app finishes drawing its buttons meanwhile;
pressing the instant a photo appears would queue the press behind that). A bare Streamlit fragment showing
the same photos (the floor) is timed in interleaved blocks, so the two see the same machine load.

    .venv/bin/python bench/review_latency.py --decisions 200
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))

from review_helpers import (  # noqa: E402
    CHROMIUM_ARGS,
    PIPELINE,
    TIMER,
    eg1800_sample,
    free_port,
    press,
    sign_in,
    start_app,
    stop_app,
    wait_healthy,
)

GRID = 9
BLOCK = 20

FLOOR_APP = """
import base64, os, streamlit as st
photos = sorted(os.listdir(os.environ["FLOOR_PHOTOS"]))

@st.cache_resource
def uri(name):
    data = open(os.path.join(os.environ["FLOOR_PHOTOS"], name), "rb").read()
    return "data:image/jpeg;base64," + base64.b64encode(data).decode()

@st.fragment
def panel():
    n = st.session_state.setdefault("n", 0)
    st.button("Next (A)", shortcut="A", on_click=lambda: st.session_state.update(n=n + 1))
    st.html(f'<img alt="{photos[n % len(photos)]}-{n}" src="{uri(photos[n % len(photos)])}">')

panel()
"""
"""The floor: a bare Streamlit fragment with one shortcut button and a real photo sent the same way."""


def summary(name: str, values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return (f"{name:<38} n={len(values):4d}  median {statistics.median(values):6.1f} ms  p95 {p95:6.1f} ms  "
            f"max {values[-1]:6.1f} ms")


def single_mode(page, decisions: int, think: float, keys: str = "aa1axasa") -> list[float]:
    """Accept, reject with a reason, reject and skip in turn, looking ``think`` seconds at each photo; ms each."""
    times = []
    for n in range(decisions):
        page.wait_for_timeout(1000 * think)
        times.append(press(page, keys[n % len(keys)])[1])
    return times


def start_floor(scratch: Path, photos: Path) -> tuple[subprocess.Popen, int]:
    script = scratch / "floor_app.py"
    script.write_text(FLOOR_APP)
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
               "--browser.gatherUsageStats", "false"]
    process = subprocess.Popen(command, env={**os.environ, "FLOOR_PHOTOS": str(photos)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    wait_healthy(port)
    return process, port


def grid_mode(page, images: int, think: float) -> list[float]:
    """Mark one thumbnail bad, then accept the page; milliseconds per image (page time / page size)."""
    page.keyboard.press("g")
    page.wait_for_selector(".review-thumb")
    times = []
    for n in range(images // GRID):
        page.keyboard.press(str(n % GRID + 1))
        page.wait_for_selector(".review-thumb[data-marked='1']")
        page.wait_for_timeout(1000 * think)
        times.append(press(page, "a", ".review-thumb")[1] / GRID)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=200, help="decisions per mode (grid: images)")
    parser.add_argument("--eg1800", type=Path, default=PROJECT.parent / "shared" / "data" / "eg1800")
    parser.add_argument("--think", type=float, default=0.3,
                        help="seconds spent looking at a photo before the key (people take ~1.25 s per image)")
    parser.add_argument("--screenshot", type=Path, default=PROJECT / "runs" / "review-latency.png")
    args = parser.parse_args()
    warmup = 5
    with tempfile.TemporaryDirectory(prefix="review-latency-") as scratch:
        scratch = Path(scratch)
        manifest = eg1800_sample(args.eg1800, scratch / "data", 2 * args.decisions + 4 * warmup + 2 * GRID)
        db = scratch / "review.sqlite"
        subprocess.run([PIPELINE, "queue", str(manifest), "--db", str(db),
                        "--order", "file"], check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        app = start_app(db, port, scratch / "app.log")
        floor_app, floor_port = start_floor(scratch, scratch / "data" / "images")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                floor_page = browser.new_page(viewport={"width": 1400, "height": 1000})
                floor_page.add_init_script(TIMER)
                floor_page.goto(f"http://127.0.0.1:{floor_port}")
                floor_page.wait_for_selector("img[alt]")
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                sign_in(page, f"http://127.0.0.1:{port}", "bench")
                single_mode(page, warmup, args.think)
                single_mode(floor_page, warmup, args.think, "a")
                single, floor = [], []
                for _ in range(args.decisions // BLOCK):  # interleaved blocks: both see the same machine load
                    floor += single_mode(floor_page, BLOCK, args.think, "a")
                    page.bring_to_front()
                    single += single_mode(page, BLOCK, args.think)
                    floor_page.bring_to_front()
                page.bring_to_front()
                args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.screenshot))
                grid = grid_mode(page, args.decisions + GRID, args.think)[1:]
                page.screenshot(path=str(args.screenshot.with_stem(args.screenshot.stem + "-grid")))
                browser.close()
        finally:
            stop_app(app)
            stop_app(floor_app)
    print(f"key press -> next photo shown, real Chromium, {args.decisions} decisions per mode, 600x800 EG1800 photos, "
          f"{args.think} s looking at each photo")
    print(summary("single (per decision)", single))
    print(summary(f"grid (per image; n = pages of {GRID})", grid))
    print(summary("floor (bare fragment)", floor))
    print("floor: a bare st.fragment with one shortcut button and an inline 600x800 photo, interleaved in blocks "
          f"of {BLOCK} with single mode")


if __name__ == "__main__":
    main()
