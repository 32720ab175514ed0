"""A hop's arithmetic after the front-end (calibration, quantisation, probabilities) is the old formulas' (issue 16)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from emostream.engine.calibration import Calibrator, SpeakerStats, blended
from emostream.inference.model import EmotionModel
from emostream.inference.tflite import dequantize, quantizer

F32 = npt.NDArray[np.float32]


def _old_blended(stats: SpeakerStats, pop_mean: F32, pop_std: F32, n0: float) -> tuple[F32, F32]:
    n = stats.count
    mu_pop = np.asarray(pop_mean, dtype=np.float64)
    var_pop = np.square(np.asarray(pop_std, dtype=np.float64))
    if n <= 0:
        return mu_pop.astype(np.float32), np.sqrt(var_pop).astype(np.float32)
    mean = (n0 * mu_pop + n * stats.mean) / (n0 + n)
    var = (n0 * var_pop + n * stats.var) / (n0 + n)
    return mean.astype(np.float32), np.sqrt(np.maximum(var, 1e-8)).astype(np.float32)


@pytest.mark.parametrize("prior_windows", [0.0, 20.0, 7])
def test_calibrator_blends_as_the_old_formula_bit_for_bit(prior_windows: float) -> None:
    rng = np.random.default_rng(int(prior_windows))
    pop_mean = rng.standard_normal(371).astype(np.float32) * 100
    pop_std = rng.uniform(1e-5, 50, 371).astype(np.float32)
    calibrator = Calibrator(pop_mean, pop_std, prior_windows=prior_windows, horizon_windows=30)
    for _ in range(60):  # past the horizon: exponential forgetting
        expected = _old_blended(calibrator.stats, pop_mean, pop_std, prior_windows)
        for got in (calibrator.normalisation(), blended(calibrator.stats, pop_mean, pop_std, prior_windows)):
            assert got[0].tobytes() == expected[0].tobytes() and got[1].tobytes() == expected[1].tobytes()
        x = pop_mean + pop_std * rng.standard_normal(371).astype(np.float32) * rng.uniform(0.0, 3.0)
        x[:3] = pop_mean[:3]  # a column with no spread: the variance floor
        calibrator.update(x)


def _old_quantize(x: F32, detail: dict[str, Any]) -> npt.NDArray[Any]:
    scale, zero_point = detail["quantization"]
    info = np.iinfo(np.dtype(detail["dtype"]))
    return np.clip(np.rint(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def _old_dequantize(y: npt.NDArray[Any], detail: dict[str, Any]) -> F32:
    scale, zero_point = detail["quantization"]
    out: F32 = ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return out


@pytest.mark.parametrize("name", ["fast", "accurate"])
def test_quantisation_and_probabilities_are_the_old_formulas(name: str) -> None:
    model = EmotionModel.load(name)
    runner: Any = model._runner
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((7, *model.metadata.input_shape)) * 3).astype(np.float32)
    x[0, :5] = [1e6, -1e6, 0.0, -0.0, np.float32(0.5) * runner._input["quantization"][0]]  # clipped, zeros, a tie
    np.testing.assert_array_equal(quantizer(runner._input)(x.copy()), _old_quantize(x, runner._input))
    codes = np.arange(-128, 128, dtype=np.int8).reshape(32, 8)
    assert dequantize(codes, runner._output).tobytes() == _old_dequantize(codes, runner._output).tobytes()
    raw = runner.run(x)
    probs = np.clip(raw, 0.0, None)
    expected = (probs / np.maximum(probs.sum(axis=1, keepdims=True), 1e-9)).astype(np.float32)
    assert model.predict_normalised(x).tobytes() == expected.tobytes()
