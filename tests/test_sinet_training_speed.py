"""Training speed: when the trainer compiles, its fallback when compiling fails, and the side-by-side training
step of ``sinet bench`` (ours and the authors' module on the same batch, the trainer's own step)."""

from __future__ import annotations

import torch
from torch import nn
from torch._inductor import config as inductor_config

from sinet.reference import ReferenceUnavailable, official_model
from sinet.training.config import TrainConfig
from sinet.training.optim import stage_budget
from sinet.training.state import TrainState
from sinet.training.steps import COMPILE_MIN_STEPS, CompiledOrEager, compiles
from sinet.training_bench import structured_labels, training_contenders, training_speed

CPU = torch.device("cpu")


def test_compiles_only_where_it_pays_unless_told():
    run = TrainConfig(manifests=[], out="")
    assert compiles(run, COMPILE_MIN_STEPS, None, CPU)
    assert not compiles(run, COMPILE_MIN_STEPS - 1, None, CPU)  # a short stage: compiling would not pay
    assert not compiles(run, 10 * COMPILE_MIN_STEPS, None, torch.device("mps"))
    budget = TrainConfig(manifests=[], out="", time_budget=30, stage1_share=0.4)
    first, second = TrainState(config={}, stage=1, planned_epochs=300), TrainState(config={}, stage=2,
                                                                                  planned_epochs=300)
    assert stage_budget(budget, first) == 720 and not compiles(budget, 10**5, stage_budget(budget, first), CPU)
    assert stage_budget(budget, second) == 1800 and compiles(budget, 10**5, stage_budget(budget, second), CPU)
    for told in (True, False):
        assert compiles(TrainConfig(manifests=[], out="", compile=told), 1, 1.0, CPU) is told


def test_a_failed_compilation_falls_back_to_eager_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.PReLU(4), nn.Conv2d(4, 2, 1)).train()  # SINet's ops,
    x = torch.randn(2, 3, 16, 16)  # few of them: tracing the whole encoder only to see it fail took most of a minute
    step = CompiledOrEager(model)
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",)}):  # no C++ compiler: inductor cannot build
        logits = step(x)
    assert step.compiled is model
    assert torch.allclose(logits, model(x), atol=1e-6) and logits.requires_grad
    assert torch.equal(step(x), model(x))  # later steps run eagerly without trying again


def test_training_step_contenders_time_ours_and_the_authors_module():
    try:
        official = official_model()
    except ReferenceUnavailable as error:
        official = None
        print(f"the authors' module is left out: {error}")
    labels = structured_labels(2, (64, 64))
    assert set(labels.unique().tolist()) == {0, 1}
    contenders = training_contenders(official, batch=2, size=(64, 64), compile_model=False)
    assert set(contenders) == {"sinet eager"} | ({"official"} if official is not None else set())
    speeds = training_speed(contenders, batch=2, rounds=1, steps=1)
    assert speeds.keys() == contenders.keys() and all(speed > 0 for speed in speeds.values())
