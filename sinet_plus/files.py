"""Files: atomic writes (a reader sees either the old file or the complete new one, never half of it) and content
hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

NEW_FILE_MODE = 0o666
"""Mode asked for when a file is created; the process's umask takes its bits away, as for ``open(path, "w")``."""


def _create_temporary(target: Path) -> Path:
    """A new empty file beside ``target`` with a random name, readable as the umask allows.

    ``tempfile.mkstemp`` would give mode 0600 whatever the umask, so another account (a trainer, a reviewer's
    service) could not read a manifest or a crop after the rename.
    """
    while True:
        tmp = target.parent / f".{target.stem}.{secrets.token_hex(4)}.tmp{target.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The temporary file lives in the same folder (same file system, so ``os.replace`` is atomic) and keeps
    the target's suffix, so libraries that pick a format from the extension still do. It is created with the
    permissions of any new file (0666 less the umask). On error it is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(target)
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
