"""The one way to run a stage: plan, process, write atomically, journal, report.

A stage hands :func:`run_stage` its items (a unique key and a payload each) and a function that processes a
list of pending items and yields one :class:`Outcome` per item, in any order. The runner skips items finished
by an earlier run, journals every outcome as soon as it arrives (an append-only JSON-lines file, fsynced, so a
killed run loses at most the item in flight), shows progress, and at the end rebuilds ``manifest.csv`` and
``skipped.csv`` from the journal, sorted by key, so a resumed run writes exactly what an unbroken run writes.
Item files must be written atomically (sinet_plus.files) by the stage before it yields the outcome; the runner
removes the temporaries a killed run left anywhere under the output folder before it starts.

"Done" means done from these inputs with these settings. Each journal record keeps the identity of what its
item was made from: the payload, and the path, size and content hash of every ``Path`` in it (the input
files). An item whose identity changed since (another folder, a replaced photo, an edited manifest row) is done
again, with a message. The settings that shape every item (a checkpoint's hash, sizes, flags) are claimed with
:func:`claim_folder`, which refuses a folder made with other ones.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from sinet_plus.errors import UserError
from sinet_plus.files import atomic_path, file_hash, remove_leftovers, write_text_atomic
from sinet_plus.imageio import ImageReadError
from sinet_plus.manifest import few, new_rows, write_manifest
from sinet_plus.processes import DiesWithParent

console = Console(stderr=True)

ERROR_REASON = "error"
"""Skip reason for unexpected exceptions; these items are retried by the next run."""

DUPLICATE_KEY = "duplicate_key"
"""Skip reason for inputs that share their key (e.g. ``0001.jpg`` and ``0001.png``): neither is processed,
since their outputs would overwrite each other; the other items are."""


@dataclass
class Outcome:
    """What processing one item produced: manifest rows, or skips with their reasons.

    ``source`` is set by the runner when it journals the outcome: the item's input identity and files (see
    :func:`describe_source`).
    """

    key: str
    rows: list[dict] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)
    source: dict = field(default_factory=dict)

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
    """Append-only record of finished items: the resume point of a stage.

    Attributes:
        unreadable: 1-based numbers of the lines the last :meth:`load` could not read.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.unreadable: list[int] = []

    def load(self) -> dict[str, Outcome]:
        """Outcomes recorded so far by key (later lines win).

        A line that is not a record (the torn last line of a kill, or damage) is left out and its number kept
        in :attr:`unreadable`: its item counts as not done.
        """
        outcomes: dict[str, Outcome] = {}
        self.unreadable = []
        if not self.path.exists():
            return outcomes
        text = self.path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            outcome = _parse_record(line)
            if outcome is None:
                self.unreadable.append(number)
            else:
                outcomes[outcome.key] = outcome
        if text and not text.endswith("\n") and number not in self.unreadable:
            self.unreadable.append(number)  # a complete-looking record the kill cut before its newline
            outcomes.pop(outcome.key, None)
        return outcomes

    def append(self, outcome: Outcome) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = outcome.to_json() + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def rewrite(self, outcomes: Iterable[Outcome]) -> None:
        """Replace the journal (to drop failed items before a retry, or lines a kill or damage left unreadable)."""
        write_text_atomic(self.path, "".join(o.to_json() + "\n" for o in outcomes))


def _parse_record(line: str) -> Outcome | None:
    """The outcome a journal line records, or None when the line is not a well-formed record."""
    try:
        outcome = Outcome.from_json(line)
    except (ValueError, TypeError):
        return None
    well_formed = (isinstance(outcome.key, str) and isinstance(outcome.source, dict)
                   and all(isinstance(part, list) and all(isinstance(entry, dict) for entry in part)
                           for part in (outcome.rows, outcome.skips)))
    return outcome if well_formed else None


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"cannot store {type(value).__name__} in the journal")


def _file_state(path: Path) -> list:
    """``[path, size, content hash]`` of an input file; size and hash are None where there is no file.

    The bytes, not the modification time: data copied again or restored from a backup (new times, same bytes)
    stays done, and an edit that keeps the size and the time does not (the cost: docs/reliability.md).
    """
    try:
        return [str(path), path.stat().st_size, file_hash(path, 16)]
    except (OSError, ValueError):
        return [str(path), None, None]


def describe_source(payload: Any) -> dict:
    """What an item is made from: ``identity``, a hash of the payload with the path, size and content hash of
    every ``Path`` in it, and ``files``, those paths with their size and hash.

    Strings are hashed as text; a stage whose payload names input files passes them as ``Path`` objects.
    """
    files: list[list] = []

    def describe(value: Any) -> Any:
        if isinstance(value, Path):
            files.append(_file_state(value))
            return files[-1]
        return _json_default(value)

    text = json.dumps(payload, default=describe, sort_keys=True)
    return {"identity": hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], "files": files}


def _what_changed(key: str, before: dict, now: dict) -> str:
    """One line on why an item's recorded source differs from its current one."""
    old_files = {state[0]: state for state in before.get("files", [])}
    new_files = {state[0]: state for state in now["files"]}
    if not before:
        return f"{key}: no record of its inputs (journal of an older version)"
    if set(old_files) != set(new_files):
        return (f"{key}: made from {', '.join(sorted(set(old_files) - set(new_files))) or 'other files'}, "
                f"now {', '.join(sorted(set(new_files) - set(old_files))) or 'fewer files'}")
    modified = [path for path in new_files if old_files[path] != new_files[path]]
    if any(isinstance(old_files[path][2], int) for path in modified):
        return f"{key}: its inputs were recorded by modification time (journal of an older version)"
    if modified:
        return f"{key}: {', '.join(modified)} changed (its bytes) since it was done"
    return f"{key}: its input row changed since it was done"


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
        items: ``(key, payload)`` pairs; keys are stable across runs (e.g. the photo's stem). Input files in a
            payload are ``Path`` objects (see :func:`describe_source`). Items sharing a key are skipped as
            :data:`DUPLICATE_KEY`.
        execute: processes a list of pending items, yielding one :class:`Outcome` per item in any order.
        out_dir: the stage's output folder; the journal lives in it as ``.journal.jsonl``.
        retry_failed: redo items whose earlier outcome was an unexpected error.
        finish_rows: optional last touch on the manifest table (e.g. a score over all rows) before writing.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items, clashes = _split_duplicates(items)
    sources = {key: describe_source(payload) for key, payload in items}
    remove_leftovers(out_dir)  # temporaries of a run killed mid-write
    journal = Journal(out_dir / ".journal.jsonl")
    outcomes = journal.load()
    if journal.unreadable:
        console.print(f"[yellow]{journal.path}: lines {few(journal.unreadable)} are not journal records "
                      "(a killed run or damage); their items count as not done[/]")
    changed = [_what_changed(key, outcomes[key].source, sources[key]) for key in sources
               if key in outcomes and outcomes[key].source.get("identity") != sources[key]["identity"]]
    if changed:
        console.print(f"[yellow]{name}: {len(changed)} items in {out_dir} were done from other inputs; doing them "
                      f"again:[/] {few(changed, limit=3)}")
    current = {key: o for key, o in outcomes.items()
               if key in sources and o.source.get("identity") == sources[key]["identity"]}
    retried = [key for key, o in current.items() if o.failed] if retry_failed else []
    if journal.unreadable or retried:
        journal.rewrite(o for key, o in outcomes.items() if key not in retried)
    done = {key: o for key, o in current.items() if key not in retried}
    earlier = sorted(set(outcomes) - set(sources) - {clash.key for clash in clashes})
    if earlier:
        console.print(f"{name}: {len(earlier)} items done earlier in {out_dir} are not among this run's inputs "
                      f"(e.g. {few(earlier, limit=3)}): left out of its manifest")
    pending = [(key, payload) for key, payload in items if key not in done]
    start = time.perf_counter()
    processed = 0
    with Progress(TextColumn(f"[bold]{name}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False, disable=not pending) as progress:
        task = progress.add_task(name, total=len(items), completed=len(done))
        if pending:
            for outcome in execute(pending):
                outcome.source = sources.get(outcome.key, {})
                journal.append(outcome)
                done[outcome.key] = outcome
                processed += 1
                progress.advance(task)
    seconds = time.perf_counter() - start
    finished = [done[k] for k in sorted(done.keys() & sources.keys())] + clashes
    finished.sort(key=lambda outcome: outcome.key)
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
    summary = StageSummary(name, len(items) + sum(len(c.skips) for c in clashes), len(current) - len(retried),
                           processed, len(table),
                           dict(Counter(s["reason"] for s in skips)), seconds, manifest_path, skipped_path)
    summary.print()
    return summary


def _split_duplicates(items: Sequence[tuple[str, Any]]) -> tuple[list[tuple[str, Any]], list[Outcome]]:
    """Items with a key of their own, and a :data:`DUPLICATE_KEY` skip for each item that shares its key."""
    by_key: dict[str, list[Any]] = defaultdict(list)
    for key, payload in items:
        by_key[key].append(payload)
    unique = [(key, payload) for key, payload in items if len(by_key[key]) == 1]
    clashes = []
    for key, payloads in by_key.items():
        if len(payloads) > 1:
            names = [", ".join(state[0] for state in describe_source(p)["files"]) or repr(p) for p in payloads]
            clashes.append(Outcome(key, skips=[{"key": key, "reason": DUPLICATE_KEY,
                                                "detail": f"{name}: shares the key {key!r} with "
                                                          f"{'; '.join(n for n in names if n != name)}; "
                                                          "rename all but one"} for name in names]))
    return unique, clashes


def claim_folder(out_dir: str | os.PathLike, settings: dict[str, Any]) -> None:
    """Record a stage's settings in ``out_dir/settings.json``; refuse a folder an earlier run filled with others,
    since resuming it would mix two kinds of output in one manifest.

    Raises:
        UserError: naming the folder and the differing settings, or the settings file when it is unreadable.
    """
    wanted = json.loads(json.dumps(settings, default=_json_default))
    recorded = Path(out_dir) / "settings.json"
    if recorded.is_file():
        try:
            earlier = json.loads(recorded.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UserError(f"{recorded}: cannot read the settings an earlier run recorded ({error}); without "
                             f"them {out_dir} cannot be resumed safely: use a new output folder or delete that "
                             "one") from None
        if not isinstance(earlier, dict):
            raise UserError(f"{recorded}: not a settings record (a JSON object was expected); use a new output "
                             "folder or delete that one")
        if earlier != wanted:
            changed = sorted(k for k in set(earlier) | set(wanted) if earlier.get(k) != wanted.get(k))
            described = "; ".join(f"{k} {_short(earlier.get(k))} then, {_short(wanted.get(k))} now" for k in changed)
            raise UserError(f"{out_dir} holds output made with other settings ({', '.join(changed)} differ: "
                             f"{described}; see {recorded}); use a new output folder or delete that one")
    write_text_atomic(recorded, json.dumps(wanted, indent=1, sort_keys=True) + "\n")


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def map_items(process: Callable[[Any], Outcome], items: list[tuple[str, Any]], workers: int = 1,
              initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> Iterator[Outcome]:
    """Process items one by one, in this process or in ``workers`` spawned processes (which die with this one).

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
    with context.Pool(workers, initializer=DiesWithParent(initializer), initargs=initargs) as pool:
        yield from pool.imap_unordered(_GuardedCall(process), items, chunksize=1)


class _GuardedCall:
    """Picklable ``guarded(process, key, payload)`` for pool workers."""

    def __init__(self, process: Callable[[Any], Outcome]):
        self.process = process

    def __call__(self, item: tuple[str, Any]) -> Outcome:
        key, payload = item
        return guarded(self.process, key, payload)
