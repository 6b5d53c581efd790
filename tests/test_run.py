"""`pipeline run`: step skipping by fingerprint, resume after a kill, config checks, unattended auto-accept.

The runner tests use real subprocess commands and real files; the review tests use a real SQLite review store
over the real photos that ship inside installed packages (the offline demo's photos).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from pipeline.demo_data import write_demo_photos
from pipeline.review.auto_accept import AUTO, auto_accept
from pipeline.review.export import export_manifest
from pipeline.review.queue import queue_manifests
from pipeline.review.store import Store
from pipeline.run.config import RunConfig, load_config
from pipeline.run.plan import WHOLE_PHOTO_SIDE, options_argv, plan, review_steps
from pipeline.run.runner import Runner
from pipeline.run.step import RunError, Step, WaitingForReview, read_record
from sinet_plus import manifest as mf
from sinet_plus.imageio import read_image, write_mask


def runner(out: Path, force: bool = False) -> Runner:
    return Runner(out, {}, Console(quiet=True), force=force)


def counting_step(out: Path, source: Path, calls: list[str], after: tuple[str, ...] = ()) -> Step:
    """An in-process step that copies ``source`` to ``out/copy.txt`` and counts its calls."""
    target = out / "copy.txt"

    def copy() -> str:
        calls.append("copy")
        target.write_text(source.read_text())
        return "copied"

    return Step("copy", "copy a file", [target], action=copy, inputs=[source], after=after)


def test_step_skipped_when_current_and_rerun_when_input_or_output_changes(tmp_path):
    source, calls = tmp_path / "in.txt", []
    source.write_text("one")
    out = tmp_path / "run"
    step = counting_step(out, source, calls)
    assert [r.status for r in runner(out).run([step])] == ["ran"]
    assert [r.status for r in runner(out).run([step])] == ["skipped"]
    assert calls == ["copy"]
    source.write_text("two")  # the input's content decides
    assert [r.status for r in runner(out).run([step])] == ["ran"]
    assert (out / "copy.txt").read_text() == "two"
    (out / "copy.txt").unlink()  # a missing output is not current
    assert [r.status for r in runner(out).run([step])] == ["resumed"]
    assert [r.status for r in runner(out, force=True).run([step])] == ["ran"]
    assert len(calls) == 4



def test_a_folder_input_counts_by_its_bytes_not_its_files_times(tmp_path):
    photos, source, calls, out = tmp_path / "photos", tmp_path / "in.txt", [], tmp_path / "run"
    write_demo_photos(photos)
    source.write_text("one")
    step = counting_step(out, source, calls)
    step.inputs.append(photos)
    assert [r.status for r in runner(out).run([step])] == ["ran"]
    for photo in photos.iterdir():  # the folder copied again or restored: new times, same bytes
        os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 3_600 * 10**9))
    assert [r.status for r in runner(out).run([step])] == ["skipped"]
    photo = sorted(photos.iterdir())[-1]
    info, data = photo.stat(), bytearray(photo.read_bytes())
    data[-3] ^= 0xFF  # one byte, same size, the time put back
    photo.write_bytes(bytes(data))
    os.utime(photo, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert [r.status for r in runner(out).run([step])] == ["ran"] and len(calls) == 2

def test_upstream_change_reruns_downstream_and_owned_outputs_are_cleared(tmp_path):
    source, calls = tmp_path / "in.txt", []
    source.write_text("one")
    out = tmp_path / "run"
    stale = out / "derived" / "stale.txt"

    def derive() -> str:
        assert not stale.exists(), "outputs of another fingerprint must be removed before a rerun"
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_text((out / "copy.txt").read_text())
        return ""

    steps = [counting_step(out, source, calls),
             Step("derive", "derive", [stale], action=derive, after=("copy",), owns=[stale.parent])]
    runner(out).run(steps)
    assert [r.status for r in runner(out).run(steps)] == ["skipped", "skipped"]
    source.write_text("two")
    assert [r.status for r in runner(out).run(steps)] == ["ran", "ran"]
    assert stale.read_text() == "two"


def test_interrupted_command_is_resumed_with_its_resume_flag(tmp_path):
    out = tmp_path / "run"
    marker, done = out / "partial.txt", out / "done.txt"
    # a real command: the first run leaves a partial file and dies; with --resume it finishes
    script = ("import sys, pathlib\n"
              f"partial, done = pathlib.Path({str(marker)!r}), pathlib.Path({str(done)!r})\n"
              "if '--resume' in sys.argv and partial.exists():\n"
              "    done.write_text('finished from ' + partial.read_text())\n"
              "else:\n"
              "    partial.parent.mkdir(parents=True, exist_ok=True); partial.write_text('half'); sys.exit(9)\n")
    step = Step("work", "work", [done], [sys.executable, "-c", script], resume=("--resume", marker), owns=[done])
    with pytest.raises(RunError, match="exit code 9"):
        runner(out).run([step])
    assert read_record(out, "work")["status"] == "running"
    results = runner(out).run([step])
    assert [r.status for r in results] == ["resumed"]
    assert done.read_text() == "finished from half"
    assert (out / "logs" / "work.log").is_file()
    assert [r.status for r in runner(out).run([step])] == ["skipped"]


def test_grouped_commands_run_together(tmp_path):
    out = tmp_path / "run"
    steps = [Step(f"job{i}", "sleep and write", [out / f"job{i}.txt"],
                  [sys.executable, "-c", f"import time, pathlib; time.sleep(1); "
                                         f"pathlib.Path({str(out / f'job{i}.txt')!r}).write_text('ok')"],
                  group="together") for i in range(2)]
    out.mkdir()
    results = runner(out).run(steps)
    assert [r.status for r in results] == ["ran", "ran"]
    assert all((out / f"job{i}.txt").read_text() == "ok" for i in range(2))


def test_options_become_command_line_flags():
    assert options_argv({"time-budget": 30, "mirror": False, "compile": True, "manifest": ["a", "b"],
                         "batch_size": 2}) == ["--time-budget", "30", "--no-mirror", "--compile", "--manifest", "a",
                                               "--manifest", "b", "--batch-size", "2"]


def test_config_errors_are_named(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('[run]\nout = "out"\n[teacher]\ncheckpoint = "t.pt"\n[[sources]]\nname = "a"\n'
                      'images = "photos"\nmasks_from = "teacher"\n[sinet]\ntrain = ["eg1800"]\n')
    with pytest.raises(RunError, match="dataset 'eg1800' is used but not defined"):
        load_config(config)
    config.write_text('[run]\nout = "out"\n[teacher]\ncheckpoint = "t.pt"\n[[sources]]\nname = "a"\n'
                      'images = "photos"\n')
    with pytest.raises(RunError, match="needs either masks"):
        load_config(config)


@pytest.mark.parametrize("typo, message", [
    ("[reveiw]\nauto_accept = 0.1\n", "unknown key 'reveiw' in the top level"),
    ("[review]\nauto_acept = 0.1\n", "unknown key 'auto_acept' in [review]"),
    ('[[sources]]\nname = "b"\nimages = "p"\nmask = "m"\n', "unknown key 'mask' in [[sources]] 'b'")])
def test_an_unknown_config_key_is_refused_with_the_key_and_the_file(tmp_path, typo, message):
    config = tmp_path / "run.toml"
    config.write_text('[run]\nout = "out"\n[teacher]\ncheckpoint = "t.pt"\n[[sources]]\nname = "a"\n'
                      'images = "photos"\nmasks = "masks"\n' + typo)
    with pytest.raises(RunError) as refused:
        load_config(config)
    assert str(refused.value).startswith(f"{config}: {message} (known: ")


def test_quickstart_config_plans_every_stage():
    config = load_config(Path(__file__).parents[1] / "configs" / "quickstart.toml", auto_accept=0.5)
    names = [step.name for step in plan(config)]
    assert names == ["demo-photos", "demo-masks", "demo-crop", "demo-label", "queue", "review", "export",
                     "sinet-plus", "sinet-plus-eval"]
    assert plan(config, stop_after="export")[-1].name == "export"
    training = next(step for step in plan(config) if step.name == "sinet-plus")
    assert training.command[training.command.index("--init") + 1] == str(config.init)
    assert config.init.name == "sinet-eg1800.pt" and "--stage" in training.command


def test_experiment_arms_share_start_options_and_steps_and_differ_only_in_data():
    config = load_config(Path(__file__).parents[1] / "configs" / "experiment.toml")
    steps = {step.name: step for step in plan(config)}
    assert "fullbody-check" in steps and steps["data-eg1800"].command[-2:] == ["--holdout", "200"]
    trainings = [steps[name] for name in config.models()]
    assert len(trainings) == len(config.arms) * len(config.seeds) == 9

    def without(argv: list[str], *flags: str) -> list[str]:
        """argv without the given flags and their values."""
        out, skip = [], False
        for index, item in enumerate(argv):
            if skip:
                skip = False
            elif item in flags:
                skip = True
            else:
                out.append(item)
        return out

    common = {tuple(without(step.command, "--out", "--seed", "--manifest")) for step in trainings}
    assert len(common) == 1  # same start, options, selection split and step count: only data, seed and folder vary
    argv = trainings[0].command
    assert argv[argv.index("--init") + 1] == str(config.init) and argv[argv.index("--val-split") + 1] == "holdout"
    assert "--epoch-size" in argv
    manifests = {step.name: [step.command[i + 1] for i, a in enumerate(step.command) if a == "--manifest"]
                 for step in trainings}
    assert manifests["eg1800-s0"] == [str(config.out / "data" / "eg1800.csv")]
    assert manifests["crops-pseudo-s1"][-1] == str(config.out / "arms" / "crops-pseudo.csv")
    groups = [step.group for step in trainings]
    assert max(groups.count(g) for g in groups) == config.parallel
    assert "export" not in steps["eg1800-s0"].after and steps["eg1800-s0"].inputs == []  # the review cannot touch it
    assert steps["crops-s0"].inputs == [config.out / "arms" / "crops.csv"]  # only its own accepted items
    masks, labels = steps["unlabeled-masks"].command, steps["unlabeled-label"].command
    assert masks[masks.index("--long-side") + 1] == str(WHOLE_PHOTO_SIDE)
    assert "--ignore-masks" in labels and "--ignore-masks" not in steps["fullbody-check"].command
    evaluation = steps["crops-s2-eval"].command
    assert evaluation[evaluation.index("--split") + 1] == "val" and "--rotations" in evaluation


def test_arms_need_a_common_start(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('[run]\nout = "out"\n[datasets.d]\nkind = "eg1800"\npath = "d"\n[teacher]\n'
                      'checkpoint = "t.pt"\n[[sources]]\nname = "a"\nimages = "p"\nmasks = "m"\n[sinet]\n'
                      'train = ["d"]\narms = { base = [], more = ["a"] }\n')
    with pytest.raises(RunError, match="one common checkpoint"):
        load_config(config)
    config.write_text(config.read_text().replace('more = ["a"]', 'more = ["b"]') + 'init = "s.pt"\n')
    with pytest.raises(RunError, match="arm 'more' uses 'b', which is not a"):
        load_config(config)



def test_an_arm_adds_its_own_train_options_but_never_changes_the_start_or_the_step_count(tmp_path):
    config = tmp_path / "run.toml"
    head = ('[run]\nout = "out"\n[datasets.d]\nkind = "eg1800"\npath = "d"\n[teacher]\ncheckpoint = "t.pt"\n'
            '[[sources]]\nname = "a"\nimages = "p"\nmasks = "m"\n[sinet]\ntrain = ["d"]\ninit = "s.pt"\n'
            'options = { epoch-size = 64, lr = 0.001 }\n')
    config.write_text(head + 'arms = { base = [], less = { sources = ["a"], options = { source-share = '
                      '["baidu_crop=0.2", "x=0.1"], mirror = false } } }\n')
    loaded = load_config(config)
    assert loaded.arms == {"base": [], "less": ["a"]}
    steps = {step.name: step.command for step in plan(loaded)}
    less, base = steps["less-s0"], steps["base-s0"]
    assert [less[i + 1] for i, a in enumerate(less) if a == "--source-share"] == ["baidu_crop=0.2", "x=0.1"]
    assert "--no-mirror" in less and "--source-share" not in base and "--no-mirror" not in base
    for argv in (less, base):  # the common options reach every arm
        assert argv[argv.index("--epoch-size") + 1] == "64" and argv[argv.index("--lr") + 1] == "0.001"
    for arm, reason in [("{ sources = [\"a\"], options = { epoch-size = 32 } }", "sets .epoch-size.: the arms share"),
                        ("{ sources = [\"a\"], options = { stage2_epochs = 3 } }", "sets 'stage2-epochs'"),
                        ("{ sources = [\"a\"], options = { stage2-batch = 8 } }", "sets 'stage2-batch'"),
                        ("{ sources = [\"a\"], options = { lr = 0.01 } }", "sets 'lr', which .sinet. options already"),
                        ("{ source = [\"a\"] }", "arm 'less' must be .source names. or"),
                        ("\"a\"", "arm 'less' must be")]:
        config.write_text(head + f"arms = {{ base = [], less = {arm} }}\n")
        with pytest.raises(RunError, match=reason):
            load_config(config)

# ---- unattended review ----

def demo_manifest(tmp_path: Path, priorities: list[float | None], verdicts: list[bool | None] | None = None) -> Path:
    """A manifest of the packaged photos with a mask each (a centred box), the given priorities and, when
    given, the teacher's ``auto_accept`` verdicts (None = an empty cell)."""
    photos = write_demo_photos(tmp_path / "photos")
    rows = []
    for index, (photo, priority) in enumerate(zip(photos, priorities)):
        height, width = read_image(photo).shape[:2]
        mask = np.zeros((height, width), np.uint8)
        mask[height // 4:, width // 4: 3 * width // 4] = 1
        write_mask(tmp_path / "masks" / f"{photo.stem}.png", mask)
        rows.append({"id": f"pseudo/{photo.stem}", "image": f"photos/{photo.name}", "mask": f"masks/{photo.stem}.png",
                     "source": "pseudo", "split": "unlabeled", "status": "pending", "priority": priority})
        if verdicts is not None:
            rows[-1]["auto_accept"] = "" if verdicts[index] is None else verdicts[index]
    path = tmp_path / "manifest.csv"
    mf.write_manifest(mf.new_rows(rows), path)
    return path


def test_auto_accept_marks_rows_and_leaves_the_rest_for_people(tmp_path):
    manifest = demo_manifest(tmp_path, [0.1, 0.8, None])
    with Store(tmp_path / "review.sqlite", create=True) as store:
        queue_manifests(store, [manifest], root=tmp_path)
        assert auto_accept(store, 0.3) == (2, 1)  # 0.1 and the unscored one; 0.8 waits
        assert [key for key, _ in store.undecided()] == ["pseudo/camera"]
        assert auto_accept(store, 0.3) == (0, 1)  # idempotent
        curated, reviewed = export_manifest(store, tmp_path / "curated.csv", split="train")
    assert reviewed == 2
    mf.write_manifest(curated, tmp_path / "curated.csv")
    frame = mf.read_manifest(tmp_path / "curated.csv").frame.set_index("id")
    assert sorted(frame.index) == sorted(curated.frame["id"]) == ["pseudo/astronaut", "pseudo/grace_hopper"]
    assert set(frame["reviewer"]) == {AUTO}
    assert set(frame["status"]) == {"accepted"} and set(frame["split"]) == {"train"}
    scored = frame.loc[frame["priority"].notna()]
    assert len(scored) == 1 and scored["priority"].iloc[0] == pytest.approx(0.1)
    assert "priority 0.100 <= threshold 0.3" in scored["reason"].iloc[0]
    assert "human-made mask" in frame.loc[frame["priority"].isna(), "reason"].iloc[0]
    assert not mf.validate(mf.read_manifest(tmp_path / "curated.csv"), check_files=True)


def test_the_teachers_calibrated_rule_is_the_default(tmp_path):
    # the teacher said yes to a high-priority mask and no to a low one: its verdict wins over any threshold;
    # the row with no verdict and no priority is an unchecked human mask
    manifest = demo_manifest(tmp_path, [0.6, 0.01, None], verdicts=[True, False, None])
    with Store(tmp_path / "review.sqlite", create=True) as store:
        queue_manifests(store, [manifest], root=tmp_path)
        assert auto_accept(store) == (2, 1)
        assert [key for key, _ in store.undecided()] == ["pseudo/camera"]
        curated, _ = export_manifest(store, tmp_path / "curated.csv", split="train")
    reasons = curated.frame.set_index("id")["reason"]
    assert "teacher's calibrated rule (priority 0.600)" in reasons["pseudo/astronaut"]
    assert "human-made mask" in reasons["pseudo/grace_hopper"]


def test_unscored_items_wait_when_asked(tmp_path):
    manifest = demo_manifest(tmp_path, [0.1, 0.8, None])
    with Store(tmp_path / "review.sqlite", create=True) as store:
        queue_manifests(store, [manifest], root=tmp_path)
        assert auto_accept(store, 0.9, accept_unscored=False) == (2, 1)


def test_run_waits_for_people_then_exports_their_decisions(tmp_path):
    out = tmp_path / "out"
    manifest = demo_manifest(out / "source", [0.1, 0.8, 0.2])
    config = RunConfig(path=tmp_path / "run.toml", out=out)
    steps = review_steps(config, [manifest], ())
    with pytest.raises(WaitingForReview, match="3 items wait for review: `pipeline review --db"):
        runner(out).run(steps)
    assert read_record(out, "review")["status"] == "running"
    with Store(config.review_db) as store:
        for key, decision in (("pseudo/astronaut", "accept"), ("pseudo/camera", "reject"),
                              ("pseudo/grace_hopper", "accept")):
            store.decide("ana", key, decision)
    results = runner(out).run(steps)
    assert [r.status for r in results] == ["skipped", "resumed", "ran"]
    curated = mf.read_manifest(config.curated).frame
    assert sorted(curated["id"]) == ["pseudo/astronaut", "pseudo/grace_hopper"]
    assert set(curated["reviewer"]) == {"ana"}
    assert [r.status for r in runner(out).run(steps)] == ["skipped", "skipped", "skipped"]
    with Store(config.review_db) as store:  # a changed verdict re-exports, nothing else reruns
        store.undo("ana")
        store.decide("ana", "pseudo/grace_hopper", "reject", reason="edge")
    assert [r.status for r in runner(out).run(steps)] == ["skipped", "skipped", "ran"]
    assert list(mf.read_manifest(config.curated).frame["id"]) == ["pseudo/astronaut"]
