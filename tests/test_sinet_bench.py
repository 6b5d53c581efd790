"""``sinet bench``: every inference form timed beside the authors' module and LR-ASPP, and the training step beside
the authors' (the JSON keys our acceptance checks read); the authors' contenders left out with the reason when their
module is absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinet.reference import ReferenceUnavailable, official_model, official_module_file

SINET = str(Path(sys.executable).parent / "sinet")
QUICK = ["--threads", "1", "--rounds", "1", "--runs", "1", "--seconds", "0", "--training-rounds", "1",
         "--no-compile"]
OURS = {"sinet eager", "sinet unfused", "sinet torchscript", "sinet onnxruntime"}


def _bench(out: Path, shared: Path | None = None) -> dict:
    env = dict(os.environ, **({"SINET_SHARED": str(shared)} if shared else {}))
    done = subprocess.run([SINET, "bench", *QUICK, "--json", str(out)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def _check_common(report: dict) -> None:
    assert OURS | {"lraspp"} <= set(report["latency"]) and report["params"] == 86_910
    assert all(row["ms"] > 0 for row in report["latency"].values())
    assert all(speed > 0 for speed in report["training"].values())
    assert report["fastest_form"] in report["latency"] and report["fastest_torch_form"] in report["latency"]
    assert report["ratios"]["sinet_eager_vs_lraspp"] == pytest.approx(
        report["latency"]["lraspp"]["ms"] / report["latency"]["sinet eager"]["ms"])


@pytest.mark.slow
def test_bench_times_every_form_against_the_authors_module_and_lraspp(tmp_path):
    try:
        official_model()
    except ReferenceUnavailable as error:
        pytest.skip(str(error))
    report = _bench(tmp_path / "bench.json")
    _check_common(report)
    assert {"official eager", "official onnxruntime"} <= set(report["latency"]) and not report["skipped"]
    assert set(report["training"]) == {"official", "sinet", "sinet fastest"}
    ratios, latency = report["ratios"], report["latency"]
    assert ratios["sinet_onnxruntime_vs_official_onnxruntime"] == pytest.approx(
        latency["official onnxruntime"]["ms"] / latency["sinet onnxruntime"]["ms"])
    assert latency["official eager"]["params"] == latency["sinet eager"]["params"]  # the same network


@pytest.mark.slow
def test_bench_leaves_the_authors_module_out_with_the_reason_when_it_is_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("SINET_SHARED", str(tmp_path / "elsewhere"))
    with pytest.raises(ReferenceUnavailable, match="is absent"):
        official_model()
    report = _bench(tmp_path / "bench.json", shared=tmp_path / "elsewhere")
    _check_common(report)
    assert not any(name.startswith("official") for name in report["latency"])
    assert set(report["training"]) == {"sinet", "sinet fastest"}
    assert str(official_module_file()) in report["skipped"]["official"]
