"""Any teacher this project writes, loaded as an ensemble: one file, or several checkpoints that vote.

``pipeline pseudo-label --teacher FILE`` accepts a DeepLabV3+ checkpoint (``pipeline train-teacher``), a SINet
checkpoint (``sinet train``), or an ensemble file (``pipeline build-teacher``). Each becomes a
:class:`TeacherEnsemble`: one member for a single checkpoint, several for an ensemble file. The ensemble's
map is the weighted mean of its members' maps (each after its own flip and multi-scale test-time
augmentation). Where several members vote, their disagreement is a signal no single model has
(``member_agreement``).

An ensemble file is a plain dict that loads with ``weights_only=True`` (written atomically)::

    {
      "format": "sinet-plus-teacher-ensemble/1",
      "members": [{"kind": "deeplabv3plus" | "sinet", "name": str, "weight": float, "sizes": [int, ...],
                   "checkpoint": {...}}],        # each member's own checkpoint dict, embedded
      "priority": str,                           # rule name in pipeline.teacher.signals.PRIORITY_RULES
      "acceptance": {"max_priority": float, ...},  # the calibrated auto-accept rule and its evidence ({} = none)
      "card": {...},                             # what the teacher was trained on and how well it does
    }

Large float weights may be stored as int8 with one float32 scale per output channel (:func:`pack_state_dict`),
so a shipped ensemble with a ResNet-18 member stays well under 20 MiB; loading restores float32.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.teacher.checkpoint import FORMAT as DEEPLAB_FORMAT
from pipeline.teacher.checkpoint import teacher_hash
from pipeline.teacher.members import DEEPLAB, KINDS, SINET, Member, Views, build_member
from pipeline.teacher.signals import DEFAULT_PRIORITY, PRIORITY_RULES
from sinet_plus.files import atomic_path
from sinet_plus.torch_utils import CheckpointError, load_weights_only

FORMAT = "sinet-plus-teacher-ensemble/1"
SCALE_SUFFIX = ".__int8_scale__"
INT8_MIN_ELEMENTS = 1 << 16
"""Float tensors with at least this many elements (and two or more dimensions) are packed as int8."""


@dataclass
class MemberSpec:
    """One member of an ensemble file.

    Args:
        kind: ``deeplabv3plus`` or ``sinet``.
        name: short name for reports (e.g. the checkpoint's file name).
        checkpoint: the member's checkpoint dict.
        weight: its share of the vote (the weights are normalised to sum to 1).
        sizes: input sizes of its test-time augmentation (empty = its training size).
    """

    kind: str
    name: str
    checkpoint: dict[str, Any]
    weight: float = 1.0
    sizes: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "weight": float(self.weight), "sizes": list(self.sizes),
                "checkpoint": self.checkpoint}


@dataclass
class EnsemblePrediction:
    """One photo: the ensemble's two views (their mean is the delivered map) and each member's own map."""

    views: Views
    members: list[np.ndarray]


@dataclass
class TeacherEnsemble:
    """Loaded members ready to predict, with the rules that turn predictions into decisions.

    Args:
        members: models with their test-time augmentation.
        weights: their shares of the vote (sum 1).
        names: their names.
        priority: name of the priority rule.
        acceptance: the calibrated auto-accept rule (``max_priority``) and its evidence; empty = none.
        card: provenance and figures.
        hash: short hash of the file it came from (names the teacher in manifest rows).
    """

    members: list[Member]
    weights: list[float]
    names: list[str]
    priority: str = DEFAULT_PRIORITY
    acceptance: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    hash: str = ""

    def predict(self, photos: Sequence[np.ndarray], mirror: bool = True) -> list[EnsemblePrediction]:
        """Each photo's ensemble views and member maps, at the photo's size.

        Args:
            photos: uint8 RGB photos (any sizes).
            mirror: also predict the mirror images (flip test-time augmentation and ``flip_agreement``).
        """
        per_member = [member.views(photos, mirror) for member in self.members]
        out = []
        for index in range(len(photos)):
            views = [member_views[index] for member_views in per_member]
            plain = sum(w * v.plain for w, v in zip(self.weights, views))
            mirrored = sum(w * v.mirrored for w, v in zip(self.weights, views)) if mirror else None
            out.append(EnsemblePrediction(Views(plain, mirrored), [v.merged() for v in views]))
        return out

    def accepts(self, priority: float) -> bool:
        """The calibrated auto-accept rule for its own masks: priority at most the chosen threshold (never
        without a rule)."""
        limit = self.acceptance.get("max_priority")
        return limit is not None and priority <= float(limit)

    def confirms(self, agreement: float) -> bool:
        """The calibrated rule for a human-made mask: the teacher's mask agrees with it (IoU) at least as well
        as with most checked masks of the calibration photos (never without a rule)."""
        limit = self.acceptance.get("min_agreement")
        return limit is not None and agreement >= float(limit)


def pack_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float tensors as float16, large weight tensors as int8 with a float32 scale per output channel."""
    packed = {}
    for name, value in state.items():
        if not value.is_floating_point():
            packed[name] = value
        elif value.dim() >= 2 and value.numel() >= INT8_MIN_ELEMENTS:
            flat = value.float().reshape(len(value), -1)
            scale = flat.abs().amax(1).clamp(min=1e-12) / 127
            packed[name] = torch.round(flat / scale[:, None]).to(torch.int8).reshape(value.shape)
            packed[name + SCALE_SUFFIX] = scale
        else:
            packed[name] = value.half()
    return packed


def unpack_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack_state_dict` (a plain state dict passes through, floats as float32)."""
    out = {}
    for name, value in state.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = state.get(name + SCALE_SUFFIX)
        if scale is not None:
            out[name] = (value.float().reshape(len(value), -1) * scale[:, None]).reshape(value.shape)
        else:
            out[name] = value.float() if value.is_floating_point() else value
    return out


def member_from_file(path: str | os.PathLike, weight: float = 1.0, sizes: Sequence[int] = ()) -> MemberSpec:
    """A :class:`MemberSpec` from a DeepLabV3+ or SINet checkpoint file (its kind is read from the file)."""
    from pipeline.teacher.checkpoint import read_checkpoint
    from sinet.checkpoint import load_checkpoint

    path = Path(path)
    payload = load_weights_only(path)
    if isinstance(payload, Mapping) and payload.get("format") == DEEPLAB_FORMAT:
        checkpoint = read_checkpoint(path)
        checkpoint["train"] = {}  # resume state is no part of a member
        kind = DEEPLAB
    else:
        checkpoint = load_checkpoint(path)
        if checkpoint["arch"] != "SINet":
            raise CheckpointError(path, f"a SINet teacher needs a full SINet checkpoint, not {checkpoint['arch']}")
        checkpoint = {k: v for k, v in checkpoint.items() if k != "extra"}
        kind = SINET
    return MemberSpec(kind, path.name, checkpoint, weight, tuple(sizes))


def save_ensemble(path: str | os.PathLike, members: Sequence[MemberSpec], priority: str = DEFAULT_PRIORITY,
                  acceptance: Mapping[str, Any] | None = None, card: Mapping[str, Any] | None = None,
                  pack: bool = True) -> Path:
    """Write an ensemble file atomically.

    Args:
        path: destination.
        members: the members (their checkpoints are embedded).
        priority: name of the priority rule (:data:`~pipeline.teacher.signals.PRIORITY_RULES`).
        acceptance: the calibrated auto-accept rule (``max_priority`` and its evidence).
        card: provenance and figures for the model card.
        pack: store large weights as int8 (see :func:`pack_state_dict`).
    """
    if priority not in PRIORITY_RULES:
        raise ValueError(f"priority rule {priority!r} is not one of {sorted(PRIORITY_RULES)}")
    entries = []
    for member in members:
        entry = member.to_dict()
        if pack:
            entry["checkpoint"] = {**entry["checkpoint"],
                                   "state_dict": pack_state_dict(entry["checkpoint"]["state_dict"])}
        entries.append(entry)
    payload = {"format": FORMAT, "members": entries, "priority": priority, "acceptance": dict(acceptance or {}),
               "card": dict(card or {})}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_ensemble(path: str | os.PathLike) -> dict[str, Any]:
    """The ensemble file's dict, or :class:`CheckpointError` naming what the file holds instead."""
    payload = load_weights_only(path)
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        raise CheckpointError(path, f"not a teacher ensemble ({FORMAT})")
    return dict(payload)


def assemble(specs: Sequence[MemberSpec], priority: str = DEFAULT_PRIORITY,
             acceptance: Mapping[str, Any] | None = None, card: Mapping[str, Any] | None = None,
             hash: str = "", source: str | os.PathLike = "teacher",
             device: torch.device = torch.device("cpu")) -> TeacherEnsemble:
    """Build the members of ``specs`` into a :class:`TeacherEnsemble` (weights normalised to sum to 1).

    Raises:
        CheckpointError: an unknown member kind or priority rule, or weights that do not fit (named by ``source``).
    """
    if priority not in PRIORITY_RULES:
        raise CheckpointError(source, f"unknown priority rule {priority!r}")
    members = []
    for spec in specs:
        if spec.kind not in KINDS:
            raise CheckpointError(source, f"member {spec.name}: unknown kind {spec.kind!r}")
        checkpoint = {**spec.checkpoint, "state_dict": unpack_state_dict(spec.checkpoint["state_dict"])}
        members.append(build_member(spec.kind, checkpoint, spec.sizes, device, f"{source} [{spec.name}]"))
    total = sum(spec.weight for spec in specs)
    return TeacherEnsemble(members, [spec.weight / total for spec in specs], [spec.name for spec in specs],
                           priority, dict(acceptance or {}), dict(card or {}), hash)


def load_any_teacher(path: str | os.PathLike, device: torch.device = torch.device("cpu")) -> TeacherEnsemble:
    """Load a DeepLabV3+ checkpoint, a SINet checkpoint or an ensemble file as a :class:`TeacherEnsemble`.

    Raises:
        CheckpointError: the file is none of these, or its weights do not fit.
    """
    path = Path(path)
    payload = load_weights_only(path)
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT:
        specs = [MemberSpec(m["kind"], m["name"], m["checkpoint"], m["weight"], tuple(m["sizes"]))
                 for m in payload["members"]]
        return assemble(specs, payload["priority"], payload["acceptance"], payload["card"], teacher_hash(path), path,
                        device)
    return assemble([member_from_file(path)], hash=teacher_hash(path), source=path, device=device)
