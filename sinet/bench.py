"""``sinet bench``: parameters, MACs and batch-1 CPU latency of SINet's inference forms against the authors' own
module and LR-ASPP, and training-step speed against the authors' module.

Contenders (all at batch 1, 224×224, the same thread count, subnormal floats flushed for all):
- ``official eager`` — the authors' ``Dnc_SINet`` (:mod:`sinet.reference`, imported from ``../shared``; left
  out with the reason when absent), random weights, eager;
- ``official onnxruntime`` — that module exported by :func:`sinet.export.export_onnx` with the same settings
  as ours (TorchScript exporter, opset 17, static batch) in the same onnxruntime session options;
- ``sinet eager`` — our model as loaded, in eval mode under ``torch.inference_mode()``: it runs its fused graph
  (:mod:`sinet.fused`);
- ``sinet unfused`` — the modules as trained (``SINet.logits``: BatchNorms and channel shuffle present);
- ``sinet torchscript`` — the fused graph traced, ``torch.jit.freeze`` + ``optimize_for_inference``;
- ``sinet compile`` — the fused graph through ``torch.compile`` with inductor's weight freezing and C++ wrapper
  (needs a C++ compiler; optional): freezing pre-packs the convolution weights for oneDNN and the C++ wrapper
  removes the Python call per kernel;
- ``sinet onnxruntime`` — our ONNX export (the fused graph) in onnxruntime with all graph optimisations;
- ``sinet openvino`` — the same file in OpenVINO (fp32, latency hint), when ``openvino`` is installed;
  ``sinet openvino bf16`` too on CPUs with native bf16 (AMX / AVX512-BF16), see
  :func:`sinet.export.openvino_request`;
- ``lraspp`` — torchvision ``lraspp_mobilenet_v3_large(num_classes=2)``, random weights, eager: the peer.

Timing: rounds interleave the contenders in a shuffled order; a round runs each contender ``runs`` times and
keeps the median; the figure is the median over rounds, so a burst of load from elsewhere hits all contenders
alike. Ratios are speed ratios (>1 = faster than the reference). MACs count convolutions and linear layers only
(forward hooks), like the authors' counter.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from sinet.bench_forms import lraspp, official_forms, sinet_forms
from sinet.model import SINet
from sinet.reference import ReferenceUnavailable, official_model
from sinet.training_bench import training_contenders, training_speed, training_throughput

console = Console(stderr=True)
SIZE = (224, 224)
TRAINING_BATCH, TRAINING_STEPS = 24, 2
RUNTIME_FORMS = ("sinet onnxruntime", "sinet openvino", "sinet openvino bf16")
"""Our contenders that run the ONNX export outside torch; the other ``sinet`` ones are torch forms."""


def count_params(model: nn.Module) -> int:
    """Number of parameters.

    Args:
        model: any module.
    """
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def count_macs(model: nn.Module, size: tuple[int, int] = SIZE) -> int:
    """Multiply-accumulates of one forward pass at batch 1, counting ``Conv2d`` and ``Linear`` layers only.

    Args:
        model: model in eval mode.
        size: ``(height, width)`` of the input.
    """
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += output[0].numel() * kernel

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel() * module.in_features

    handles = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    forward = getattr(model.eval(), "logits", model)  # SINet's own modules, not its fused graph
    try:
        forward(torch.zeros(1, 3, *size))
    finally:
        for handle in handles:
            handle.remove()
    return total


def interleaved_latency(contenders: dict[str, Callable[[], object]], rounds: int, runs: int,
                        budget_seconds: float, seed: int = 0) -> dict[str, float]:
    """Median latency in ms of each contender over interleaved rounds.

    Args:
        contenders: name → callable doing one forward pass.
        rounds: maximum number of rounds.
        runs: calls per contender per round (the round keeps their median).
        budget_seconds: stop after the round that crosses this budget (at least 3 rounds run).
        seed: seed of the per-round order.
    """
    order = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in order}
    shuffle = random.Random(seed).shuffle
    start = time.perf_counter()
    with torch.inference_mode():
        for run in contenders.values():  # warm-up: first-call allocations, lazy compilation
            for _ in range(3):
                run()
        for done in range(rounds):
            shuffle(order)
            for name in order:
                times = []
                for _ in range(runs):
                    begin = time.perf_counter()
                    contenders[name]()
                    times.append(time.perf_counter() - begin)
                samples[name].append(statistics.median(times))
            if done >= 2 and time.perf_counter() - start > budget_seconds:
                break
    return {name: 1000 * statistics.median(values) for name, values in samples.items()}


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_bench(model: nn.Module | None = None, threads: int = 2, rounds: int = 30, runs: int = 10,
              budget_seconds: float = 180.0, compile_model: bool = True,
              training_rounds: int = 3, training_manifest: str | os.PathLike | None = None,
              spinning: bool = False) -> dict:
    """Measure everything ``sinet bench`` reports.

    Args:
        model: SINet to time (default: random initialisation; latency does not depend on the weights once
            subnormals are flushed).
        threads: torch, onnxruntime and OpenVINO threads.
        rounds: maximum interleaved rounds.
        runs: forward passes per contender per round.
        budget_seconds: time budget of the latency rounds.
        compile_model: include ``torch.compile`` (inference and training).
        training_rounds: interleaved rounds of training steps.
        training_manifest: manifest whose train photos feed a real-data training throughput of both stages
            (:func:`sinet.training_bench.training_throughput`; None: left out).
        spinning: onnxruntime idle threads spin; set it to match ``OMP_WAIT_POLICY`` (which must be set before
            torch loads, so the ``sinet bench`` command sets it).
    """
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    model = (model or SINet()).eval()
    peer = lraspp()
    x = torch.randn(1, 3, *SIZE)
    skipped = {}
    try:
        official = official_model()
    except ReferenceUnavailable as error:
        official, skipped["official"] = None, str(error)
        console.print(f"[yellow]the authors' module is left out:[/] {error}")
    console.print("building the inference forms (tracing, ONNX export, torch.compile) ...")
    with tempfile.TemporaryDirectory() as workdir:
        contenders = sinet_forms(model, x, threads, Path(workdir), compile_model, spinning)
        if official is not None:
            contenders.update(official_forms(official, x, threads, Path(workdir), spinning))
        contenders["lraspp"] = lambda: peer(x)
        console.print(f"timing {len(contenders)} contenders, up to {rounds} rounds x {runs} runs ...")
        latency = interleaved_latency(contenders, rounds, runs, budget_seconds)
    console.print(f"training steps at batch {TRAINING_BATCH} (compiling first) ...")
    training_forms = training_speed(training_contenders(official, TRAINING_BATCH, SIZE, compile_model),
                                    TRAINING_BATCH, training_rounds, TRAINING_STEPS)
    ours_training = {name: speed for name, speed in training_forms.items() if name.startswith("sinet")}
    fastest_training = max(ours_training, key=ours_training.get)
    training = {"sinet": training_forms["sinet eager"], "sinet fastest": training_forms[fastest_training]}
    if official is not None:
        training["official"] = training_forms["official"]
    real_photos = {}
    if training_manifest is not None:
        real_photos = {f"stage{stage}": training_throughput(training_manifest, stage, threads=threads)
                       for stage in (1, 2)}
    sizes = {"sinet": (count_params(model), count_macs(model)), "lraspp": (count_params(peer), count_macs(peer))}
    if official is not None:
        sizes["official"] = (count_params(official), count_macs(official))
    rows = {}
    for name, ms in latency.items():
        params, macs = sizes[name.split()[0]]
        rows[name] = {"ms": ms, "fps": 1000 / ms, "params": params, "mmacs": macs / 1e6,
                      "vs_lraspp": latency["lraspp"] / ms, "vs_sinet_eager": latency["sinet eager"] / ms}
    ours = {name: ms for name, ms in latency.items() if name.startswith("sinet")}
    fp32 = {name: ms for name, ms in ours.items() if not name.endswith("bf16")}
    torch_forms = {name: ms for name, ms in ours.items() if name not in RUNTIME_FORMS}
    fastest = min(ours, key=ours.get)
    fastest_fp32, fastest_torch = min(fp32, key=fp32.get), min(torch_forms, key=torch_forms.get)
    ratios = {"sinet_eager_vs_lraspp": rows["sinet eager"]["vs_lraspp"],
              "fastest_vs_sinet_eager": rows[fastest]["vs_sinet_eager"],
              "fastest_torch_vs_sinet_eager": rows[fastest_torch]["vs_sinet_eager"],
              "onnxruntime_vs_sinet_eager": rows["sinet onnxruntime"]["vs_sinet_eager"],
              "fastest_fps": rows[fastest]["fps"], "fastest_fp32_fps": rows[fastest_fp32]["fps"]}
    if official is not None:
        ratios["sinet_eager_vs_official_eager"] = latency["official eager"] / latency["sinet eager"]
        ratios["sinet_onnxruntime_vs_official_onnxruntime"] = (latency["official onnxruntime"]
                                                               / latency["sinet onnxruntime"])
        ratios["training_sinet_fastest_vs_official"] = training["sinet fastest"] / training["official"]
    return {
        "conditions": {"batch": 1, "size": list(SIZE), "threads": threads, "torch": torch.__version__,
                       "cpu": cpu_name(), "cpus": os.cpu_count(),
                       "load_average": list(os.getloadavg()), "flush_denormal": True,
                       "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
                       "onnxruntime_spinning": spinning},
        "params": sizes["sinet"][0], "mmacs": sizes["sinet"][1] / 1e6,
        "lraspp_params": sizes["lraspp"][0], "lraspp_mmacs": sizes["lraspp"][1] / 1e6,
        "latency": rows,
        "fastest_form": fastest,
        "fastest_fp32_form": fastest_fp32,
        "fastest_torch_form": fastest_torch,
        "ratios": ratios,
        "training": training,
        "training_forms": training_forms,
        "training_fastest_form": fastest_training,
        "training_conditions": {"batch": TRAINING_BATCH, "size": list(SIZE), "steps": TRAINING_STEPS,
                                "rounds": training_rounds, "stage": 2, "inputs": "random tensors"},
        "training_real_photos": real_photos,
        "skipped": skipped,
    }
