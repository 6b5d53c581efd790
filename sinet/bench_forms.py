"""The inference contenders of ``sinet bench`` (:mod:`sinet.bench` lists them): callables running one forward
pass of each of our forms, of the authors' module and of the LR-ASPP peer on a given batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from sinet.export import export_onnx, onnx_session, openvino_request, openvino_supports
from sinet.fused import fuse
from sinet.preprocess import IMAGENET, OFFICIAL, Preprocessing

console = Console(stderr=True)


def lraspp() -> nn.Module:
    """The peer: torchvision LR-ASPP MobileNetV3-Large, 2 classes, random weights (no download)."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(num_classes=2, weights=None, weights_backbone=None).eval()


def _quiet_export(model: nn.Module, preprocessing: Preprocessing, path: Path, fused: bool) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings of the authors' code (tensor sizes read as ints)
        return export_onnx(model, preprocessing, path, dynamic_batch=False, fused=fused)


def sinet_forms(model: nn.Module, x: torch.Tensor, threads: int, workdir: Path, compile_model: bool,
                spinning: bool) -> dict[str, Callable[[], object]]:
    """Callables running one forward pass of each of our inference forms on ``x``.

    Args:
        model: SINet in eval mode.
        x: the input batch.
        threads: onnxruntime and OpenVINO threads.
        workdir: where the temporary ONNX file goes.
        compile_model: include ``torch.compile`` (slow to build; needs a C++ compiler).
        spinning: let idle onnxruntime threads spin (match OpenMP's wait policy).
    """
    graph = fuse(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated but still a contender here
        scripted = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(graph, x)))
    forms = {"sinet eager": lambda: model(x), "sinet unfused": lambda: model.logits(x),
             "sinet torchscript": lambda: scripted(x)}
    if compile_model:
        from torch._inductor import config as inductor_config

        compiled = torch.compile(graph)
        try:
            with torch.inference_mode(), inductor_config.patch(freezing=True, cpp_wrapper=True):
                compiled(x)  # builds now, so a missing C++ compiler drops this contender instead of the bench
            forms["sinet compile"] = lambda: compiled(x)
        except Exception as error:  # inductor raises many types (compiler missing, codegen failure)
            console.print(f"[yellow]torch.compile unavailable, left out:[/] {type(error).__name__}: {error}")
    onnx_file = _quiet_export(model, IMAGENET, workdir / "sinet.onnx", fused=True)
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


def official_forms(official: nn.Module, x: torch.Tensor, threads: int, workdir: Path,
                   spinning: bool) -> dict[str, Callable[[], object]]:
    """The authors' module eager and in onnxruntime, exported and run with the same settings as ours.

    Args:
        official: the authors' module in eval mode (:func:`sinet.reference.official_model`).
        x: the input batch.
        threads: onnxruntime threads.
        workdir: where the temporary ONNX file goes.
        spinning: let idle onnxruntime threads spin.
    """
    session = onnx_session(_quiet_export(official, OFFICIAL, workdir / "official.onnx", fused=False), threads,
                           spinning)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return {"official eager": lambda: official(x), "official onnxruntime": lambda: session.run(None, feed)}
