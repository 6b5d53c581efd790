"""Chaos benchmark: kill -9 `pipeline crop-baidu` and `pipeline pseudo-label` at random moments, resume each time,
and check that the final outputs equal an unbroken run's, byte for byte.

For each stage the command runs once unbroken into one folder, then into a second folder where it is killed with
SIGKILL at a random moment ``--kills`` times (each time restarted on the same folder) and finally left to finish.
A quarter of the kills fall at a random moment of the start-up; the others after a random number of
newly journaled items, at a random moment of the next item's work (mid-batch, mid-write). Every file under the
two folders is compared (``manifest.csv``, ``skipped.csv``, ``settings.json``, the crops and masks; only the
journal, whose lines come in completion order, is left out). After each kill the script also checks that no
process the killed command had started (pool or DataLoader workers) is still alive a few seconds later.

Inputs are real full-body photos with masks from ../shared/data/fullbody, linked into a temporary folder; the
teacher is ``--teacher``, by default ``sinet/weights/sinet-eg1800.pt`` (small and fixed, so the
benchmark measures resuming, not whichever heavier teacher ``pseudo-label`` defaults to). The script only kills
processes it started (and, should any survive, their own children). It exits 1 when outputs differ or a worker
outlived its parent.

    .venv/bin/python bench/chaos_resume.py                              # 40 photos, 5 kills per stage
    .venv/bin/python bench/chaos_resume.py --photos 300 --kills 20     # the figure in docs/reliability.md
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sinet.weights import SINET_EG1800

PROJECT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SINET_SHARED", PROJECT.parent / "shared")) / "data" / "fullbody"
PIPELINE = str(Path(sys.executable).with_name("pipeline"))
JOURNAL = ".journal.jsonl"
START_UP_SHARE = 0.25
"""Share of the kills aimed at the start-up (before the first item of that run is journaled)."""
GRACE_SECONDS = 30.0
"""How long a killed command's workers get to die before they count as outliving it: a spawned worker killed
while it still imports its modules notices its parent's death only when it reaches its initializer."""


@dataclass
class ChaosResult:
    """What the killed-and-resumed run of one stage did and how its outputs compare."""

    stage: str
    photos: int
    kills: int = 0
    kills_mid_run: int = 0
    restarts: int = 0
    orphans: list[int] = field(default_factory=list)
    slowest_death: float = 0.0
    files: int = 0
    differences: list[str] = field(default_factory=list)
    unbroken_seconds: float = 0.0
    chaos_seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.stage}: {self.photos} photos, {self.kills} kills with SIGKILL ({self.kills_mid_run} after "
                f"items were journaled, {self.kills - self.kills_mid_run} during start-up), {self.restarts} "
                f"restarts: {len(self.differences)} differences in {self.files} files against the unbroken run; "
                f"{len(self.orphans)} workers outlived a kill by {GRACE_SECONDS:.0f} s (the slowest died "
                f"{self.slowest_death:.1f} s after it); unbroken {self.unbroken_seconds:.0f} s, killed and resumed "
                f"{self.chaos_seconds:.0f} s")


def link_inputs(folder: Path, count: int) -> Path:
    """``folder/images`` and ``folder/masks``: symlinks to ``count`` full-body pairs spread over the set."""
    photos = sorted((DATA / "images").glob("*.jpg"))
    chosen = photos[::max(1, len(photos) // count)][:count]
    for kind in ("images", "masks"):
        (folder / kind).mkdir(parents=True)
    for photo in chosen:
        (folder / "images" / photo.name).symlink_to(photo)
        (folder / "masks" / f"{photo.stem}.png").symlink_to(DATA / "masks" / f"{photo.stem}.png")
    return folder


def stage_command(stage: str, inputs: Path, out: Path, workers: int, label_options: list[str]) -> list[str]:
    """argv of one run of ``stage`` into ``out`` (``label_options``: pseudo-label's ``--teacher`` and extras)."""
    if stage == "crop-baidu":
        return [PIPELINE, "crop-baidu", str(inputs / "images"), str(inputs / "masks"), "--out", str(out),
                "--workers", str(workers)]
    if stage == "pseudo-label":
        return [PIPELINE, "pseudo-label", str(inputs / "images"), "--out", str(out), "--workers", str(workers),
                "--batch-size", "4", "--device", "cpu", *label_options]
    raise SystemExit(f"unknown stage {stage!r} (crop-baidu or pseudo-label)")


def journaled(out: Path) -> int:
    """Lines in the stage's journal (items finished so far, near enough)."""
    try:
        return (out / JOURNAL).read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    found, stack = set(), [pid]
    while stack:
        try:
            tasks = list(Path(f"/proc/{stack.pop()}/task").iterdir())
        except OSError:  # it exited meanwhile
            continue
        for task in tasks:
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
            stack += [child for child in children if child not in found]
            found.update(children)
    return found


def alive(pid: int) -> bool:
    """True for a running process (a zombie waiting to be reaped is dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def run_to_end(argv: list[str], out: Path, log: Path) -> tuple[float, float]:
    """Run a command to its end; (seconds taken, seconds until its first journaled item). Raises when it fails."""
    start = time.perf_counter()
    first = None
    with open(log, "ab") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        while process.poll() is None:
            if first is None and journaled(out):
                first = time.perf_counter() - start
            time.sleep(0.05)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {process.returncode}; see {log}")
    seconds = time.perf_counter() - start
    return seconds, seconds if first is None else first


@dataclass
class Kill:
    """One attempt: whether the command was killed (not finished first), whether it journaled items before,
    the pids of its workers alive ``GRACE_SECONDS`` after the kill, and how long the slowest one took to die."""

    killed: bool
    progressed: bool
    survivors: list[int]
    slowest_death: float


def kill_at(argv: list[str], out: Path, items: int, delay: float, log: Path) -> Kill:
    """Start the command; once it has journaled ``items`` more items, wait ``delay`` seconds more and SIGKILL it,
    unless it ended first. With ``items`` 0 the kill falls in the start-up: ``delay`` seconds after the start or
    as soon as the first item is journaled, whichever comes first (a start-up measured on a busier machine would
    otherwise let the whole run finish)."""
    before = journaled(out)
    with open(log, "ab") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    workers: set[int] = set()
    deadline = time.perf_counter() + delay if items == 0 else None
    while process.poll() is None and (deadline is None or time.perf_counter() < deadline):
        workers |= descendants(process.pid)
        count = journaled(out)
        if items == 0 and count > before:
            break
        if deadline is None and count >= before + items:
            deadline = time.perf_counter() + delay
        time.sleep(0.02)
    if process.poll() is not None:
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited with {process.returncode}; see {log}")
        return Kill(False, journaled(out) > before, [], 0.0)
    workers |= descendants(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = time.perf_counter()
    while any(alive(pid) for pid in workers) and time.perf_counter() - killed_at < GRACE_SECONDS:
        time.sleep(0.05)
    slowest = time.perf_counter() - killed_at if workers else 0.0
    survivors = [pid for pid in workers if alive(pid)]
    for pid in survivors:  # ours: started by the command this script started
        os.kill(pid, signal.SIGKILL)
    return Kill(True, journaled(out) > before, survivors, slowest)


def compare_folders(expected: Path, actual: Path) -> tuple[int, list[str]]:
    """(files compared, differences) between two output folders, the journal left out."""
    def listing(folder: Path) -> dict[str, Path]:
        return {str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file() and p.name != JOURNAL}

    left, right = listing(expected), listing(actual)
    differences = [f"only in the unbroken run: {name}" for name in sorted(left.keys() - right.keys())]
    differences += [f"only in the killed run: {name}" for name in sorted(right.keys() - left.keys())]
    differences += [f"differs: {name}" for name in sorted(left.keys() & right.keys())
                    if left[name].read_bytes() != right[name].read_bytes()]
    return len(left.keys() | right.keys()), differences


def chaos(stage: str, inputs: Path, work: Path, photos: int, kills: int, workers: int,
          label_options: list[str], rng: random.Random) -> ChaosResult:
    """The unbroken run, the killed-and-resumed run and their comparison for one stage."""
    result = ChaosResult(stage, photos)
    unbroken, killed, log = work / f"{stage}-unbroken", work / f"{stage}-killed", work / f"{stage}.log"
    unbroken_run = stage_command(stage, inputs, unbroken, workers, label_options)
    result.unbroken_seconds, start_up = run_to_end(unbroken_run, unbroken, log)
    per_item = (result.unbroken_seconds - start_up) / max(1, journaled(unbroken))
    argv = stage_command(stage, inputs, killed, workers, label_options)
    start = time.perf_counter()
    while result.kills < kills:
        if rng.random() < START_UP_SHARE:  # somewhere in the start-up: imports, model loading, planning
            items, delay = 0, rng.uniform(0.0, start_up)
        else:  # after a random number of items, at a random moment of the work that follows (mid-batch, mid-write)
            remaining = max(1, photos - journaled(killed))
            items = rng.randint(1, max(1, remaining // (2 * (kills - result.kills + 1))))  # leaves work for the rest
            delay = rng.uniform(0.0, 2 * per_item)
        attempt = kill_at(argv, killed, items, delay, log)
        result.restarts += 1
        result.orphans += attempt.survivors
        result.slowest_death = max(result.slowest_death, attempt.slowest_death)
        if not attempt.killed:
            break  # finished before the kill: nothing left to interrupt
        result.kills += 1
        result.kills_mid_run += attempt.progressed
    run_to_end(argv, killed, log)
    result.chaos_seconds = time.perf_counter() - start
    result.files, result.differences = compare_folders(unbroken, killed)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=40, help="full-body photos (with masks) to process")
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs per stage")
    parser.add_argument("--stages", default="crop-baidu,pseudo-label", help="comma-separated stages")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of each stage")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--teacher", type=Path, default=SINET_EG1800, help="pseudo-label's teacher checkpoint "
                                                                       "(default: sinet-eg1800.pt, small and fixed)")
    parser.add_argument("--label-options", default="", help="extra options of pseudo-label, e.g. "
                                                             "'--no-faces --long-side 128' for a quick run")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a "
                                                                  "temporary folder, removed at the end)")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: the chaos benchmark needs the real full-body photos in ../shared")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        inputs = link_inputs(work / "inputs", args.photos)
        label_options = ["--teacher", str(args.teacher), *args.label_options.split()]
        results = [chaos(stage, inputs, work, args.photos, args.kills, args.workers, label_options, rng)
                   for stage in args.stages.split(",")]
    load = os.getloadavg()[0]
    print(f"\nchaos benchmark (seed {args.seed}, {args.workers} workers, load average {load:.1f} on "
          f"{os.cpu_count()} CPUs)")
    for result in results:
        print("  " + result.line())
        for difference in result.differences[:10]:
            print(f"    {difference}")
    if any(result.differences or result.orphans for result in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
