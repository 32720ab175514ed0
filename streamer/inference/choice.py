"""[model]: which model to run and how many CPU threads it may use."""

from __future__ import annotations

from dataclasses import dataclass

from emostream.errors import InvalidSettingError
from emostream.inference.metadata import DEFAULT_MODEL


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """``name``: a shipped model (``accurate``, the default, ``fast``, ``resnet_mlp``, ``cnn``) or a path
    to a model .json/.tflite; ``num_threads``: CPU threads of the TFLite interpreter."""

    name: str = DEFAULT_MODEL
    num_threads: int = 1

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidSettingError("name", "is empty; expected a shipped model name or a path to a .json/.tflite")
        if not 1 <= self.num_threads <= 64:
            raise InvalidSettingError("num_threads", f"is {self.num_threads}; expected 1 to 64")
