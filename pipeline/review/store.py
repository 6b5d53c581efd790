"""The review store: a SQLite database that hands items to annotators and records their decisions.

Why SQLite: it is embedded (no server to run), and in WAL mode many readers and one writer work at
once across processes. Every write is one short ``BEGIN IMMEDIATE`` transaction, so a decision is either
fully recorded or not at all, and an app killed mid-session loses nothing it had confirmed.

Concepts:

- **item**: one photo with its mask, keyed by its manifest id; ``needed`` says how many people must
  decide it (2 for the double-review share), ``gold`` marks known-good or damaged control copies;
- **lease**: an item held by one annotator until ``expires_at``; an expired lease is given to the next
  person who asks, a live one never is, so two people never review one single-review item at once;
- **decision**: ``accept``, ``reject`` (with an optional reason code) or ``skip`` by an annotator, with the
  time it was shown, the time it was decided and the seconds spent; ``undo`` marks one's own latest
  decision undone (kept for the record) and gives the item back to the same person.

The schema is versioned with SQLite's ``user_version``; :mod:`pipeline.review.schema` upgrades older databases
in place when they are opened, in one transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.review.schema import SCHEMA_VERSION, migrate
from sinet_plus.errors import UserError

DECISIONS = ("accept", "reject", "skip")
"""What an annotator can decide; ``skip`` passes the item on to someone else."""

REASONS: dict[str, str] = {
    "edge": "boundary rough or off the person's outline",
    "missing": "part of the person is missing",
    "extra": "background is included as person",
    "person": "wrong or extra person segmented",
    "photo": "not a usable portrait photo",
    "other": "another problem",
}
"""Reject reason codes and what they mean (the app puts them on the number keys in this order)."""

GOLD_EXPECTED = {"good": "accept", "eroded": "reject", "dilated": "reject", "shifted": "reject",
                 "chunk": "reject"}
"""Gold kinds and the decision a careful annotator makes on them."""

LEASE_SECONDS = 600.0
"""How long an item stays with the annotator who was given it (renewed whenever the app asks again)."""

UNDO_SECONDS = 600.0
"""How far back an annotator may undo their own decisions."""

class ReviewStoreError(UserError):
    """A review database that cannot be used, or a request it refuses; the message says why."""


class DecisionRefused(ReviewStoreError):
    """A decision that was not recorded (already decided in another tab, or the lease went to someone else)."""


@dataclass(frozen=True)
class Item:
    """An item handed to an annotator: its key, files (relative to the data root) and gold kind."""

    key: str
    image: str
    mask: str
    gold: str | None = None


@dataclass(frozen=True)
class NewItem:
    """An item to add to the queue.

    Args:
        key: the manifest id (unique in the store; adding it again is a no-op).
        image: photo path relative to the data root.
        mask: mask path relative to the data root.
        rank: queue position; lower ranks are handed out first.
        row: the manifest row (paths relative to the data root), given back by the export.
        manifest: which manifest the item came from, for the record.
        needed: how many annotators must decide it (2 = double review).
        gold: ``None`` for a real item, else a key of :data:`GOLD_EXPECTED`.
    """

    key: str
    image: str
    mask: str
    rank: float = 0.0
    row: dict | None = None
    manifest: str = ""
    needed: int = 1
    gold: str | None = None


@dataclass(frozen=True)
class Progress:
    """Queue state for one annotator.

    Args:
        total: reviews the queue needs in all (items times reviews each).
        done: reviews recorded (skips and undone decisions excluded).
        mine: decisions of this annotator that count.
        seconds_per_item: this annotator's median seconds per decision (``None`` before the first).
        leased_by_others: items others hold right now.
    """

    total: int
    done: int
    mine: int
    seconds_per_item: float | None
    leased_by_others: int


class Store:
    """One connection to a review database; safe to share between threads of one process.

    Args:
        path: the SQLite file.
        create: create the file when it does not exist (``pipeline queue`` does; the app does not).
        clock: seconds since the epoch; tests pass their own to age leases without sleeping.
        busy_seconds: how long a writer waits for another process's transaction before giving up.
        durable: flush every commit to the disk (``synchronous=FULL``), so even a power cut keeps every
            confirmed decision; ``False`` (``NORMAL``) still survives a killed process and is much faster per
            commit on a slow disk (docs/review.md), but the last commits may be lost if the machine goes down.
    """

    def __init__(self, path: str | os.PathLike, create: bool = False, clock: Callable[[], float] = time.time,
                 busy_seconds: float = 30.0, durable: bool = True):
        self.path = Path(path)
        self.clock = clock
        if not create and not self.path.is_file():
            raise ReviewStoreError(f"{self.path}: no review database here (create one with `pipeline queue`)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = None
        try:
            self._db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode={'rwc' if create else 'rw'}",
                                       uri=True, timeout=busy_seconds, isolation_level=None,
                                       check_same_thread=False)
            self._check_ownership(create)
            self._enter_wal(busy_seconds)
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (sqlite3.DatabaseError, ReviewStoreError) as error:
            if self._db is not None:
                self._db.close()
            if isinstance(error, ReviewStoreError):
                raise
            raise ReviewStoreError(f"{self.path}: not a usable review database ({error})") from None

    def _enter_wal(self, busy_seconds: float) -> None:
        """Switch to write-ahead logging. SQLite answers a switch that races another connection's with "database
        is locked" at once, without its busy timeout (two `pipeline queue` creating one database did), so the
        switch is retried for up to ``busy_seconds``."""
        deadline = time.monotonic() + busy_seconds
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _check_ownership(self, create: bool) -> None:
        """Refuse, before anything is written, a file that is not a review database of ours: a foreign SQLite
        file, an empty one (unless creating), a newer schema, or damaged pages. Reads only, so the file is left
        exactly as it was."""
        # one statement, one snapshot: another process may create the schema between two reads
        version, tables = self._db.execute("SELECT user_version, (SELECT count(*) FROM sqlite_master) "
                                           "FROM pragma_user_version").fetchone()
        if version == 0 and tables:
            raise ReviewStoreError(f"{self.path}: an SQLite file, but not a review database; left untouched")
        if version == 0 and not create:
            raise ReviewStoreError(f"{self.path}: an empty file, not a review database (create one with "
                                   "`pipeline queue`); left untouched")
        if version > SCHEMA_VERSION:
            raise ReviewStoreError(f"{self.path}: schema version {version} is newer than this program's "
                                   f"{SCHEMA_VERSION}; update sinet-plus to open it")
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise ReviewStoreError(damaged(self.path, problems[0].splitlines()[-1]))

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- schema -----------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The schema version of the open database."""
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        with self._write():
            version = self.version
            if version > SCHEMA_VERSION:
                raise ReviewStoreError(f"{self.path}: schema version {version} is newer than this program's "
                                       f"{SCHEMA_VERSION}; update sinet-plus to open it")
            if version == 0 and self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise ReviewStoreError(f"{self.path}: an SQLite file, but not a review database")
            migrate(self._db, SCHEMA_VERSION, in_transaction=True)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that takes the database's write lock at once (no upgrade deadlocks)."""
        with self._lock, self._damage_named():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._lock, self._damage_named():
            return self._db.execute(sql, params).fetchall()

    def _frame(self, sql: str, dtype: dict[str, type]) -> pd.DataFrame:
        with self._lock, self._damage_named():
            return pd.read_sql_query(sql, self._db, dtype=dtype)

    @contextmanager
    def _damage_named(self) -> Iterator[None]:
        """Turn SQLite's damage errors (pages spoilt after the store was opened) into a :class:`ReviewStoreError`
        naming the file."""
        try:
            yield
        except sqlite3.DatabaseError as error:
            if isinstance(error, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.OperationalError)):
                raise
            raise ReviewStoreError(damaged(self.path, str(error))) from None

    # --- settings ---------------------------------------------------------------------------------

    def setting(self, key: str, default: str | None = None) -> str | None:
        """A stored setting (e.g. ``data_root``), or ``default``."""
        rows = self._read("SELECT value FROM settings WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    @property
    def data_root(self) -> Path:
        """The folder every served file must be under (set by the first ``pipeline queue``)."""
        root = self.setting("data_root")
        if root is None:
            raise ReviewStoreError(f"{self.path}: the queue has no data root yet (queue a manifest first)")
        return Path(root)

    def resolve(self, relative: str) -> Path:
        """The file behind an item path, refusing anything that resolves outside the data root."""
        root = self.data_root.resolve()
        path = (root / relative).resolve()
        if not path.is_relative_to(root):
            raise ReviewStoreError(f"{relative}: outside the data root {root}; refusing to serve it")
        return path

    # --- queue ------------------------------------------------------------------------------------

    def add_items(self, items: Iterable[NewItem], data_root: str | os.PathLike | None = None) -> int:
        """Add items whose key is new; return how many were added (known keys are left as they are).

        Args:
            items: the items, their paths relative to ``data_root``.
            data_root: the folder the items' paths are relative to. In the same transaction as the insert, it
                becomes the store's data root when there is none yet, and must equal the stored one when there
                is: two queues started at once on a new database cannot both set it.

        Raises:
            ReviewStoreError: ``data_root`` differs from the store's (nothing is added).
        """
        now = self.clock()
        rows = [(i.key, i.image, i.mask, i.rank, json.dumps(i.row or {}), i.manifest, now, i.needed, i.gold)
                for i in items]
        with self._write() as db:
            if data_root is not None:
                wanted = str(Path(data_root).resolve())
                stored = db.execute("SELECT value FROM settings WHERE key = 'data_root'").fetchone()
                if stored is not None and stored[0] != wanted:
                    raise ReviewStoreError(f"{self.path}: its data root is {stored[0]}; these items' paths are "
                                           f"relative to {wanted}, so nothing was added (queue them into "
                                           "another database, or under the stored root)")
                if stored is None and rows:
                    db.execute("INSERT INTO settings(key, value) VALUES ('data_root', ?)", (wanted,))
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO items(key, image, mask, rank, row, manifest, added_at, needed, "
                           "gold) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            return db.total_changes - before

    def keys(self) -> set[str]:
        """Keys of every item in the store."""
        return {row[0] for row in self._read("SELECT key FROM items")}

    def lease(self, annotator: str, count: int = 1, seconds: float = LEASE_SECONDS) -> list[Item]:
        """Up to ``count`` items for ``annotator``: the ones they hold (renewed once half expired) first, then new ones.

        An item is offered when it still needs reviews that nobody holds a live lease for, and this
        annotator has neither decided nor skipped it. Expired leases of others on it are dropped.
        """
        annotator = _name(annotator)
        now = self.clock()
        with self._write() as db:
            db.execute("UPDATE leases SET expires_at = ? WHERE annotator = ? AND expires_at < ?",
                       (now + seconds, annotator, now + seconds / 2))  # renew when half gone: fewer disk writes
            held = db.execute("SELECT item FROM leases WHERE annotator = ? ORDER BY position LIMIT ?",
                              (annotator, count)).fetchall()
            wanted = count - len(held)
            fresh = []
            if wanted > 0:
                fresh = db.execute(
                    """SELECT i.id, i.rank FROM items i
                       WHERE i.done < i.needed
                         AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.item = i.id AND d.annotator = ?
                                         AND d.undone_at IS NULL)
                         AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.item = i.id AND l.annotator = ?)
                         AND i.done + (SELECT count(*) FROM leases l WHERE l.item = i.id
                                       AND l.expires_at > ?) < i.needed
                       ORDER BY i.rank, i.id LIMIT ?""", (annotator, annotator, now, wanted)).fetchall()
                for item, rank in fresh:
                    db.execute("DELETE FROM leases WHERE item = ? AND expires_at <= ?", (item, now))
                    db.execute("INSERT INTO leases(item, annotator, expires_at, position) VALUES (?, ?, ?, ?)",
                               (item, annotator, now + seconds, rank))
            ids = [row[0] for row in held] + [row[0] for row in fresh]
            return self._items(db, ids)

    @staticmethod
    def _items(db: sqlite3.Connection, ids: Sequence[int]) -> list[Item]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        found = {row[0]: Item(*row[1:]) for row in
                 db.execute(f"SELECT id, key, image, mask, gold FROM items WHERE id IN ({marks})", ids)}
        return [found[i] for i in ids]

    def release(self, annotator: str, key: str) -> None:
        """Give a held item back to the queue without deciding it."""
        with self._write() as db:
            db.execute("DELETE FROM leases WHERE annotator = ? AND item = (SELECT id FROM items WHERE key = ?)",
                       (_name(annotator), key))

    def decide(self, annotator: str, key: str, decision: str, reason: str | None = None,
               shown_at: float | None = None) -> float:
        """Record one decision in its own transaction and return its time.

        Raises :class:`DecisionRefused` (nothing recorded) when this annotator already decided the item
        (another tab) or their lease expired and the item's reviews are now held or done by others.

        Args:
            annotator: who decides.
            key: the item's key.
            decision: one of :data:`DECISIONS`.
            reason: reject reason code (free text is kept as given; codes are in :data:`REASONS`).
            shown_at: when the item was shown, to record the seconds spent.
        """
        annotator = _name(annotator)
        if decision not in DECISIONS:
            raise ReviewStoreError(f"unknown decision {decision!r} (use one of {', '.join(DECISIONS)})")
        now = self.clock()
        with self._write() as db:
            row = db.execute("SELECT id, done, needed FROM items WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise DecisionRefused(f"{key}: no such item in {self.path}")
            item, done, needed = row
            if db.execute("SELECT 1 FROM decisions WHERE item = ? AND annotator = ? AND undone_at IS NULL",
                          (item, annotator)).fetchone():
                raise DecisionRefused(f"{key}: already decided by {annotator} (in another tab?); not recorded again")
            held = db.execute("SELECT 1 FROM leases WHERE item = ? AND annotator = ?", (item, annotator)).fetchone()
            others = db.execute("SELECT count(*) FROM leases WHERE item = ? AND annotator != ? AND expires_at > ?",
                                (item, annotator, now)).fetchone()[0]
            if done >= needed or (not held and done + others >= needed):
                raise DecisionRefused(f"{key}: your hold on it expired and it went to another annotator; "
                                      "not recorded")
            seconds = None if shown_at is None else max(0.0, now - shown_at)
            db.execute("INSERT INTO decisions(item, annotator, decision, reason, shown_at, decided_at, seconds) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (item, annotator, decision, reason, shown_at, now, seconds))
            if decision != "skip":
                db.execute("UPDATE items SET done = done + 1 WHERE id = ?", (item,))
            db.execute("DELETE FROM leases WHERE item = ? AND annotator = ?", (item, annotator))
        return now

    def undo(self, annotator: str, seconds: float = UNDO_SECONDS) -> Item | None:
        """Undo ``annotator``'s latest decision of the last ``seconds`` and lease the item back to them first.

        Returns the item, or ``None`` when there is nothing recent to undo.
        """
        annotator = _name(annotator)
        now = self.clock()
        with self._write() as db:
            row = db.execute("SELECT id, item, decision FROM decisions WHERE annotator = ? AND undone_at IS NULL "
                             "AND decided_at >= ? ORDER BY id DESC LIMIT 1", (annotator, now - seconds)).fetchone()
            if row is None:
                return None
            decision_id, item, decision = row
            db.execute("UPDATE decisions SET undone_at = ? WHERE id = ?", (now, decision_id))
            if decision != "skip":
                db.execute("UPDATE items SET done = done - 1 WHERE id = ?", (item,))
            first = db.execute("SELECT min(position) FROM leases WHERE annotator = ?", (annotator,)).fetchone()[0]
            db.execute("INSERT OR REPLACE INTO leases(item, annotator, expires_at, position) VALUES (?, ?, ?, ?)",
                       (item, annotator, now + LEASE_SECONDS, min(first or 0.0, 0.0) - 1.0))
            return self._items(db, [item])[0]

    # --- reading ----------------------------------------------------------------------------------

    def progress(self, annotator: str) -> Progress:
        """The queue's state as ``annotator`` sees it."""
        annotator = _name(annotator)
        total, done = self._read("SELECT coalesce(sum(needed), 0), coalesce(sum(min(done, needed)), 0) "
                                 "FROM items")[0]
        seconds = [row[0] for row in self._read(
            "SELECT seconds FROM decisions WHERE annotator = ? AND undone_at IS NULL AND seconds IS NOT NULL "
            "ORDER BY id DESC LIMIT 200", (annotator,))]
        mine = self._read("SELECT count(*) FROM decisions WHERE annotator = ? AND undone_at IS NULL "
                          "AND decision != 'skip'", (annotator,))[0][0]
        others = self._read("SELECT count(DISTINCT item) FROM leases WHERE annotator != ? AND expires_at > ?",
                            (annotator, self.clock()))[0][0]
        median = float(pd.Series(seconds).median()) if seconds else None
        return Progress(int(total), int(done), int(mine), median, int(others))

    def undecided(self) -> list[tuple[str, dict]]:
        """Real (not gold) items that still need a decision, in the order they were queued: ``(key, row)`` with
        the item's manifest row."""
        rows = self._read("SELECT key, row FROM items WHERE done < needed AND gold IS NULL ORDER BY id")
        return [(key, json.loads(row)) for key, row in rows]

    def items_frame(self) -> pd.DataFrame:
        """Every item: key, image, mask, rank, done, needed, gold, manifest and its manifest row (dict)."""
        frame = self._frame("SELECT id, key, image, mask, rank, done, needed, gold, manifest, row "
                            "FROM items ORDER BY id", dtype={"key": str})
        frame["row"] = [json.loads(r) for r in frame["row"]]
        return frame

    def decisions_frame(self, include_undone: bool = False) -> pd.DataFrame:
        """Every decision joined with its item's key and gold kind, oldest first."""
        where = "" if include_undone else "WHERE d.undone_at IS NULL"
        return self._frame(
            f"""SELECT d.id, i.key, i.gold, i.needed, d.annotator, d.decision, d.reason, d.shown_at,
                       d.decided_at, d.seconds, d.undone_at
                FROM decisions d JOIN items i ON i.id = d.item {where} ORDER BY d.id""",
            dtype={"key": str, "reason": str})


def damaged(path: Path, detail: str) -> str:
    """The message for a review database with damaged pages."""
    return (f"{path}: the review database is damaged ({detail}); restore it from a backup, or save what can "
            f"be read with `sqlite3 {path} .recover | sqlite3 recovered.sqlite`")


def _name(annotator: str) -> str:
    name = annotator.strip()
    if not name:
        raise ReviewStoreError("an annotator name is needed")
    return name
