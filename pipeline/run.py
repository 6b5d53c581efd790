"""`pipeline run`: one command from photos to a trained and evaluated SINet, each stage skipped when current.

The orchestrator is deliberately thin. It turns a TOML config (:mod:`pipeline.run_config`) into a list of
:class:`Step` s and runs them in order:

- the heavy stages (``crop-baidu``, ``train-teacher``, ``pseudo-label``, ``sinet predict/train/eval``) run as
  **subprocesses of their own commands**. The commands are the stages' contracts, so the orchestrator adds no
  second way to call them; each keeps its own option parsing, error messages, progress and resume logic; and a
  subprocess per stage gives every stage its own thread setting and frees its memory (a teacher, MTCNN and two
  SINet trainings never share one Python heap). Starting a command costs ~2 s, nothing next to the stages.
- the cheap review steps (queue, auto-accept, export) run **in process** on the review store's Python core:
  they are a few SQLite transactions, and auto-accept has no command of its own.

**Skipping.** Each step has a fingerprint: SHA-256 over its command (or its settings), the content of its
external inputs (file bytes; a folder's names, sizes and modification times) and the fingerprints of the steps
it reads from. A record ``<out>/.run/<step>.json`` is written when the step starts (``running``) and when it
succeeds (``done``). A step is skipped when its record is ``done`` with the same fingerprint and its outputs
exist; a ``running`` record with the same fingerprint means an interrupted run, so the step is resumed (its
command's ``--resume`` flag where it has one; the per-item stages resume by themselves); a different fingerprint
removes the step's own outputs first, so stale partial results are never mixed with new ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from sinet_plus.errors import UserError
from sinet_plus.files import write_text_atomic

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

def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_digest(path: Path) -> str:
    """A file's content hash; a folder's names, sizes and modification times (photos are not re-read)."""
    if path.is_file():
        return file_digest(path)
    if path.is_dir():
        listing = sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                         for p in path.rglob("*") if p.is_file())
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


# ---- execution ----

class Runner:
    """Runs steps in order with skipping, logs and records.

    Args:
        out: the run's output folder (records in ``.run/``, subprocess logs in ``logs/``).
        env: environment of the subprocesses (e.g. ``OMP_NUM_THREADS``).
        console: where progress and notes go.
        force: rerun every step (records are ignored).
    """

    def __init__(self, out: Path, env: dict[str, str], console: Console, force: bool = False):
        self.out, self.env, self.console, self.force = out, env, console, force
        self.fingerprints: dict[str, str] = {}
        self.results: list[StepResult] = []

    def run(self, steps: Sequence[Step]) -> list[StepResult]:
        """Run every step; stops at the first failure (:class:`RunError`) or review wait."""
        index = 0
        while index < len(steps):
            batch = [steps[index]]
            while (batch[0].group and index + len(batch) < len(steps)
                   and steps[index + len(batch)].group == batch[0].group):
                batch.append(steps[index + len(batch)])
            index += len(batch)
            pending = [(step, how) for step in batch if (how := self._prepare(step)) is not None]
            if len(pending) > 1:
                self._run_together(pending)
            else:
                for step, how in pending:
                    self._run_one(step, how)
        return self.results

    def _prepare(self, step: Step) -> str | None:
        """Fingerprint the step; record a skip and return ``None``, or return ``fresh``/``resume``."""
        print_ = fingerprint(step, self.fingerprints)
        self.fingerprints[step.name] = print_
        how = "fresh" if self.force else plan_state(step, read_record(self.out, step.name), print_)
        if how == "skip":
            note = step.note() if step.note else ""
            self.results.append(StepResult(step.name, step.title, "skipped", note=note))
            self.console.print(f"[dim]✓ {step.name}: current, skipped[/]")
            return None
        if how == "fresh":
            remove(step.owns if step.owns is not None else step.outputs)
        write_record(self.out, step.name, status="running", fingerprint=print_, command=step.command,
                     started=time.time())
        return how

    def _argv(self, step: Step, how: str) -> list[str]:
        resuming = how == "resume" and step.resume is not None and step.resume[1].exists()
        return step.command + ([step.resume[0]] if resuming else [])

    def _finish(self, step: Step, how: str, started: float, log: Path | None, note: str = "") -> None:
        seconds = time.time() - started
        write_record(self.out, step.name, status="done", fingerprint=self.fingerprints[step.name],
                     command=step.command, seconds=round(seconds, 1), finished=time.time())
        if step.note:
            note = step.note()
        self.results.append(StepResult(step.name, step.title, "resumed" if how == "resume" else "ran", seconds,
                                       note, log))

    def _fail(self, step: Step, started: float, log: Path | None, message: str) -> RunError:
        self.results.append(StepResult(step.name, step.title, "failed", time.time() - started, message, log))
        return RunError(f"step {step.name} failed: {message}" + (f" (log: {log})" if log else ""))

    def _run_one(self, step: Step, how: str) -> None:
        self.console.rule(f"[bold]{step.name}[/] — {step.title}" + (" (resuming)" if how == "resume" else ""))
        started = time.time()
        if step.command is None:
            try:
                note = step.action()
            except WaitingForReview as waiting:
                self.results.append(StepResult(step.name, step.title, "waiting", time.time() - started,
                                               str(waiting)))
                raise
            except (UserError, OSError) as error:
                raise self._fail(step, started, None, str(error)) from error
            except Exception:  # a bug: recorded as a failure, then shown with its traceback
                self._fail(step, started, None, "unexpected error (traceback below)")
                raise
            self._finish(step, how, started, None, note)
            return
        log = self.out / LOGS / f"{step.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = self._argv(step, how)
        self.console.print(f"[dim]$ {' '.join(argv)}[/]")
        with open(log, "w") as sink:
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env,
                                       text=True, bufsize=1)
            for line in process.stdout:
                sink.write(line)
                sink.flush()
                self.console.out(line.rstrip("\n"), highlight=False)
            code = process.wait()
        if code != 0:
            raise self._fail(step, started, log, f"exit code {code}: {last_line(log)}")
        self._finish(step, how, started, log)

    def _run_together(self, pending: list[tuple[Step, str]]) -> None:
        """Start the steps at once (each logging to its file) and wait for all; live last lines meanwhile."""
        names = ", ".join(step.name for step, _ in pending)
        self.console.rule(f"[bold]{names}[/] — at the same time")
        started = time.time()
        running = []
        for step, how in pending:
            log = self.out / LOGS / f"{step.name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            argv = self._argv(step, how)
            self.console.print(f"[dim]$ {' '.join(argv)}\n  log: {log}[/]")
            running.append((step, how, log, subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                                             env=self.env)))
        with Live(console=self.console, refresh_per_second=1, transient=True) as live:
            while any(process.poll() is None for *_, process in running):
                live.update(Text("\n".join(f"{step.name} [{time.time() - started:.0f} s]: {last_line(log)}"
                                           for step, _, log, _ in running)))
                time.sleep(2)
        failures = []
        for step, how, log, process in running:
            if process.returncode == 0:
                self._finish(step, how, started, log)
            else:
                failures.append(self._fail(step, started, log, f"exit code {process.returncode}: {last_line(log)}"))
        if failures:
            raise failures[0]


def last_line(log: Path) -> str:
    """The last non-empty line of a log (progress bars write carriage returns: their last state)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    lines = [part for line in text.splitlines() for part in line.split("\r") if part.strip()]
    return lines[-1].strip()[:160] if lines else ""


def command(name: str) -> list[str]:
    """argv start of a console script of this installation (``pipeline`` or ``sinet``)."""
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [name]


def options_argv(options: dict[str, Any]) -> list[str]:
    """Command-line options from a config table: ``{"time-budget": 30, "flip": False}`` →
    ``--time-budget 30 --no-flip``; lists repeat the option; ``True`` gives the bare flag."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv


def subprocess_env(threads: int | None) -> dict[str, str]:
    """The environment of stage commands: unbuffered output, and ``threads`` for OpenMP/MKL when given."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env
