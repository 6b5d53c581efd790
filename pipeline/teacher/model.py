"""The teacher: ``segmentation_models_pytorch.DeepLabV3Plus`` with any smp encoder, and its configuration.

smp 0.6 fetches ImageNet encoder weights from the Hugging Face hub (``hf_hub_download``), which retries for
about 25 s when the hub is unreachable. :func:`build_model` first looks in the local hub cache only, then, if
the weights are not there, probes the hub with a short timeout and fails at once with a clear message when it
cannot be reached.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlparse

from torch import nn

from sinet_plus.errors import UserError

DEFAULT_ENCODER = "se_resnext50_32x4d"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HUB_PROBE_SECONDS = 3.0


@dataclass
class TeacherConfig:
    """Everything needed to rebuild the teacher and feed it the way it was trained.

    Args:
        encoder: smp encoder name (``se_resnext50_32x4d``, ``mobilenet_v2``, ``resnet18``, ``tu-...``).
        classes: output channels; 1 = person logit.
        input_size: long side of the training crops in pixels (inference defaults to its own long side).
        mean: per-channel mean of RGB values scaled to 0..1, subtracted before the model.
        std: per-channel standard deviation, divided after the mean.
        encoder_weights: what the encoder started from (``imagenet``, ``none``, or ``init:<hash>``); provenance.
        decoder_channels: width of the DeepLabV3+ decoder (smp's default 256; narrower is faster on a CPU, see
            docs/teacher.md).
    """

    encoder: str = DEFAULT_ENCODER
    classes: int = 1
    input_size: int = 512
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    encoder_weights: str = "none"
    decoder_channels: int = 256
    architecture: str = field(default="DeepLabV3Plus", init=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so the config loads with ``weights_only=True``."""
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherConfig:
        """Rebuild from :meth:`to_dict` output; refuses other architectures."""
        if data.get("architecture") != "DeepLabV3Plus":
            raise ValueError(f"architecture {data.get('architecture')!r} is not DeepLabV3Plus")
        return cls(encoder=str(data["encoder"]), classes=int(data["classes"]), input_size=int(data["input_size"]),
                   mean=tuple(float(v) for v in data["mean"]), std=tuple(float(v) for v in data["std"]),
                   encoder_weights=str(data.get("encoder_weights", "none")),
                   decoder_channels=int(data.get("decoder_channels", 256)))


class EncoderWeightsUnavailable(UserError):
    """ImageNet weights were asked for but are neither cached nor downloadable."""


def build_model(config: TeacherConfig, imagenet: bool = False) -> nn.Module:
    """A DeepLabV3+ for ``config``, its encoder from ImageNet weights when ``imagenet`` is set.

    Args:
        config: encoder name and number of classes.
        imagenet: load the encoder's ImageNet weights (cache, else hub); otherwise random initialisation.

    Raises:
        EncoderWeightsUnavailable: within a few seconds, when the weights are not cached and the hub is
            unreachable (offline machines).
        UserError: unknown encoder name (smp lists the known ones).
    """
    import segmentation_models_pytorch as smp

    def make(weights: str | None) -> nn.Module:
        try:
            return smp.DeepLabV3Plus(encoder_name=config.encoder, encoder_weights=weights, classes=config.classes,
                                     decoder_channels=config.decoder_channels)
        except KeyError as error:  # smp's message lists the known encoders
            raise UserError(error.args[0] if error.args else f"unknown encoder {config.encoder!r}") from None

    if not imagenet:
        return make(None)
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        with _hub_offline():
            return make("imagenet")
    except LocalEntryNotFoundError:
        pass
    reason = _hub_unreachable()
    if reason:
        raise EncoderWeightsUnavailable(
            f"ImageNet weights for encoder {config.encoder!r} are not in the Hugging Face cache and the hub is "
            f"unreachable ({reason}). Train from scratch with --encoder-weights none, start from a local "
            f"checkpoint with --init CKPT, or pre-fetch the weights on a machine with internet into HF_HOME.")
    return make("imagenet")


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Make ``huggingface_hub`` use its cache only (no network, no retry loop) inside the block."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def _hub_unreachable(timeout: float = HUB_PROBE_SECONDS) -> str:
    """Why the hub cannot be reached (empty when a TCP connection succeeds), within ``timeout`` seconds.

    Name resolution has no timeout of its own, so the probe runs in a daemon thread that is abandoned when late.
    """
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    result: list[str] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append("")
        except OSError as error:
            result.append(f"{host}:{port}: {error}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else f"{host}:{port}: no answer within {timeout:.0f} s"
