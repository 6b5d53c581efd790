"""The one way to run a stage: plan, process, write atomically, journal, report.

A stage hands :func:`run_stage` its items (a unique key and a payload each) and a function that processes a
list of pending items and yields one :class:`Outcome` per item, in any order. The runner skips items finished
by an earlier run, journals every outcome as soon as it arrives (an append-only JSON-lines file, fsynced, so a
killed run loses at most the item in flight), shows progress, and at the end rebuilds ``manifest.csv`` and
``skipped.csv`` from the journal, sorted by key, so a resumed run writes exactly what an unbroken run writes.
Item files must be written atomically (sinet_plus.files) by the stage before it yields the outcome; the runner
removes the temporaries a killed run left anywhere under the output folder before it starts.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sinet_plus.errors import UserError
from sinet_plus.files import atomic_path, remove_leftovers, write_text_atomic
from sinet_plus.imageio import ImageReadError
from sinet_plus.manifest import new_rows, write_manifest

console = Console(stderr=True)

ERROR_REASON = "error"
"""Skip reason for unexpected exceptions; these items are retried by the next run."""


@dataclass
class Outcome:
    """What processing one item produced: manifest rows, or skips with their reasons."""

    key: str
    rows: list[dict] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)

    @classmethod
    def skipped(cls, key: str, reason: str, detail: str = "", **extra: Any) -> Outcome:
        """An item that produced nothing, with a short reason code and a human-readable detail."""
        return cls(key, skips=[{"key": key, "reason": reason, "detail": detail, **extra}])

    @property
    def failed(self) -> bool:
        return any(s["reason"] == ERROR_REASON for s in self.skips)

    def to_json(self) -> str:
        """One line of JSON (NumPy scalars and paths become plain values): how outcomes are journaled and how
        they travel between processes."""
        return json.dumps(asdict(self), default=_json_default)

    @classmethod
    def from_json(cls, line: str) -> Outcome:
        """The outcome :meth:`to_json` wrote."""
        return cls(**json.loads(line))


def guarded(process: Callable[[Any], Outcome], key: str, payload: Any) -> Outcome:
    """Run ``process`` on one item, turning an exception into a recorded skip instead of a crash."""
    try:
        return process(payload)
    except ImageReadError as error:
        return Outcome.skipped(key, "unreadable", str(error))
    except Exception as error:  # one bad item must not end the run
        detail = f"{type(error).__name__}: {error} | {traceback.format_exc(limit=-2).strip().splitlines()[-3]}"
        return Outcome.skipped(key, ERROR_REASON, detail)


class Journal:
    """Append-only record of finished items: the resume point of a stage."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def load(self) -> dict[str, Outcome]:
        """Outcomes recorded so far by key (later lines win; a torn last line from a kill is ignored)."""
        outcomes: dict[str, Outcome] = {}
        if not self.path.exists():
            return outcomes
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                outcome = Outcome.from_json(line)
            except json.JSONDecodeError:
                continue
            outcomes[outcome.key] = outcome
        return outcomes

    def append(self, outcome: Outcome) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = outcome.to_json() + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def rewrite(self, outcomes: Iterable[Outcome]) -> None:
        """Replace the journal (used to drop failed items before a retry)."""
        write_text_atomic(self.path, "".join(o.to_json() + "\n" for o in outcomes))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in the journal")


@dataclass
class StageSummary:
    """What a stage run did, for the closing report and for tests."""

    name: str
    planned: int
    done_before: int
    processed: int
    rows: int
    skipped: dict[str, int]
    seconds: float
    manifest: Path
    skipped_file: Path

    @property
    def items_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def print(self) -> None:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self.skipped.items())) or "none"
        console.print(
            f"[bold]{self.name}[/]: {self.planned} items, {self.done_before} done before, "
            f"{self.processed} processed in {self.seconds:.1f} s ({self.items_per_second:.2f}/s); "
            f"{self.rows} manifest rows; skipped: {reasons}\n"
            f"  manifest: {self.manifest}\n  skipped:  {self.skipped_file}")


def run_stage(name: str, items: Sequence[tuple[str, Any]],
              execute: Callable[[list[tuple[str, Any]]], Iterator[Outcome]], out_dir: str | os.PathLike,
              retry_failed: bool = True, finish_rows: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
              ) -> StageSummary:
    """Run a stage over ``items`` resumably and write ``out_dir/manifest.csv`` and ``out_dir/skipped.csv``.

    Args:
        name: the stage's name, shown in progress and summary.
        items: ``(key, payload)`` pairs; keys are unique and stable across runs (e.g. the photo's stem).
        execute: processes a list of pending items, yielding one :class:`Outcome` per item in any order.
        out_dir: the stage's output folder; the journal lives in it as ``.journal.jsonl``.
        retry_failed: redo items whose earlier outcome was an unexpected error.
        finish_rows: optional last touch on the manifest table (e.g. a score over all rows) before writing.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = [key for key, _ in items]
    if len(set(keys)) != len(keys):
        duplicated = sorted(k for k, n in Counter(keys).items() if n > 1)
        raise UserError(f"{name}: duplicate item keys {duplicated[:5]} (e.g. two photos with the same stem)")
    remove_leftovers(out_dir)  # temporaries of a run killed mid-write
    journal = Journal(out_dir / ".journal.jsonl")
    outcomes = journal.load()
    if retry_failed and any(o.failed for o in outcomes.values()):
        outcomes = {k: o for k, o in outcomes.items() if not o.failed}
        journal.rewrite(outcomes.values())
    wanted = set(keys)
    done_before = sum(1 for k in outcomes if k in wanted)
    pending = [(key, payload) for key, payload in items if key not in outcomes]
    start = time.perf_counter()
    processed = 0
    with Progress(TextColumn(f"[bold]{name}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False, disable=not pending) as progress:
        task = progress.add_task(name, total=len(items), completed=done_before)
        if pending:
            for outcome in execute(pending):
                journal.append(outcome)
                outcomes[outcome.key] = outcome
                processed += 1
                progress.advance(task)
    seconds = time.perf_counter() - start
    finished = [outcomes[k] for k in sorted(wanted & outcomes.keys())]
    rows = [row for outcome in finished for row in outcome.rows]
    table = new_rows(rows) if rows else new_rows([])
    if finish_rows is not None and len(table):
        table = finish_rows(table)
    manifest_path = write_manifest(table, out_dir / "manifest.csv")
    skips = [skip for outcome in finished for skip in outcome.skips]
    skipped_path = out_dir / "skipped.csv"
    skip_table = pd.DataFrame(skips, columns=None if skips else ["key", "reason", "detail"])
    with atomic_path(skipped_path) as tmp:
        skip_table.to_csv(tmp, index=False)
    summary = StageSummary(name, len(items), done_before, processed, len(table),
                           dict(Counter(s["reason"] for s in skips)), seconds, manifest_path, skipped_path)
    summary.print()
    return summary


def claim_folder(out_dir: str | os.PathLike, settings: dict[str, Any]) -> None:
    """Record a stage's settings in ``out_dir/settings.json``; refuse a folder an earlier run filled with others,
    since resuming it would mix two kinds of output in one manifest.

    Raises:
        UserError: naming the folder and the differing settings.
    """
    wanted = json.loads(json.dumps(settings, default=_json_default))
    recorded = Path(out_dir) / "settings.json"
    if recorded.is_file():
        earlier = json.loads(recorded.read_text(encoding="utf-8"))
        if earlier != wanted:
            changed = sorted(k for k in set(earlier) | set(wanted) if earlier.get(k) != wanted.get(k))
            raise UserError(f"{out_dir} holds output made with other settings ({', '.join(changed)} differ; see "
                             f"{recorded}); use a new output folder or delete that one")
    write_text_atomic(recorded, json.dumps(wanted, indent=1, sort_keys=True) + "\n")


def map_items(process: Callable[[Any], Outcome], items: list[tuple[str, Any]], workers: int = 1,
              initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> Iterator[Outcome]:
    """Process items one by one, in this process or in ``workers`` spawned processes.

    ``process`` and ``initializer`` must be importable top-level functions when ``workers > 1``; the
    initializer is where a worker loads its model once.
    """
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for key, payload in items:
            yield guarded(process, key, payload)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=initializer, initargs=initargs) as pool:
        yield from pool.imap_unordered(_GuardedCall(process), items, chunksize=1)


class _GuardedCall:
    """Picklable ``guarded(process, key, payload)`` for pool workers."""

    def __init__(self, process: Callable[[Any], Outcome]):
        self.process = process

    def __call__(self, item: tuple[str, Any]) -> Outcome:
        key, payload = item
        return guarded(self.process, key, payload)
