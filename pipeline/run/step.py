"""A step of ``pipeline run``, its fingerprint and its record: what decides whether it is skipped, resumed or rerun
(see :mod:`pipeline.run`)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinet_plus.errors import UserError
from sinet_plus.files import file_hash, write_text_atomic

RECORDS = ".run"
"""Folder under the run's output folder holding one JSON record per step."""

LOGS = "logs"
"""Folder under the run's output folder holding one log per subprocess step."""


class RunError(UserError):
    """A step failed or cannot start; the message names the step and where its log is."""


class WaitingForReview(Exception):
    """The run stopped because items wait for a human decision; the message says how to review them."""


@dataclass
class Step:
    """One unit of the run.

    Args:
        name: unique name, also the record's and the log's file name (``fullbody-crop``).
        title: what it does, for the summary table.
        outputs: files or folders that must exist for the step to count as done.
        command: argv of a stage command (run as a subprocess), or ``None`` for an in-process ``action``.
        action: in-process work returning a one-line note for the summary.
        inputs: external files and folders whose content decides the result.
        after: names of steps whose outputs this one reads (their fingerprints enter this one's).
        owns: files and folders removed before a rerun with another fingerprint (default: ``outputs``).
        resume: (flag, file): the flag is appended to ``command`` when an interrupted run of the same
            fingerprint is resumed and the file it resumes from exists (``("--resume", out / "last.pt")``).
        group: consecutive steps with the same group run at the same time (e.g. two trainings).
        state: extra values for the fingerprint, computed when the step is reached (e.g. review verdicts).
        note: one-line note for the summary when the step ran as a command (e.g. a figure from its output).
    """

    name: str
    title: str
    outputs: list[Path]
    command: list[str] | None = None
    action: Callable[[], str] | None = None
    inputs: list[Path] = field(default_factory=list)
    after: tuple[str, ...] = ()
    owns: list[Path] | None = None
    resume: tuple[str, Path] | None = None
    group: str | None = None
    state: Callable[[], Any] | None = None
    note: Callable[[], str] | None = None


@dataclass
class StepResult:
    """What happened to a step: ``ran``, ``resumed``, ``skipped`` (current), ``failed`` or ``waiting``."""

    name: str
    title: str
    status: str
    seconds: float = 0.0
    note: str = ""
    log: Path | None = None


# ---- fingerprints ----

def input_digest(path: Path) -> str:
    """A file's content hash; a folder's file names and content hashes, so data copied again or restored (new
    modification times, same bytes) leaves the steps that read it current."""
    if path.is_file():
        return file_hash(path)
    if path.is_dir():
        listing = sorted((str(p.relative_to(path)), file_hash(p, 16)) for p in path.rglob("*") if p.is_file())
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    raise RunError(f"{path}: input not found")


def fingerprint(step: Step, upstream: dict[str, str]) -> str:
    """The step's fingerprint: its command or name, input digests, upstream fingerprints and extra state."""
    payload = {"command": step.command or step.name,
               "inputs": {str(p): input_digest(p) for p in step.inputs},
               "after": {name: upstream[name] for name in step.after},
               "state": step.state() if step.state else None}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- records ----

def read_record(out: Path, name: str) -> dict | None:
    """The step's last record, or ``None`` (never started, or an unreadable record)."""
    try:
        return json.loads((out / RECORDS / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def write_record(out: Path, name: str, **fields: Any) -> None:
    write_text_atomic(out / RECORDS / f"{name}.json", json.dumps(fields, indent=2, default=str) + "\n")


def plan_state(step: Step, record: dict | None, print_: str) -> str:
    """``skip``, ``resume`` or ``fresh`` for a step whose current fingerprint is ``print_``."""
    if record is None or record.get("fingerprint") != print_:
        return "fresh"
    if record.get("status") == "done" and all(p.exists() for p in step.outputs):
        return "skip"
    return "resume"


def remove(paths: Sequence[Path]) -> None:
    """Delete files and folders a step owns (before rerunning it with another fingerprint)."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
