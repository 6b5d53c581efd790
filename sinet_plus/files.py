"""Files: atomic writes (a reader sees either the old file or the complete new one, never half of it) and content
hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The temporary file lives in the same folder (same file system, so ``os.replace`` is atomic) and keeps
    the target's suffix, so libraries that pick a format from the extension still do. On error it is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def remove_leftovers(folder: str | os.PathLike) -> int:
    """Delete the temporaries that :func:`atomic_path` leaves in ``folder`` and its subfolders when its process
    is killed.

    Call it only while no other process writes into ``folder``; returns how many files were removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    leftovers = [p for p in folder.rglob(".*.tmp*") if p.is_file()]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def file_hash(path: str | os.PathLike, length: int = 64) -> str:
    """SHA-256 of a file's bytes as hex, cut to its first ``length`` digits.

    Args:
        path: the file.
        length: hex digits kept (64 = the whole digest).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]
