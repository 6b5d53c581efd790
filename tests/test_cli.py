"""The command-line toolkit both programs share: ``--version``, user errors as one line and exit code 1, bugs as
tracebacks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import app as pipeline_app
from pipeline.teacher.pseudo_label import LabelOptions
from pipeline.teacher.train import TrainOptions
from sinet.cli import app as sinet_app
from sinet.export import OPSETS
from sinet.training.config import TrainConfig
from sinet_plus import __version__
from sinet_plus.cli import new_app
from sinet_plus.errors import UserError


@pytest.mark.parametrize("program", ["pipeline", "sinet"])
def test_both_programs_print_one_version(program):
    done = subprocess.run([str(Path(sys.executable).with_name(program)), "--version"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"sinet-plus {program} {__version__}"


def test_a_user_error_is_one_line_naming_the_file_with_exit_code_1(tmp_path):
    missing = tmp_path / "missing.csv"
    result = CliRunner().invoke(pipeline_app, ["manifest", "stats", str(missing)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {missing}: manifest not found"


def test_brackets_in_a_message_are_printed_as_they_are(tmp_path):
    folder = tmp_path / "[run]"
    folder.mkdir()
    (folder / "run.toml").write_text("[run\n")  # not TOML
    result = CliRunner().invoke(pipeline_app, ["run", str(folder / "run.toml")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {folder / 'run.toml'}: cannot read the config")


def test_an_option_error_of_sinet_names_the_option(tmp_path):
    result = CliRunner().invoke(sinet_app, ["train", "--out", str(tmp_path)])
    assert result.exit_code == 1 and result.stderr.strip() == "error: --manifest is required (unless --resume)"


@pytest.mark.parametrize("opset", [9, 99])
def test_an_onnx_opset_sinet_cannot_be_written_in_is_refused_with_the_range(tmp_path, opset):
    out = tmp_path / "sinet.onnx"
    result = CliRunner().invoke(sinet_app, ["export", "--onnx", str(out), "--opset", str(opset)])
    assert result.exit_code == 1 and not out.exists()
    assert result.stderr.strip().startswith(f"error: ONNX opset {opset} cannot hold SINet from this torch: use 11 ")
    assert f"to {OPSETS.stop - 1} (" in result.stderr and "Traceback" not in result.output + result.stderr


def test_a_bug_keeps_its_traceback():
    app = new_app("a program with one broken command")

    @app.command()
    def broken() -> None:
        {}["missing"]

    @app.command()
    def refused() -> None:
        raise UserError("refused: the reason")

    bug = CliRunner().invoke(app, ["broken"])
    assert isinstance(bug.exception, KeyError) and "error:" not in bug.output
    user = CliRunner().invoke(app, ["refused"])
    assert user.exit_code == 1 and user.stderr.strip() == "error: refused: the reason"


def _options(app, name: str) -> dict:
    """The command's parameters by name, with their defaults."""
    return {param.name: param.default for param in typer.main.get_command(app).commands[name].params}


@pytest.mark.parametrize("command, options, not_flags", [
    ("pseudo-label", LabelOptions(), set()),
    ("train-teacher", TrainOptions(manifests=[], out=Path()), {"manifests", "out"}),  # required
])
def test_pipeline_flags_are_the_options_fields_with_their_defaults(command, options, not_flags):
    params = _options(pipeline_app, command)
    for field in dataclasses.fields(options):
        if field.name not in not_flags:
            assert params[field.name] == getattr(options, field.name), field.name


def test_sinet_train_flags_are_train_config_fields_with_their_defaults():
    params, defaults = _options(sinet_app, "train"), TrainConfig(manifests=[], out="")
    named_otherwise = {"manifests": "manifest", "val_manifests": "val_manifest", "stages": "stage",
                       "source_shares": "source_share",  # repeatable flags are singular
                       "augmentation": "rotation"}  # one augmentation knob
    recipe_only = {"betas", "eps", "lr_milestones", "stage1_band", "stage2_band"}  # the authors' values, fixed
    for field in dataclasses.fields(defaults):
        if field.name in recipe_only or field.name in named_otherwise or field.name == "out":
            continue
        assert params[field.name] == getattr(defaults, field.name), field.name
    assert params["rotation"] == defaults.augmentation.rotation
    assert set(named_otherwise.values()) <= set(params)
