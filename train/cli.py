"""Subcommands `train`, `evaluate` and `fetch-ravdess` (registered into `emostream` and `python -m train`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emostream.engine.reading import ReadingConfig
from emostream.errors import ConfigError, DatasetError
from emostream.frontend.embedding import EMBEDDING_VARIANTS
from emostream.frontend.vad import VadConfig
from emostream.train.augment import AugmentConfig
from emostream.train.calibration import CalibrationSpec
from emostream.train.fetch import register as register_fetch
from emostream.train.fetch_ased import register as register_fetch_ased
from emostream.train.fetch_nemo import register as register_fetch_nemo
from emostream.train.fit import BALANCES, TrainConfig
from emostream.train.models import FAMILIES, SUMMARY_FAMILIES, ModelConfig
from emostream.train.ravdess import ENV_VAR, SONG_ENV_VAR, default_data_dir, default_song_dir

DEFAULT_EPOCHS: dict[str, int] = {"resnet_mlp": 40, "mlp": 40, "cnn": 30}


def _data_dir(value: str | None) -> Path:
    if value:
        return Path(value)
    env = default_data_dir()
    if env is None:
        raise DatasetError(f"no data folder given; pass --data DIR or set {ENV_VAR} to the RAVDESS folder")
    return env


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help=f"RAVDESS folder with Actor_XX/ (default: ${ENV_VAR})")
    p.add_argument("--model", choices=FAMILIES, default="resnet_mlp", help="model family")
    p.add_argument("--epochs", type=int, help="epoch cap (evaluate: with early stopping; train: exact)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--dropout", type=float, default=0.4)
    p.add_argument("--l2", type=float, default=1e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0 = off)")
    p.add_argument("--select-k", type=int, default=0, help="keep the k best summary columns (0 = all)")
    p.add_argument("--no-class-weights", action="store_true")
    p.add_argument("--window-ms", type=float, default=2000.0, help="analysis window (multiple of 20 ms)")
    p.add_argument("--hop-ms", type=float, default=500.0, help="hop between windows (multiple of 20 ms)")
    p.add_argument(
        "--legacy-features",
        action="store_true",
        help="first shipped front-end: no pitch and no delta statistics (90 summary inputs / 40 MFCC channels)",
    )
    p.add_argument(
        "--embedding-stride",
        type=int,
        default=0,
        metavar="FRAMES",
        help="fuse the pretrained speech embedding into the summary input, one embedding every FRAMES "
        "10 ms mel frames (50 = two a second; 0 = off, the default)",
    )
    p.add_argument(
        "--embedding-variant",
        choices=EMBEDDING_VARIANTS,
        default="float",
        help="with --embedding-stride: the embedding model's file (default float, the vendored model: readings hold "
        "under inaudible changes; int8 costs 3.3x less CPU per embedding but a gain of 0.999 moves its embeddings by "
        "5%% RMS and changes readings, issue 19 item 13: see docs/stability.md)",
    )
    p.add_argument("--embedding-int8", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--voice-encoder",
        action="store_true",
        help="fuse the pretrained voice encoder's embedding of each window's last 1.6 s into the summary input "
        "(+256 inputs; models/voice_encoder/README.md)",
    )
    p.add_argument(
        "--voice-layer-means",
        default="",
        metavar="LAYERS",
        help="with --voice-encoder: also fuse the time mean of these LSTM layers' outputs over the block, e.g. 2,3 "
        "(+256 inputs each; the LSTM only, not a student; docs/results.md v8)",
    )
    p.add_argument(
        "--voice-speech-lookback-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="with --voice-encoder: give the encoder the last 1.615 s of VAD speech within MS before each window's "
        "end (1615-10000) instead of the window's last 1.615 s of audio (default 0 = audio, pauses included)",
    )
    p.add_argument(
        "--voice-student",
        metavar="FILE",
        help="with --voice-encoder: run this distilled student (FILE.tflite, from python -m "
        "emostream.train.voice_student) in the encoder's place; a file in models/voice_encoder/ is recorded by name",
    )
    p.add_argument(
        "--whisper-layers",
        default="",
        metavar="LAYERS",
        help="fuse the mean and std of these Whisper tiny.en encoder blocks' rows over each speech window into the "
        "summary input, e.g. 2,3 (1-4; +768 inputs each; models/whisper_encoder/README.md; default off)",
    )
    p.add_argument(
        "--whisper-chunk-ms",
        type=float,
        default=500.0,
        metavar="MS",
        help="with --whisper-layers: encode the stream in chunks of MS, each on its own (a multiple of 20 ms that "
        "divides --window-ms and --hop-ms; default 500)",
    )
    p.add_argument(
        "--song",
        default=None,
        metavar="DIR",
        help=f"add the RAVDESS song clips in DIR to the training data (default: ${SONG_ENV_VAR} or none; "
        "'' = none); actor-independent splits keep an actor's speech and song together, EmoBox tests speech only",
    )
    p.add_argument(
        "--calibration-prior",
        type=float,
        default=0.0,
        metavar="N0",
        help="train for speaker calibration with prior strength N0 speech windows (e.g. 20; 0 = off): inputs "
        "normalised with statistics simulated from the same speaker's other clips, as the runtime calibrates",
    )
    p.add_argument(
        "--calibration-reps", type=int, default=3, metavar="R", help="simulated calibrations per training clip"
    )
    p.add_argument(
        "--corpus",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="add a corpus to the data (repeatable): nemo=DIR, ased=DIR (folders as `emostream fetch-nemo` / "
        "`fetch-ased` write them); the loss scores only the labels each corpus has",
    )
    p.add_argument(
        "--balance",
        choices=BALANCES,
        default="corpus_class",
        help="class weights: every (corpus, class) the same total weight, or also every speaker within it",
    )
    p.add_argument("--vad-aggressiveness", type=int, default=2, choices=(0, 1, 2, 3))
    p.add_argument("--augment-copies", type=int, default=0, help="augmented copies per training clip")
    p.add_argument("--telephone-prob", type=float, default=0.3, help="share of augmented copies sent through G.711")
    p.add_argument(
        "--telephone-copy",
        action="store_true",
        help="add each training clip's G.711 mu-law round trip (8 kHz, 300-3400 Hz) as one more training copy",
    )
    p.add_argument(
        "--channel",
        choices=("wideband", "g711"),
        default="wideband",
        help="g711: train (and test) on every clip's G.711 mu-law round trip only, a model for phone lines",
    )
    p.add_argument(
        "--train-sentences",
        action="append",
        default=[],
        metavar="NAME=ID,ID",
        help="train (and validate) on these sentence ids of a corpus only, e.g. ased=01,02 (ASED's two sentences "
        "spoken in every emotion; its others predict the label); its test clips keep every sentence (repeatable)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--ensemble",
        type=int,
        default=1,
        metavar="N",
        help="train N networks with seeds SEED..SEED+N-1 and average their probabilities in one model (default 1)",
    )
    p.add_argument(
        "--arousal-output",
        action="store_true",
        help="give the network its own arousal output (sigmoid, high/low loss on every corpus), read as the "
        "arousal instead of the weighted probabilities",
    )
    p.add_argument(
        "--arousal-weight",
        type=float,
        default=1.0,
        help="weight of the arousal output's loss beside the labels' (default 1; needs --arousal-output)",
    )
    p.add_argument("--cache", default="cache", help="feature cache folder ('' = no cache)")
    p.add_argument("--workers", type=int, default=2, help="feature-extraction processes")


def _embedding_variant(args: argparse.Namespace) -> str:
    """``--embedding-variant``; the removed ``--embedding-int8`` is refused with the way to get what it did."""
    if args.embedding_int8:
        raise ConfigError(
            "--embedding-int8 was removed: the int8 embedding model changes readings on inaudible changes (a gain "
            "of 0.999; issue 19 item 13), so models use the float embedding (the default, --embedding-variant float); "
            "to reproduce an int8 model give --embedding-variant int8"
        )
    return str(args.embedding_variant)


def _spec(args: argparse.Namespace) -> Any:
    from emostream.train.run import RunSpec, feature_config_for  # noqa: PLC0415

    if args.window_ms % 20 or args.hop_ms % 20:
        raise ConfigError(f"--window-ms {args.window_ms} / --hop-ms {args.hop_ms}: both must be multiples of 20 ms")
    if args.calibration_prior < 0:
        raise ConfigError(f"--calibration-prior is {args.calibration_prior}; expected 0 (off) or N0 > 0 speech windows")
    if args.select_k < 0:
        raise ConfigError(f"--select-k is {args.select_k}; expected 0 (all columns) or K > 0 summary columns to keep")
    if args.select_k and args.model == "cnn":
        raise ConfigError(
            f"--select-k {args.select_k} with --model cnn: SelectKBest picks summary columns; the CNN reads MFCC "
            f"frames. Use --model {' or '.join(SUMMARY_FAMILIES)} or drop --select-k"
        )
    if args.select_k and args.calibration_prior > 0:
        raise ConfigError(
            f"--select-k {args.select_k} with --calibration-prior {args.calibration_prior:g}: calibrated training "
            "keeps all columns; drop one of them"
        )
    calibration = None
    if args.calibration_prior > 0:
        if args.model == "cnn":
            raise ConfigError("--calibration-prior with --model cnn: speaker calibration needs a summary family")
        calibration = CalibrationSpec(
            prior_windows=args.calibration_prior, reps=args.calibration_reps, hop_s=args.hop_ms / 1000.0
        )
    song = default_song_dir() if args.song is None else (Path(args.song) if args.song else None)
    corpora = corpus_folders(args.corpus)
    train_cfg = TrainConfig(
        family=args.model,
        epochs=args.epochs or DEFAULT_EPOCHS[args.model] * (2 if args.command == "evaluate" else 1),
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        label_smoothing=args.label_smoothing,
        mixup_alpha=args.mixup,
        select_k=args.select_k,
        class_weights=not args.no_class_weights,
        balance=args.balance,
        seed=args.seed,
        ensemble=args.ensemble,
        arousal_weight=args.arousal_weight,
        model=ModelConfig(dropout=args.dropout, l2=args.l2, arousal_output=args.arousal_output),
    )
    return RunSpec(
        data=_data_dir(args.data),
        train=train_cfg,
        features=feature_config_for(
            args.model,
            args.window_ms,
            args.hop_ms,
            legacy=args.legacy_features,
            embedding_stride_frames=args.embedding_stride,
            embedding_variant=_embedding_variant(args),
            voice=args.voice_encoder,
            voice_student=_voice_student(args),
            voice_layer_means=voice_layer_means(args),
            voice_speech_lookback_ms=args.voice_speech_lookback_ms,
            whisper_layers=whisper_layers(args),
            whisper_chunk_ms=args.whisper_chunk_ms,
        ),
        vad=VadConfig(aggressiveness=args.vad_aggressiveness),
        augment=AugmentConfig(copies=args.augment_copies, seed=args.seed, telephone_prob=args.telephone_prob),
        cache_dir=Path(args.cache) if args.cache else None,
        workers=args.workers,
        g711=not getattr(args, "no_g711", False),
        max_folds=getattr(args, "max_folds", 0),
        song=song,
        calibration=calibration,
        corpora=corpora,
        telephone_copy=_telephone_copy(args),
        channel=args.channel,
        train_sentences=train_sentences(getattr(args, "train_sentences", [])),
        loco_voice_students=_loco_students(args),
    )


def train_sentences(values: list[str]) -> dict[str, tuple[str, ...]]:
    """``--train-sentences NAME=ID,ID`` values as {corpus: sentence ids}; :class:`ConfigError` if malformed."""
    out: dict[str, tuple[str, ...]] = {}
    for value in values:
        name, sep, ids = value.partition("=")
        sentences = tuple(s.strip() for s in ids.split(",") if s.strip())
        if not sep or not name or not sentences:
            raise ConfigError(f"--train-sentences {value!r}: expected NAME=ID,ID, e.g. ased=01,02")
        if name in out:
            raise ConfigError(f"--train-sentences: {name!r} given twice; list all of its sentence ids in one value")
        out[name] = sentences
    return out


def _telephone_copy(args: argparse.Namespace) -> bool:
    if args.telephone_copy and args.channel == "g711":
        raise ConfigError(
            "--telephone-copy with --channel g711: a phone-line model already trains on the G.711 round trips only; "
            "drop --telephone-copy (or use --channel wideband)"
        )
    return bool(args.telephone_copy)


def _voice_student(args: argparse.Namespace) -> Path | None:
    if args.voice_student is None:
        return None
    if not args.voice_encoder:
        raise ConfigError(f"--voice-student {args.voice_student} needs --voice-encoder (the student replaces its LSTM)")
    return Path(args.voice_student)


def voice_layer_means(args: argparse.Namespace) -> tuple[int, ...]:
    """The LSTM layers of ``--voice-layer-means`` (with ``--voice-encoder``); :class:`ConfigError` if malformed."""
    text: str = getattr(args, "voice_layer_means", "")
    if not text:
        return ()
    if not args.voice_encoder:
        raise ConfigError(f"--voice-layer-means {text} needs --voice-encoder (the layers are the encoder's LSTM's)")
    return parse_layer_means(text, "--voice-layer-means")


def whisper_layers(args: argparse.Namespace) -> tuple[int, ...]:
    """The encoder blocks of ``--whisper-layers`` (``""`` = off); :class:`ConfigError` if malformed (the blocks
    themselves are checked by :class:`~emostream.frontend.whisper.WhisperConfig`)."""
    text: str = getattr(args, "whisper_layers", "")
    if not text:
        if getattr(args, "whisper_chunk_ms", 500.0) != 500.0:
            raise ConfigError(
                f"--whisper-chunk-ms {args.whisper_chunk_ms:g} needs --whisper-layers (the encoder is off)"
            )
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--whisper-layers is {text!r}; expected comma-separated encoder blocks, e.g. 2,3") from None


def parse_layer_means(text: str, option: str) -> tuple[int, ...]:
    """Comma-separated LSTM layer numbers (``""`` = none); :class:`ConfigError` naming ``option`` if malformed
    (the layers themselves are checked by :class:`~emostream.frontend.voice.VoiceConfig`)."""
    if not text:
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} is {text!r}; expected comma-separated LSTM layer numbers, e.g. 2,3") from None


def _loco_students(args: argparse.Namespace) -> dict[str, Path]:
    values: list[str] = getattr(args, "loco_voice_student", [])
    if values and not args.voice_encoder:
        raise ConfigError("--loco-voice-student needs --voice-encoder (each student replaces its LSTM)")
    return _named_paths(values, "--loco-voice-student", "expected NAME=FILE, e.g. nemo=students/no_nemo.tflite")


def _named_paths(
    values: list[str], flag: str, form: str, check_name: Callable[[str, str], None] | None = None
) -> dict[str, Path]:
    """``flag NAME=PATH`` values as {name: path}; :class:`ConfigError` (``form`` says the expected form) for
    a value without a name or a path, one ``check_name(value, name)`` refuses, or a name given twice."""
    out: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not path or (not name and check_name is None):
            raise ConfigError(f"{flag} {value!r}: {form}")
        if check_name is not None:
            check_name(value, name)
        if name in out:
            raise ConfigError(f"{flag} {name} given twice")
        out[name] = Path(path)
    return out


def corpus_folders(values: list[str]) -> dict[str, Path]:
    """``--corpus NAME=DIR`` values as {name: folder}; :class:`ConfigError` for a bad or repeated one."""
    from emostream.train.corpora import CORPORA  # noqa: PLC0415

    extra = [n for n in CORPORA if n not in ("ravdess", "ravdess_song")]

    def known(value: str, name: str) -> None:
        if name not in extra:
            raise ConfigError(
                f"--corpus {value!r}: unknown corpus {name!r}; expected one of {', '.join(extra)} "
                "(RAVDESS speech comes from --data, its song from --song)"
            )

    return _named_paths(values, "--corpus", "expected NAME=DIR, e.g. nemo=../shared/datasets/nemo-16k", known)


def _train(args: argparse.Namespace) -> int:
    from emostream.train.run import train_final  # noqa: PLC0415

    spec = _spec(args)
    reading = None
    given = (args.min_top_probability, args.max_input_rms_z, args.max_population_rms_z)
    if any(v is not None for v in given):
        columns = None
        if args.max_population_rms_z is not None:
            from emostream.train.evaluate import population_columns  # noqa: PLC0415

            columns = population_columns(spec.features, 0)
        reading = ReadingConfig(
            min_top_probability=args.min_top_probability or 0.0,
            max_input_rms_z=args.max_input_rms_z,
            max_population_rms_z=args.max_population_rms_z,
            population_columns=columns,
        )
    result = train_final(
        spec,
        Path(args.out),
        args.name or args.model,
        Path(args.metrics) if args.metrics else None,
        args.float_copy,
        reading=reading,
    )
    print(json.dumps(result, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from emostream.train.run import evaluate  # noqa: PLC0415

    spec = _spec(args)
    fold_dir = Path(args.save_fold_models) if args.save_fold_models else None
    results = evaluate(spec, args.protocol, Path(args.out), fold_dir)
    for name, res in results.items():
        m = res["mean"]
        if name == "loco":
            per = res.get("corpora", {})
            for corpus, figs in per.items():
                print(
                    f"loco {corpus}: ua4 {figs['ua4']:.4f} (calibrated {figs['ua4_calibrated']:.4f}), arousal "
                    f"{figs['arousal_ua']:.4f} (calibrated {figs['arousal_ua_calibrated']:.4f})"
                )
            print(
                f"loco mean: ua4 {m['ua4']:.4f}, ua4_calibrated {m['ua4_calibrated']:.4f}, arousal_ua_calibrated "
                f"{m['arousal_ua_calibrated']:.4f}  (int8, {len(per)} held-out corpora)"
            )
            continue
        spread = f" ± {res['std']['ua']:.4f}" if len(res["folds"]) > 1 and "std" in res else ""
        more = "".join(f"  {k} {m[k]:.4f}" for k in ("arousal_ua",) if k in m)
        if "curve" in m:
            more += "  curve " + ", ".join(f"{s} s {ua:.4f}" for s, ua in m["curve"].items())
        print(
            f"{name}: UA {m['ua']:.4f}{spread}  WA {m['wa']:.4f}  macro-F1 {m['macro_f1']:.4f}{more}  "
            f"(int8, {len(res['folds'])} split(s))"
        )
        if "float" in res:
            f = res["float"]["mean"]
            print(f"{name} float: UA {f['ua']:.4f}  WA {f['wa']:.4f}  macro-F1 {f['macro_f1']:.4f}")
    print(f"reports written to {args.out}")
    return 0


def register(subparsers: Any) -> None:
    """Add `train`, `evaluate` and the `fetch-*` commands to an argparse subparsers object."""
    p_train = subparsers.add_parser("train", help="train a model on all RAVDESS clips and export it as int8 TFLite")
    _add_common(p_train)
    p_train.add_argument("--out", default="models", help="output folder for NAME.tflite + NAME.json")
    p_train.add_argument("--name", help="model name (default: the family)")
    p_train.add_argument("--metrics", help="report folder whose metrics_*.json go into the metadata")
    p_train.add_argument("--float-copy", action="store_true", help="also write NAME.float.tflite")
    p_train.add_argument(
        "--min-top-probability",
        type=float,
        help="reading.min_top_probability in the metadata (default: the median chosen in --metrics reports, else 0)",
    )
    p_train.add_argument(
        "--max-input-rms-z", type=float, help="reading.max_input_rms_z in the metadata (default: as above, else none)"
    )
    p_train.add_argument(
        "--max-population-rms-z",
        type=float,
        help="reading.max_population_rms_z on the handcrafted summary columns (default: as above, else none); "
        "any of these three flags replaces the whole reading section",
    )
    p_train.set_defaults(func=_train, command="train")

    p_eval = subparsers.add_parser("evaluate", help="evaluate a model family (random split and/or EmoBox folds)")
    _add_common(p_eval)
    p_eval.add_argument(
        "--protocol",
        choices=(
            "random",
            "emobox",
            "emobox_speaker_adaptive",
            "emobox_calibrated",
            "random_speech_song",
            "loco",
            "all",
        ),
        default="emobox",
        help="emobox_calibrated needs --calibration-prior (and also writes emobox); random_speech_song needs --song; "
        "loco (leave one corpus out: RAVDESS speech, nEMO, ASED) needs --calibration-prior and --corpus",
    )
    p_eval.add_argument("--out", required=True, help="report folder, e.g. reports/NAME")
    p_eval.add_argument("--save-fold-models", help="write each EmoBox fold's int8 model to DIR/fold_K/")
    p_eval.add_argument("--no-g711", action="store_true", help="skip the G.711 round-trip test variant")
    p_eval.add_argument("--max-folds", type=int, default=0, help="only the first N EmoBox folds (0 = all 6)")
    p_eval.add_argument(
        "--loco-voice-student",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="loco with --voice-encoder: the student that never heard corpus NAME, for the fold holding it out "
        "(one per corpus; e.g. ravdess=students/no_ravdess.tflite)",
    )
    p_eval.set_defaults(func=_evaluate, command="evaluate")

    register_fetch(subparsers)  # also registered on its own: it needs no training extras
    register_fetch_nemo(subparsers)
    register_fetch_ased(subparsers)


def build_parser() -> argparse.ArgumentParser:
    """Standalone parser for `python -m train`."""
    parser = argparse.ArgumentParser(prog="python -m train", description="emostream training tools")
    register(parser.add_subparsers(dest="subcommand", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m train`: EmoStreamError -> message and its exit code."""
    from emostream.errors import EmoStreamError  # noqa: PLC0415

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except EmoStreamError as exc:
        print(f"error: {exc}")
        return exc.exit_code
