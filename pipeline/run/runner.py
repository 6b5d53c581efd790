"""Runs the steps of ``pipeline run`` in order: skips the current ones, resumes interrupted ones, logs each
subprocess, and records every step (see :mod:`pipeline.run`)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.text import Text

from pipeline.run.step import (
    LOGS,
    RunError,
    Step,
    StepResult,
    WaitingForReview,
    fingerprint,
    plan_state,
    read_record,
    remove,
    write_record,
)
from sinet_plus.errors import UserError
from sinet_plus.processes import start_child


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
            process = start_child(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env, text=True,
                                  bufsize=1)
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
            running.append((step, how, log, start_child(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT,
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


def subprocess_env(threads: int | None) -> dict[str, str]:
    """The environment of stage commands: unbuffered output, and ``threads`` for OpenMP/MKL when given."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env
