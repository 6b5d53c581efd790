"""The accept/reject app: shows one photo with its mask (or a grid of them) and records decisions in the store.

Started by ``pipeline review --db DB`` (``streamlit run review_app/app.py -- --db DB``); ``REVIEW_DB`` names
the database when no argument is given, ``REVIEW_PASSWORD`` turns on the password page. The app only
renders and calls :class:`pipeline.review.store.Store`; every decision is committed before the next photo is
shown, so a decision the annotator saw confirmed is in the database even if the app is killed.

Speed: the review panel is an ``st.fragment`` (a key press reruns only the panel), pictures are cached
JPEG ``data:`` URIs drawn once per process, and the next items are leased and drawn in the background
before they are needed.
"""

from __future__ import annotations

import argparse
import hmac
import os
import time
from html import escape

import streamlit as st

from pipeline.review.store import REASONS, DecisionRefused, Item, ReviewStoreError, Store
from review_app.views import VIEWS, prefetch, render
from sinet_plus.imageio import ImageReadError

AHEAD = 3  # items leased and drawn ahead of the one on screen in single mode
GRID = 9  # thumbnails per grid page, marked by number keys 1-9 (Streamlit 1.67 does not fire a "0" shortcut)

GRID_KEYS = [str(n) for n in range(1, GRID + 1)]
REJECT_KEYS = {code: str(n) for n, code in enumerate(REASONS, start=1)}


def database() -> str:
    """The database path from ``-- --db DB`` or ``REVIEW_DB``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db", default=os.environ.get("REVIEW_DB", ""))
    return parser.parse_known_args()[0].db


@st.cache_resource
def open_store(path: str) -> Store:
    """One store per app process, shared by every session (the store is thread-safe)."""
    return Store(path)


def sign_in() -> bool:
    """The password (when one is set) and annotator-name page; True once both are given."""
    password = os.environ.get("REVIEW_PASSWORD", "")
    state = st.session_state
    if "annotator" in state:
        return True
    st.title("Mask review")
    with st.form("sign-in"):
        given = st.text_input("Password", type="password") if password else ""
        name = st.text_input("Your name", help="Recorded with each decision.")
        if st.form_submit_button("Start reviewing"):
            if password and not hmac.compare_digest(given.encode(), password.encode()):
                st.error("Wrong password.")
            elif not name.strip():
                st.error("Please give your name.")
            else:
                state.annotator = name.strip()
                state.view = VIEWS[0]
                state.marks = set()
                state.shown = {}
                state.note = ""
                st.rerun()
    return False


def decide(item: Item, decision: str, reason: str | None = None, shown_at: float | None = None) -> None:
    """Record one decision and say so (or why it was not recorded)."""
    state = st.session_state
    try:
        state.store.decide(state.annotator, item.key, decision, reason,
                           shown_at if shown_at is not None else state.shown.get(item.key))
        state.note = f"saved: {decision}{' (' + reason + ')' if reason else ''} {item.key}"
    except DecisionRefused as error:
        state.note = f"not saved: {error}"


def undo() -> None:
    """Undo this annotator's latest decision; its item comes back first."""
    state = st.session_state
    item = state.store.undo(state.annotator)
    state.note = f"undone: {item.key}" if item else "nothing recent to undo"
    if item:
        state.shown.pop(item.key, None)


def next_view() -> None:
    """Show the next of overlay / contour / cut-out / photo."""
    state = st.session_state
    state.view = VIEWS[(VIEWS.index(state.view) + 1) % len(VIEWS)]


def switch_mode() -> None:
    """Between one large photo and a grid of thumbnails."""
    st.session_state.grid = not st.session_state.grid


def toggle(key: str) -> None:
    """Mark or unmark a grid thumbnail as bad."""
    st.session_state.marks ^= {key}


def decide_grid(items: list[Item]) -> None:
    """Reject the marked thumbnails and accept the rest, one transaction each; time is shared equally."""
    state = st.session_state
    now = time.time()
    shown = min((state.shown.get(i.key, now) for i in items), default=now)
    each = now - (now - shown) / max(len(items), 1)
    notes = []
    for item in items:
        marked = item.key in state.marks
        decide(item, "reject" if marked else "accept", "grid" if marked else None, shown_at=each)
        notes.append(state.note)
    state.marks = set()
    refused = [n for n in notes if n.startswith("not saved")]
    state.note = f"saved {len(items) - len(refused)} decisions" + (f"; {'; '.join(refused)}" if refused else "")


def picture(item: Item, view: str, thumb: bool = False) -> str | None:
    """The cached picture of an item, or None after showing why it cannot be drawn."""
    store = st.session_state.store
    try:
        return render(store.resolve(item.image), store.resolve(item.mask), view, thumb)
    except (ImageReadError, ReviewStoreError) as error:
        st.error(f"{item.key}: cannot show it: {error}. Skip it (S).")
        return None


def files(items: list[Item]) -> list[tuple]:
    """Photo and mask paths of the items that lie under the data root (the others are reported when shown)."""
    store, pairs = st.session_state.store, []
    for item in items:
        try:
            pairs.append((store.resolve(item.image), store.resolve(item.mask)))
        except ReviewStoreError:
            continue
    return pairs


def status_line(items_left: bool) -> None:
    """Progress bar, speed and queue state."""
    state = st.session_state
    progress = state.store.progress(state.annotator)
    st.progress(progress.done / progress.total if progress.total else 1.0,
                text=f"{progress.done} / {progress.total} reviews done")
    speed = f"{progress.seconds_per_item:.2f} s/image" if progress.seconds_per_item is not None else "-"
    st.caption(f"{state.annotator}: {progress.mine} decided · {speed} · "
               f"{progress.leased_by_others} held by others" + ("" if items_left else " · nothing left for you"))
    if state.note:
        st.caption(state.note)


def common_buttons() -> None:
    """Undo and the view switch, in both modes."""
    st.button("Undo (U)", shortcut="U", on_click=undo, width="stretch")
    st.button(f"View: {st.session_state.view} (V)", shortcut="V", on_click=next_view, width="stretch")


@st.fragment
def single_panel() -> None:
    """One photo large, with Accept / Reject / Skip / Undo and the reject reasons on number keys."""
    state = st.session_state
    items = state.store.lease(state.annotator, 1 + AHEAD)
    photo, controls = st.columns([3, 1])
    with photo:
        if items:
            item = items[0]
            state.shown.setdefault(item.key, time.time())
            uri = picture(item, state.view)
            if uri:
                st.html(f'<img id="review-photo" alt="{escape(item.key)}" src="{uri}" '
                        'style="max-height:88vh;max-width:100%">')
            st.caption(f"{item.key}" + (" · gold" if item.gold else ""))
        else:
            st.success("Nothing left to review for you. Thank you!")
    with controls:
        status_line(bool(items))
        if items:
            st.button("Accept (A)", shortcut="A", type="primary", on_click=decide, args=(item, "accept"),
                      width="stretch")
            st.button("Reject (X)", shortcut="X", on_click=decide, args=(item, "reject"), width="stretch")
            st.button("Skip (S)", shortcut="S", on_click=decide, args=(item, "skip"), width="stretch")
        common_buttons()
        if items:
            st.caption("Reject with a reason:")
            for code, meaning in REASONS.items():
                st.button(f"{REJECT_KEYS[code]} {code}", shortcut=REJECT_KEYS[code], help=meaning,
                          on_click=decide, args=(item, "reject", code), width="stretch")
    prefetch(files(items[1:]), state.view)


@st.fragment
def grid_panel() -> None:
    """A page of thumbnails: number keys (or clicks) mark bad ones, A rejects the marked and accepts the rest."""
    state = st.session_state
    items = state.store.lease(state.annotator, 2 * GRID)
    page, ahead = items[:GRID], items[GRID:]
    status_line(bool(items))
    if not page:
        st.success("Nothing left to review for you. Thank you!")
        common_buttons()
        return
    now = time.time()
    for item in page:
        state.shown.setdefault(item.key, now)
    state.marks &= {i.key for i in page}
    left, right = st.columns([5, 1])
    with right:
        st.button("Accept the rest (A)", shortcut="A", type="primary", on_click=decide_grid, args=(page,),
                  width="stretch")
        st.caption(f"{len(state.marks)} of {len(page)} marked bad: rejected with reason `grid`")
        common_buttons()
    with left:
        for row in range(0, len(page), 5):
            columns = st.columns(5)
            for column, item, key in zip(columns, page[row:row + 5], GRID_KEYS[row:row + 5]):
                with column:
                    uri = picture(item, state.view, thumb=True)
                    marked = item.key in state.marks
                    border = "5px solid #e0202a" if marked else "5px solid transparent"
                    if uri:
                        st.html(f'<img class="review-thumb" data-marked="{int(marked)}" '
                                f'alt="{escape(item.key)}" src="{uri}" style="width:100%;border:{border}">')
                    st.button(f"{'✗ bad' if marked else 'ok'} ({key})", key=f"mark-{key}", shortcut=key,
                              on_click=toggle, args=(item.key,), width="stretch")
    prefetch(files(ahead), state.view, thumb=True)


def main() -> None:
    """Open the store, sign in, then show the panel of the chosen mode."""
    st.set_page_config(page_title="Mask review", layout="wide")
    path = database()
    if not path:
        st.error("No review database: start the app with `pipeline review --db DB`.")
        return
    try:
        st.session_state.store = open_store(path)
    except ReviewStoreError as error:
        st.error(str(error))
        return
    if not sign_in():
        return
    with st.sidebar:
        st.write(f"Reviewer: **{st.session_state.annotator}**")
        grid = st.session_state.setdefault("grid", False)
        st.button("Single mode (G)" if grid else "Grid mode (G)", shortcut="G", on_click=switch_mode,
                  help="Grid: mark the bad thumbnails, then accept the rest with one key.")
        st.caption("Keys: 1-9 mark/unmark · A accept the unmarked · U undo · V view · G single mode" if grid else
                   "Keys: A accept · X reject · 1-6 reject with a reason · S skip · U undo · V view · G grid")
    (grid_panel if st.session_state.grid else single_panel)()


main()
