"""The review store's schema: SQL steps that bring a database from one version (SQLite's ``user_version``) to the
next, applied in one transaction when :class:`pipeline.review.store.Store` opens an older database."""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: items, leases and plain decisions
    """
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        image TEXT NOT NULL,
        mask TEXT NOT NULL,
        rank REAL NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0,
        row TEXT NOT NULL DEFAULT '{}',
        manifest TEXT NOT NULL DEFAULT '',
        added_at REAL NOT NULL
    );
    CREATE TABLE leases (
        item INTEGER NOT NULL REFERENCES items(id),
        annotator TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (item, annotator)
    );
    CREATE TABLE decisions (
        id INTEGER PRIMARY KEY,
        item INTEGER NOT NULL REFERENCES items(id),
        annotator TEXT NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('accept', 'reject', 'skip')),
        decided_at REAL NOT NULL
    );
    CREATE INDEX decisions_by_annotator ON decisions(annotator, item);
    """,
    # 2: reasons, timing and undo; double review and gold items; lease order
    """
    ALTER TABLE decisions ADD COLUMN reason TEXT;
    ALTER TABLE decisions ADD COLUMN shown_at REAL;
    ALTER TABLE decisions ADD COLUMN seconds REAL;
    ALTER TABLE decisions ADD COLUMN undone_at REAL;
    ALTER TABLE items ADD COLUMN needed INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE items ADD COLUMN gold TEXT;
    ALTER TABLE leases ADD COLUMN position REAL NOT NULL DEFAULT 0;
    CREATE INDEX items_open ON items(rank, id) WHERE done < needed;
    CREATE INDEX decisions_by_item ON decisions(item);
    """,
)
"""SQL that brings a database from version ``i`` to ``i + 1``; never edit a released step, append one."""

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection, target: int = SCHEMA_VERSION, in_transaction: bool = False) -> None:
    """Apply :data:`MIGRATIONS` from the database's version up to ``target``.

    Args:
        db: an open connection (autocommit mode).
        target: the version to reach; tests build older databases with a lower one.
        in_transaction: the caller already holds a write transaction (else one is opened here).
    """
    if not in_transaction:
        db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for step in range(version, target):
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {step + 1}")
    except BaseException:
        if not in_transaction:
            db.execute("ROLLBACK")
        raise
    if not in_transaction:
        db.execute("COMMIT")
