"""Run the runtime in a fresh process and report what it cost: ``python -m benchmarks.probe``.

Imports only ``emostream`` (plus numpy/soundfile), loads a model, streams a file through
``FileSource(fast=True)`` + ``ChannelPipeline`` in the engine's 50 ms blocks, and prints
JSON lines on stdout: ``{"type": "hop", ...}`` as soon as the first hop exists (for the
start-up timing), then one ``{"type": "probe", ...}`` line with the peak RSS (VmHWM), the
current RSS and whether TensorFlow or Keras ended up in ``sys.modules``. With
``--block-tensorflow`` importing tensorflow/keras raises ImportError, proving the runtime
does not need them.
"""

from __future__ import annotations

import argparse
import importlib.abc
import json
import sys
from collections.abc import Sequence
from typing import Any

BLOCKED = ("tensorflow", "keras", "tf_keras")


class _Blocker(importlib.abc.MetaPathFinder):
    """Makes TensorFlow and Keras unimportable."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> None:
        if fullname.split(".", maxsplit=1)[0] in BLOCKED:
            raise ImportError(f"{fullname} is blocked by benchmarks.probe --block-tensorflow")


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet_mlp")
    parser.add_argument("--file", required=True)
    parser.add_argument("--block-tensorflow", action="store_true")
    args = parser.parse_args(argv)
    if args.block_tensorflow:
        sys.meta_path.insert(0, _Blocker())

    from emostream.audio.sources import FileSource
    from emostream.engine.pipeline import ChannelPipeline
    from emostream.engine.smoothing import SmoothingConfig
    from emostream.inference.model import EmotionModel

    model = EmotionModel.load(args.model, num_threads=1)
    pipeline = ChannelPipeline(model, model.metadata.vad_config, SmoothingConfig())
    source = FileSource(args.file, block_ms=50, fast=True)
    if source.rate_hz != model.metadata.feature_config.sample_rate_hz:
        raise SystemExit(f"probe expects a {model.metadata.feature_config.sample_rate_hz} Hz file")
    source.start()
    hops = 0
    while (block := source.read()) is not None:
        results = pipeline.process(block.mean(axis=1))
        if results and hops == 0:
            print(json.dumps(results[0].to_dict()), flush=True)
        hops += len(results)
    hops += len(pipeline.flush())
    source.stop()
    report = {
        "type": "probe",
        "hops": hops,
        "vmhwm_kb": _status_kb("VmHWM"),
        "vmrss_kb": _status_kb("VmRSS"),
        "tensorflow_imported": any(m.split(".")[0] == "tensorflow" for m in sys.modules),
        "keras_imported": any(m.split(".")[0] == "keras" for m in sys.modules),
        "blocked": args.block_tensorflow,
        "backend": model.backend,
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
