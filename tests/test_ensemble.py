"""`--ensemble N`: N networks with seeds SEED..SEED+N-1, their probabilities averaged in one model."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from emostream.errors import ConfigError
from emostream.train.fit import TrainConfig, fit
from emostream.train.models import ModelConfig

# A marker, not importorskip: importing TensorFlow at collection costs ~12 s even when slow tests are deselected.
needs_tf = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow (train extra)")


def _blobs(n_per: int = 40, dim: int = 6, labels: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs, one per label, 2 std apart on one axis each."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_per * labels, dim)).astype(np.float32)
    y = np.repeat(np.arange(labels), n_per).astype(np.int32)
    x[np.arange(len(y)), y] += 2.0
    return x, y


def test_ensemble_size_is_checked() -> None:
    with pytest.raises(ConfigError, match="--ensemble is 0"):
        TrainConfig(ensemble=0)
    with pytest.raises(ConfigError, match="to 8 members"):
        TrainConfig(ensemble=9)


@needs_tf
@pytest.mark.slow
def test_ensemble_averages_the_members_trained_alone() -> None:
    x, y = _blobs()
    base = TrainConfig(family="mlp", epochs=3, batch_size=16, seed=7, model=ModelConfig(width=8))
    alone = [fit(x, y, 3, TrainConfig(**{**base.__dict__, "seed": s})) for s in (7, 8)]
    both = fit(x, y, 3, TrainConfig(**{**base.__dict__, "ensemble": 2}))
    expected = (alone[0].predict(x) + alone[1].predict(x)) / 2
    np.testing.assert_allclose(both.predict(x), expected, atol=1e-5)
    # Members differ (their seeds), so the mean is not either of them.
    assert float(np.abs(alone[0].predict(x) - alone[1].predict(x)).max()) > 1e-3
    assert both.epochs_run == 3 and len(both.history["loss"]) == 3
    np.testing.assert_allclose(both.history["loss"], np.mean([a.history["loss"] for a in alone], axis=0), rtol=1e-6)
