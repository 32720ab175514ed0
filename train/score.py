"""Scoring a finished model (a shipped or exported ``NAME.json`` + ``.tflite``) on a corpus's windows.

Used for figures of a model that was trained once (the shipped models, a baseline) on
corpora it never heard: every clip is scored with the model's own normalisation and, when
the model calibrates, the runtime's speaker calibration after 0 s and ``seconds`` of the
same speaker's other speech (random order), as :func:`emostream.train.evaluate.run_calibrated_split`
scores a fold. Inputs are the model's columns of the cached windows (a model without the
speech embedding reads the first columns of fused windows: the summary statistics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError
from emostream.train.calibration import CalibrationSpec, SpeakerPool, make_calibrated
from emostream.train.dataset import Channel, WindowSet, clip_scores
from emostream.train.export import run_tflite

F32 = npt.NDArray[np.float32]


def load_model(path: Path) -> tuple[dict[str, Any], bytes]:
    """A model's metadata and int8 TFLite bytes from its JSON path."""
    meta = json.loads(path.read_text(encoding="utf-8"))
    return meta, (path.parent / f"{meta['name']}.tflite").read_bytes()


def score_clips(
    meta: dict[str, Any],
    model: bytes,
    wset: WindowSet,
    clips: npt.NDArray[np.intp],
    *,
    seconds: float,
    seed: int = 555,
) -> F32:
    """Clip probabilities (len(clips), n_labels) after ``seconds`` of calibration speech (0 = none)."""
    mean = np.asarray(meta["normalization"]["mean"], dtype=np.float32)
    std = np.asarray(meta["normalization"]["std"], dtype=np.float32)
    width = mean.size
    if wset.features.shape[1] < width:
        raise ConfigError(f"the windows have {wset.features.shape[1]} columns; model {meta['name']} reads {width}")
    x = wset.features[:, :width]
    calibration = meta.get("calibration")
    if calibration is None:
        idx = np.flatnonzero(np.isin(wset.clip_index, clips))
        z = ((x[idx] - mean) / std).astype(np.float32)
    else:
        spec = CalibrationSpec(
            prior_windows=float(calibration["prior_windows"]),
            horizon_windows=int(calibration["trained_with"]["horizon_windows"]),
            hop_s=float(meta["feature_config"]["window_hop_ms"]) / 1000.0,
        )
        pool = SpeakerPool(wset, x)
        rng = np.random.default_rng(seed)
        z, idx = make_calibrated(
            pool, clips, spec, rng, pop=(mean, std), reps=1, seconds=seconds, mode="random", all_windows=True
        )
    p = run_tflite(model, z)
    return clip_scores(p, wset.is_speech[idx], wset.clip_index[idx], len(wset.clips))[clips]


def score_corpus(
    model_json: Path, name: str, folder: Path, *, cache_dir: Path | None = Path("cache"), workers: int = 2
) -> dict[str, float]:
    """The loco figures (raw, calibrated 60 s, both through G.711) of a finished model on every clip of a corpus."""
    from emostream.frontend.features import FeatureConfig  # noqa: PLC0415
    from emostream.frontend.vad import VadConfig  # noqa: PLC0415
    from emostream.train import loco  # noqa: PLC0415
    from emostream.train.augment import AugmentConfig  # noqa: PLC0415
    from emostream.train.corpora import get  # noqa: PLC0415
    from emostream.train.dataset import build_windows  # noqa: PLC0415

    meta, model = load_model(model_json)
    corpus = get(name)
    clips = corpus.list_clips(folder)
    fcfg = FeatureConfig.from_dict(meta["feature_config"])
    vcfg = VadConfig.from_dict(meta["vad_config"])
    every = np.arange(len(clips))
    probs: dict[str, F32] = {}
    channels: tuple[tuple[Channel, str], ...] = (("wideband", "int8"), ("g711", "g711"))
    for channel, prefix in channels:
        wset = build_windows(
            clips, fcfg, vcfg, aug=AugmentConfig(seed=42), channel=channel, cache_dir=cache_dir, workers=workers
        )
        probs[f"{prefix}_0s"] = score_clips(meta, model, wset, every, seconds=0.0)
        probs[prefix] = score_clips(meta, model, wset, every, seconds=60.0)
    return loco.corpus_figures(probs, np.array([c.label for c in clips], dtype=np.int32), corpus.label_mask)


def main(argv: list[str] | None = None) -> int:
    """`python -m emostream.train.score --model M.json --corpus nemo=DIR ... --out FILE`: a model on unseen corpora."""
    import argparse  # noqa: PLC0415

    from emostream.errors import EmoStreamError  # noqa: PLC0415
    from emostream.train import loco  # noqa: PLC0415
    from emostream.train.cli import corpus_folders  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m emostream.train.score", description=main.__doc__)
    parser.add_argument("--model", required=True, type=Path, help="a model's JSON (e.g. models/accurate.json)")
    parser.add_argument("--corpus", action="append", required=True, metavar="NAME=DIR", help="repeatable")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--cache", default="cache", help="feature cache folder ('' = none)")
    args = parser.parse_args(argv)
    try:
        per: dict[str, dict[str, float]] = {}
        for name, folder in corpus_folders(args.corpus).items():
            per[name] = score_corpus(args.model, name, folder, cache_dir=Path(args.cache) if args.cache else None)
            print(name, " ".join(f"{k} {v:.3f}" for k, v in per[name].items()))
    except EmoStreamError as exc:
        print(f"error: {exc}")
        return exc.exit_code
    if args.out:
        mean = loco.mean_figures(list(per.values()))
        report = {"protocol": "unseen_corpora", "model": str(args.model), "mean": mean, "corpora": per}
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
