"""The one exception family of emostream.

Every error a user can cause is an :class:`EmoStreamError` subclass whose message
says what was received, what was expected and how to fix it. The CLI turns them
into a one-line message and the exit code of the subclass.
"""

from __future__ import annotations


class EmoStreamError(Exception):
    """Base class of every error emostream reports to a user."""

    exit_code: int = 1


class ConfigError(EmoStreamError):
    """A setting in config.toml, the model metadata or on the command line is invalid."""

    exit_code = 2


class AudioInputError(EmoStreamError):
    """Audio that cannot be read or used: corrupt, empty, too short, wrong rate or channels."""

    exit_code = 3


class DeviceError(EmoStreamError):
    """An audio device is missing or cannot be opened."""

    exit_code = 4


class ModelError(EmoStreamError):
    """A model file or its metadata is missing, corrupt or does not fit this runtime."""

    exit_code = 5


class DatasetError(EmoStreamError):
    """A training data set is missing, incomplete or has unexpected file names."""

    exit_code = 6


class InvalidSettingError(ConfigError):
    """One setting of a stage config has a bad value; ``key`` names it.

    Raised by the configs' ``__post_init__`` checks. The config loader adds the file and
    section (``config.toml: [vad] aggressiveness is 7; expected 0, 1, 2 or 3``).
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key} {message}")
        self.key = key
        self.detail = message
