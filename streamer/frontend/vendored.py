"""Vendored encoder files (the voice encoder, the Whisper encoder): read once, refused unless their sha256 matches."""

from __future__ import annotations

import hashlib
from pathlib import Path

from emostream.errors import ModelError


def read_checked(path: Path, expected_sha256: str, context: str, *, name: str, folder: str, export: str) -> bytes:
    """The bytes of ``path``, or :class:`ModelError` (exit code 5) when it cannot be read or its sha256 differs.

    ``name``: what the file is ("voice encoder"); ``folder``: its folder under ``emostream/models``;
    ``export``: the module that regenerates it (``emostream.train.voice_encoder_export``); ``context``: what
    expects the digest (a model's JSON), named in the message.
    """
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ModelError(
            f"cannot read the {name} {path} ({exc.strerror}); expected the encoder shipped with emostream in "
            f"emostream/models/{folder}/: reinstall emostream"
        ) from exc
    digest = hashlib.sha256(content).hexdigest()
    if digest != expected_sha256:
        raise ModelError(
            f"{path} has sha256 {digest}, but {context} expects {expected_sha256} (model_sha256); the file is not "
            "the encoder this model was trained with: reinstall emostream, or regenerate it with "
            f"`python -m {export}` (models/{folder}/README.md)"
        )
    return content
