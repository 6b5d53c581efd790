"""Inference forms of SINet: ONNX export of the fused graph (with the preprocessing in its metadata), ONNX Runtime
and OpenVINO sessions, and a parity check against torch.

The export traces :func:`sinet.fused.fuse` (BatchNorm and channel shuffle folded; PReLU and per-channel scales in
the forms ONNX Runtime keeps in its blocked layout), so the file holds the graph that runs fastest, not the
training modules.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.onnx import _constants

from sinet.fused import fuse
from sinet.preprocess import Preprocessing
from sinet_plus.errors import UserError
from sinet_plus.files import atomic_path

ONNX_INPUT, ONNX_OUTPUT = "image", "logits"
PREPROCESSING_KEY = "sinet.preprocessing"
OPSETS = range(11, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET + 1)
"""The opsets SINet exports to: from 11 (bilinear resizes with align_corners) to the newest the installed torch's
TorchScript exporter writes."""


def export_onnx(model: nn.Module, preprocessing: Preprocessing, path: str | os.PathLike, opset: int = 17,
                dynamic_batch: bool = True, fused: bool = True) -> Path:
    """Write ``model`` as ONNX atomically; the preprocessing goes into the metadata as JSON.

    Uses the TorchScript exporter (``dynamo=False``), so ``opset`` must lie in :data:`OPSETS`.

    Args:
        model: model in eval mode.
        preprocessing: stored under the metadata key ``sinet.preprocessing``.
        path: ``.onnx`` file to write.
        opset: ONNX opset version.
        dynamic_batch: make the batch dimension dynamic (H and W stay at the preprocessing size).
        fused: export SINet's fused graph (:func:`sinet.fused.fuse`); False exports ``model`` as it is (how the
            bench exports the authors' module).

    Raises:
        UserError: an opset outside :data:`OPSETS`.
    """
    import onnx

    if opset not in OPSETS:
        raise UserError(f"ONNX opset {opset} cannot hold SINet from this torch: use {OPSETS.start} (bilinear resizes "
                        f"with align_corners) to {OPSETS.stop - 1} (the newest torch {torch.__version__} writes)")
    model = fuse(model) if fused else model.eval()
    example = torch.zeros(1, 3, *preprocessing.size)
    axes = {ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}} if dynamic_batch else None
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False is deliberate: static, opset-11 safe
        torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT], dynamic_axes=axes)
        graph = onnx.load(str(tmp))
        graph.metadata_props.add(key=PREPROCESSING_KEY, value=json.dumps(preprocessing.to_dict()))
        onnx.checker.check_model(graph)
        onnx.save(graph, str(tmp))
    return Path(path)


def onnx_session(path: str | os.PathLike, threads: int = 1, spinning: bool = True):
    """An onnxruntime CPU session with all graph optimisations and ``threads`` intra-op threads.

    Subnormal floats are flushed to zero, as torch does for SINet (the official weights produce them).

    Args:
        path: ``.onnx`` file.
        threads: intra-op threads (inter-op is 1: the graph is a chain).
        spinning: let idle worker threads spin (onnxruntime's default); off on a loaded machine.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def openvino_request(path: str | os.PathLike, threads: int = 1, precision: str = "f32"):
    """An OpenVINO CPU infer request for an exported ``.onnx``, latency-tuned.

    OpenVINO would pick bf16 by itself on CPUs with AMX; the precision is always explicit here. ``bf16`` gave the
    same EG1800 val IoU as fp32 (94.91 vs 94.89 with the official weights, 99.9% of pixels labelled alike) and runs
    faster on CPUs that have native bf16 (docs/sinet.md); see :func:`openvino_supports`.

    Args:
        path: ``.onnx`` file written by :func:`export_onnx`.
        threads: inference threads.
        precision: ``f32`` or ``bf16``.
    """
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision})
    return compiled.create_infer_request()


def openvino_supports(precision: str) -> bool:
    """Whether this CPU runs ``precision`` (e.g. ``BF16``) natively in OpenVINO."""
    import openvino

    return precision.upper() in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def onnx_preprocessing(path: str | os.PathLike) -> Preprocessing:
    """Read the preprocessing stored in an exported model's metadata.

    Args:
        path: ``.onnx`` file written by :func:`export_onnx`.
    """
    metadata = onnx_session(path).get_modelmeta().custom_metadata_map
    if PREPROCESSING_KEY not in metadata:
        raise KeyError(f"{path}: no {PREPROCESSING_KEY} metadata (not exported by sinet export)")
    return Preprocessing.from_dict(json.loads(metadata[PREPROCESSING_KEY]))


@torch.inference_mode()
def parity(model: nn.Module, preprocessing: Preprocessing, path: str | os.PathLike, batch: int = 2,
           seed: int = 0) -> tuple[float, float]:
    """Compare torch and onnxruntime on smooth random photos (normalised by ``preprocessing``).

    Args:
        model: the eager model that was exported.
        preprocessing: its preprocessing.
        path: the exported ``.onnx``.
        batch: images compared (more than 1 also checks the dynamic batch).
        seed: random seed.

    Returns:
        ``(max |logit difference|, share of pixels with the same argmax label)``.
    """
    rng = np.random.default_rng(seed)
    height, width = preprocessing.size
    photos = [np.kron(rng.integers(0, 256, (height // 8, width // 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
              for _ in range(batch)]
    inputs = torch.cat([preprocessing(photo) for photo in photos])
    expected = model.eval()(inputs).numpy()
    actual = onnx_session(path).run([ONNX_OUTPUT], {ONNX_INPUT: inputs.numpy()})[0]
    return float(np.abs(expected - actual).max()), float((expected.argmax(1) == actual.argmax(1)).mean())
