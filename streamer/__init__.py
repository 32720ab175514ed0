"""emostream runtime: real-time speech-emotion monitoring (no TensorFlow needed)."""

from __future__ import annotations

__version__ = "0.1.0"
