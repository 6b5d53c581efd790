"""``sinet bench``: parameters, MACs and batch-1 CPU latency of SINet's inference forms against LR-ASPP.

Contenders (all at batch 1, 224×224, the same thread count, subnormal floats flushed for all):
- ``lraspp`` — torchvision ``lraspp_mobilenet_v3_large(num_classes=2)``, random weights, eager: the peer.
- ``sinet eager`` — our module as trained (it keeps itself in the channels-last layout, see :mod:`sinet.model`).
- ``sinet folded`` — BatchNorm folded into the convolutions (:func:`sinet.export.fold_batchnorm`).
- ``sinet torchscript`` — folded, traced, ``torch.jit.freeze`` + ``optimize_for_inference``.
- ``sinet compile`` — folded, ``torch.compile`` with inductor's weight freezing and C++ wrapper (needs a C++
  compiler; optional). Freezing pre-packs the convolution weights for oneDNN and the C++ wrapper removes the
  Python call per kernel: 4.2 ms against 5.1 ms for a plain ``torch.compile`` here.
- ``sinet onnxruntime`` — the ONNX export in onnxruntime with all graph optimisations.
- ``sinet openvino`` — the same ONNX file in OpenVINO (fp32, latency hint), when ``openvino`` is installed;
  ``sinet openvino bf16`` too on CPUs with native bf16 (AMX / AVX512-BF16): same val IoU, see
  :func:`sinet.export.openvino_request`.

Timing: rounds interleave the contenders in a shuffled order; a round runs each contender ``runs`` times and
keeps the median; the figure is the median over rounds, so a burst of load from elsewhere hits all contenders
alike. Ratios are speed ratios (>1 = faster than the reference). MACs count convolutions and linear layers only
(forward hooks), like the authors' counter.

Training throughput belongs to :mod:`sinet.training_bench`: ``training_throughput(manifest, stage, threads=...)``
gives images/s of one stage on real photos; the report carries both stages under ``"training"``.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from sinet.export import export_onnx, fold_batchnorm, onnx_session, openvino_request, openvino_supports
from sinet.model import SINet
from sinet.preprocess import IMAGENET, Preprocessing

console = Console(stderr=True)
SIZE = (224, 224)
RUNTIME_FORMS = ("sinet onnxruntime", "sinet openvino", "sinet openvino bf16")
"""Contenders that run the ONNX export outside torch; the others are torch forms."""


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
    try:
        model.eval()(torch.zeros(1, 3, *size))
    finally:
        for handle in handles:
            handle.remove()
    return total


def lraspp() -> nn.Module:
    """The peer: torchvision LR-ASPP MobileNetV3-Large, 2 classes, random weights (no download)."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(num_classes=2, weights=None, weights_backbone=None).eval()


def _eager(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    return lambda: model(x)


def sinet_forms(model: nn.Module, preprocessing: Preprocessing, threads: int, workdir: Path,
                compile_model: bool, spinning: bool) -> dict[str, Callable[[], object]]:
    """Callables running one batch-1 forward pass of each SINet inference form.

    Args:
        model: SINet in eval mode.
        preprocessing: stored in the ONNX export.
        threads: onnxruntime intra-op threads.
        workdir: where the temporary ONNX file goes.
        compile_model: include ``torch.compile`` (slow to build; needs a C++ compiler).
        spinning: let idle onnxruntime threads spin (match OpenMP's wait policy).
    """
    x = torch.randn(1, 3, *SIZE)
    folded = fold_batchnorm(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated but still a contender here
        scripted = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(folded, x)))
    forms = {"sinet eager": _eager(model, x), "sinet folded": _eager(folded, x),
             "sinet torchscript": _eager(scripted, x)}
    if compile_model:
        from torch._inductor import config as inductor_config

        compiled = torch.compile(fold_batchnorm(model))
        try:
            with torch.inference_mode(), inductor_config.patch(freezing=True, cpp_wrapper=True):
                compiled(x)  # builds now, so a missing C++ compiler drops this contender instead of the bench
            forms["sinet compile"] = _eager(compiled, x)
        except Exception as error:  # inductor raises many types (compiler missing, codegen failure)
            console.print(f"[yellow]torch.compile unavailable, left out:[/] {type(error).__name__}: {error}")
    onnx_file = export_onnx(model, preprocessing, workdir / "sinet.onnx", dynamic_batch=False)
    session = onnx_session(onnx_file, threads, spinning)
    feed = {session.get_inputs()[0].name: x.numpy()}
    forms["sinet onnxruntime"] = lambda: session.run(None, feed)
    try:
        requests = {"sinet openvino": openvino_request(onnx_file, threads)}
        if openvino_supports("bf16"):
            requests["sinet openvino bf16"] = openvino_request(onnx_file, threads, "bf16")
    except ImportError:
        console.print("[yellow]openvino is not installed (pip install 'sinet-plus[export]'): left out[/]")
    else:
        for name, request in requests.items():
            forms[name] = lambda request=request: request.infer({0: x.numpy()})
    return forms


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


def training_report(manifest: str | os.PathLike | None, threads: int) -> dict:
    """Training images/s of both stages from :func:`sinet.training_bench.training_throughput` (real photos, real
    loader).

    Args:
        manifest: manifest whose train split supplies the photos (None = skip).
        threads: torch threads of the training step.
    """
    if manifest is None:
        return {"status": "skipped: no --manifest given"}
    try:
        from sinet.training_bench import training_throughput
    except ImportError:
        return {"status": "absent: sinet.training_bench defines no training_throughput"}
    return {f"stage{stage}": {"images_per_second": training_throughput(manifest, stage, threads=threads)}
            for stage in (1, 2)}


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
              training_manifest: str | os.PathLike | None = None, spinning: bool = False) -> dict:
    """Measure everything ``sinet bench`` reports.

    Args:
        model: SINet to time (default: random initialisation; latency does not depend on the weights once
            subnormals are flushed).
        threads: torch and onnxruntime threads.
        rounds: maximum interleaved rounds.
        runs: forward passes per contender per round.
        budget_seconds: time budget of the latency rounds.
        compile_model: include ``torch.compile``.
        training_manifest: manifest for the training throughput of both stages (None = skip it).
        spinning: onnxruntime idle threads spin; set it to match ``OMP_WAIT_POLICY`` (which must be set before
            torch loads, so the ``sinet bench`` command sets it).
    """
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    model = (model or SINet()).eval()
    peer = lraspp()
    x = torch.randn(1, 3, *SIZE)
    console.print("building the inference forms (tracing, ONNX export, torch.compile) ...")
    with tempfile.TemporaryDirectory() as workdir:
        contenders = sinet_forms(model, IMAGENET, threads, Path(workdir), compile_model, spinning)
        contenders["lraspp"] = _eager(peer, x)
        console.print(f"timing {len(contenders)} contenders, up to {rounds} rounds x {runs} runs ...")
        latency = interleaved_latency(contenders, rounds, runs, budget_seconds)
    sizes = {"sinet": (count_params(model), count_macs(model)), "lraspp": (count_params(peer), count_macs(peer))}
    forms = {name: ms for name, ms in latency.items() if name.startswith("sinet") and name != "sinet eager"}
    torch_forms = {name: ms for name, ms in forms.items() if name not in RUNTIME_FORMS}
    fastest, fastest_torch = min(forms, key=forms.get), min(torch_forms, key=torch_forms.get)
    rows = {}
    for name, ms in latency.items():
        params, macs = sizes["lraspp" if name == "lraspp" else "sinet"]
        rows[name] = {"ms": ms, "fps": 1000 / ms, "params": params, "mmacs": macs / 1e6,
                      "vs_lraspp": latency["lraspp"] / ms, "vs_sinet_eager": latency["sinet eager"] / ms}
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
        "fastest_torch_form": fastest_torch,
        "ratios": {"sinet_eager_vs_lraspp": rows["sinet eager"]["vs_lraspp"],
                   "fastest_vs_sinet_eager": rows[fastest]["vs_sinet_eager"],
                   "fastest_torch_vs_sinet_eager": rows[fastest_torch]["vs_sinet_eager"],
                   "onnxruntime_vs_sinet_eager": rows["sinet onnxruntime"]["vs_sinet_eager"],
                   "fastest_fps": rows[fastest]["fps"]},
        "training": training_report(training_manifest, threads),
    }
