"""SINet's fused inference graph: same logits as the modules as trained and as the authors' module, the official
score on EG1800 val, the model left alone, rebuilt when weights change, and an ONNX graph without the operations
that break ONNX Runtime's layout."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from pipeline.importers import import_eg1800
from sinet import SINet, SINetEncoder
from sinet.checkpoint import load_model
from sinet.data import manifest_samples
from sinet.evaluate import evaluate
from sinet.export import export_onnx, onnx_preprocessing, onnx_session, parity
from sinet.fused import FusedSINet, fuse
from sinet.preprocess import IMAGENET
from sinet.reference import ReferenceUnavailable, official_model
from sinet_plus import manifest as mf
from sinet_plus.imageio import read_image

PHOTOS = ("00002", "00004", "00007", "00010")


def _with_trained_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm and PReLU non-trivial values, as after training (negative scales included)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            for tensor in (module.running_mean, module.weight, module.bias):
                tensor.data = torch.randn(tensor.shape, generator=generator) * 0.5 + (tensor is module.weight) * 0.5
            module.running_var.data = torch.rand(module.running_var.shape, generator=generator) + 0.5
        elif isinstance(module, nn.PReLU):
            module.weight.data = torch.randn(module.weight.shape, generator=generator)
    return model.eval()


@pytest.mark.parametrize("make", [SINet, SINetEncoder])
def test_eval_mode_runs_the_fused_graph_with_the_same_logits(make):
    model = _with_trained_statistics(make())
    state = copy.deepcopy(model.state_dict())
    x = torch.randn(2, 3, 224, 160)
    with torch.inference_mode():
        fused, own = model(x), model.logits(x)
    assert isinstance(model.__dict__["_inference_graph"][2], FusedSINet)
    assert torch.allclose(fused, own, atol=1e-4) and not torch.equal(fused, own)  # same function, other arithmetic
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(x), fused)
    with_grad = model(x)  # eval mode with autograd on: the modules as trained, so gradients reach the weights
    assert with_grad.requires_grad and torch.equal(with_grad.detach(), own)


def test_fused_graph_follows_weight_changes():
    model, other = _with_trained_statistics(SINet(), 0), _with_trained_statistics(SINet(), 1)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        model(x)
        model.load_state_dict(other.state_dict())
        assert torch.allclose(model(x), other.logits(x), atol=1e-4)
    with torch.no_grad():
        model.encoder.level1.conv.weight.mul_(-1)  # an in-place edit, as an optimizer step makes
        assert torch.allclose(model(x), model.logits(x), atol=1e-4)
        model.to(torch.float64)
        assert model(x.double()).dtype == torch.float64


def test_using_the_fused_graph_leaves_training_unchanged():
    torch.manual_seed(0)
    model = SINet()
    fresh = copy.deepcopy(model)
    x, y = torch.randn(2, 3, 64, 64), torch.randint(0, 2, (2, 64, 64))
    model.eval()
    with torch.inference_mode():
        model(x)
    gradients = []
    for net in (model.train(), fresh.train()):
        nn.functional.cross_entropy(net(x), y).backward()
        gradients.append([p.grad for p in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*gradients))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


def test_exported_graph_keeps_onnx_runtime_in_its_layout(tmp_path):
    """No channel-shuffle transposes, PReLU only on the SE vectors, onnxruntime agrees with torch, and the
    preprocessing rides along in the metadata."""
    model = _with_trained_statistics(SINet())
    path = export_onnx(model, IMAGENET, tmp_path / "sinet.onnx")
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert "Transpose" not in ops and ops.count("PRelu") == 3 and ops.count("Conv") == 58
    difference, agreement = parity(model, IMAGENET, path, batch=2)
    assert difference < 1e-3 and agreement > 0.999
    assert onnx_preprocessing(path) == IMAGENET


@pytest.fixture(scope="module")
def official_reference(official_weights):
    try:
        return official_model(official_weights)
    except ReferenceUnavailable as error:
        pytest.skip(str(error))


@pytest.mark.slow
def test_logits_equal_the_authors_module_on_real_photos(official_reference, official_weights, eg1800_dir, tmp_path):
    model, preprocessing, _ = load_model(official_weights)
    batch = torch.cat([preprocessing(read_image(eg1800_dir / "images" / f"{stem}.jpg")) for stem in PHOTOS])
    with torch.inference_mode():
        theirs = official_reference(batch)
        assert (model.logits(batch) - theirs).abs().max() < 1e-4
        assert (model(batch) - theirs).abs().max() < 1e-4
        assert (fuse(model)(batch) - theirs).abs().max() < 1e-4
    path = export_onnx(model, preprocessing, tmp_path / "official.onnx")
    exported = onnx_session(path).run(None, {"image": batch.numpy()})[0]
    assert np.abs(exported - theirs.numpy()).max() < 1e-4


@pytest.mark.slow
def test_official_weights_score_94_89_on_eg1800_val_through_the_fused_graph(official_weights, eg1800_dir, tmp_path):
    """The authors' weights through our code, as `sinet eval` runs them, give the authors' figure on all of val."""
    manifest = tmp_path / "eg1800.csv"
    mf.write_manifest(mf.select(import_eg1800(eg1800_dir, manifest).manifest, split="val"), manifest)
    model, preprocessing, _ = load_model(official_weights)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `sinet eval` runs (--threads 1), and subnormals flushed as the CLI does
    torch.set_flush_denormal(True)
    try:
        report = evaluate(model, preprocessing, manifest_samples([manifest], "val"))
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
    assert isinstance(model.__dict__["_inference_graph"][2], FusedSINet)  # eval ran the fused graph
    assert report["images"] == 132 and not report["skipped"]
    assert round(report["iou"], 2) == 94.89 and round(report["boundary_f1"], 2) == 88.90
