"""Speaker statistics from recordings: ``emostream calibrate`` and ``emostream analyze --calibrate``.

The statistics are those the live calibration keeps (:mod:`emostream.engine.calibration`):
mean and variance of the raw model input over speech windows, here pooled over every
given file (one speaker, or one recording setup), with the windows training used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from emostream.apps.analyze import stream_windows
from emostream.audio.files import MonoStream
from emostream.engine.calibration import CalibrationProfile, SpeakerStats, blended, front_end_fingerprint
from emostream.engine.plan import SessionPlan
from emostream.errors import AudioInputError, ConfigError
from emostream.frontend.features import FloatArray

POOLED_HORIZON = 10**9  # no forgetting: every speech window of the files counts the same


def pooled_statistics(paths: Sequence[str | Path], plan: SessionPlan) -> tuple[SpeakerStats, float]:
    """Statistics of the model input over the speech windows of all ``paths``, and the speech seconds they hold.

    Raises AudioInputError for an unreadable file, ConfigError when the model has no
    calibration or the files hold no speech.
    """
    if not plan.calibrated:
        raise ConfigError(
            f"model {plan.model_name!r} was not trained for speaker calibration (or [calibration] enabled = false); "
            "use a model that was, such as the shipped default"
        )
    timing = plan.file_timing
    stats = SpeakerStats(plan.model.metadata.norm_mean.size, POOLED_HORIZON)
    speech_s = 0.0
    for path in paths:
        with MonoStream(path, timing.sample_rate_hz) as stream:  # in blocks: memory does not grow with the length
            for windows in stream_windows(stream, plan):
                for window in windows:
                    speech_s += window.speech_ratio * timing.hop_s
                    if window.is_speech:
                        stats.update(plan.model.select(window.features))
    if stats.count == 0:
        raise ConfigError(
            f"no speech found in {len(paths)} file(s) to calibrate with; give recordings of the speaker talking"
        )
    return stats, speech_s


def pooled_normalisation(paths: Sequence[str | Path], plan: SessionPlan) -> tuple[FloatArray, FloatArray]:
    """(mean, std) to normalise ``plan``'s model input with, from the pooled statistics of ``paths``."""
    stats, _ = pooled_statistics(paths, plan)
    meta = plan.model.metadata
    return blended(stats, meta.norm_mean, meta.norm_std, float(plan.prior_windows or 0.0))


def profile_normalisation(plan: SessionPlan) -> tuple[FloatArray, FloatArray] | None:
    """(mean, std) from the plan's saved profile, if it has one."""
    if plan.profile is None:
        return None
    calibrator = plan.calibrator()
    return None if calibrator is None else calibrator.normalisation()


def make_profile(paths: Sequence[str | Path], plan: SessionPlan) -> CalibrationProfile:
    """A saved-profile form of the pooled statistics of ``paths`` for ``plan``'s model."""
    stats, speech_s = pooled_statistics(paths, plan)
    meta = plan.model.metadata
    return CalibrationProfile(
        model=meta.name,
        model_sha256=meta.sha256,
        front_end=front_end_fingerprint(meta.to_dict()),
        count=stats.count,
        mean=tuple(float(v) for v in stats.mean),
        var=tuple(float(v) for v in stats.var),
        speech_seconds=speech_s,
        sources=tuple(str(p) for p in paths),
    )


def check_readable(paths: Sequence[str | Path]) -> None:
    """AudioInputError naming the first path that is not a file."""
    for path in paths:
        if Path(path).is_dir():
            raise AudioInputError(f"{path}: is a folder; give the recordings of the speaker (or the folder's files)")
        if not Path(path).is_file():
            raise AudioInputError(f"{path}: no such file; give recordings of the speaker to calibrate with")
