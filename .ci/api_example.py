"""The README's Python API example, run by .ci/run in a fresh non-editable install: `python api_example.py CLIP`."""

import importlib.util
import sys

import numpy as np
import soundfile as sf
import soxr

import emostream

assert importlib.util.find_spec("streamer") is None and importlib.util.find_spec("train") is None
audio, rate = sf.read(sys.argv[1], dtype="float32")
narrow = soxr.resample(audio, rate, 8000)
block = (np.stack([narrow, 0.5 * narrow], axis=1) * 32767).astype(np.int16)  # a stereo 8 kHz call

model = emostream.load_model()
mon = emostream.Monitor(model, sample_rate_hz=8000, channels=2, roles=("customer", "agent"))
hops = [event.to_dict() for event in mon.feed(block)]
hops += [event.to_dict() for event in mon.close()]
summary = mon.summary()
result = emostream.analyze_file(sys.argv[1])
shown = [h["emotion"] for h in hops if h["role"] == "customer" and h["emotion"]]
assert shown and all(h["scores"] is None for h in hops if h["role"] == "agent")
print(f"api: {summary.hops} hops, customer shows {shown[-1]}; analyze_file: {result.emotion} {result.confidence:.2f}")
