"""The review store (SQLite), queueing, export and review statistics."""
