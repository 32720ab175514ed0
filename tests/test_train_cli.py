"""The train CLI: registration into an argparse parser, exit codes, fetch-ravdess from a local zip."""

from __future__ import annotations

import argparse

from conftest import one_clip_ravdess_zip

from emostream.train.cli import build_parser, main, register


def test_register_adds_the_three_commands():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    for argv in (["train", "--data", "D"], ["evaluate", "--data", "D", "--out", "R"], ["fetch-ravdess", "DEST"]):
        args = parser.parse_args(argv)
        assert callable(args.func)
    args = build_parser().parse_args(["evaluate", "--out", "R", "--protocol", "all", "--save-fold-models", "F"])
    assert (args.protocol, args.save_fold_models, args.model) == ("all", "F", "resnet_mlp")


def test_missing_data_gives_dataset_exit_code(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("EMOSTREAM_RAVDESS", raising=False)
    assert main(["evaluate", "--out", str(tmp_path / "r")]) == 6
    assert "--data" in capsys.readouterr().out
    assert main(["train", "--data", str(tmp_path / "missing")]) == 6


def test_fetch_ravdess_command_with_local_zip(tmp_path, capsys):
    archive, md5 = one_clip_ravdess_zip(tmp_path)
    dest = tmp_path / "out"
    assert main(["fetch-ravdess", str(dest), "--zip", str(archive), "--md5", md5]) == 0
    assert (dest / "Actor_05" / "03-01-05-02-01-01-05.flac").is_file()
    assert main(["fetch-ravdess", str(tmp_path / "out2"), "--zip", str(archive)]) == 6  # Zenodo MD5 ≠ this zip
    assert "MD5" in capsys.readouterr().out


def test_family_front_ends_default_to_pitch_and_deltas_and_legacy_restores_the_old_ones(tmp_path):
    from emostream.frontend.features import frame_feature_names, summary_feature_names
    from emostream.train.cli import _spec

    sizes = {}
    for model in ("resnet_mlp", "mlp", "cnn"):
        for legacy in ([], ["--legacy-features"]):
            argv = ["evaluate", "--data", str(tmp_path), "--out", "R", "--model", model, *legacy]
            args = build_parser().parse_args(argv)
            cfg = _spec(args).features
            names = frame_feature_names(cfg) if cfg.feature_set == "frames" else summary_feature_names(cfg)
            sizes[(model, bool(legacy))] = (len(names), cfg.pitch, cfg.deltas)
    assert sizes[("resnet_mlp", False)] == (115, True, True)
    assert sizes[("mlp", False)] == (115, True, True)
    assert sizes[("cnn", False)] == (42, True, False)
    assert sizes[("resnet_mlp", True)] == (90, False, False)
    assert sizes[("cnn", True)] == (40, False, False)


def test_whisper_flags_fuse_the_whisper_statistics_and_are_refused_where_they_cannot_apply(tmp_path):
    import pytest

    from emostream.errors import ConfigError
    from emostream.frontend.features import summary_feature_names
    from emostream.frontend.whisper import WhisperConfig
    from emostream.train.cli import _spec
    from emostream.train.dataset import cache_key

    def features(*flags: str):
        return _spec(build_parser().parse_args(["evaluate", "--data", str(tmp_path), "--out", "R", *flags])).features

    plain = features()
    assert plain.whisper is None
    cfg = features("--whisper-layers", "2,3", "--whisper-chunk-ms", "100")
    assert cfg.whisper == WhisperConfig(layers=(2, 3), chunk_ms=100.0)
    assert len(summary_feature_names(cfg)) == 115 + 2 * 2 * 384
    assert cache_key([], cfg, plain_vad(), plain_aug(), "wideband") != cache_key(
        [], plain, plain_vad(), plain_aug(), "wideband"
    )
    for flags, fragment in (
        (["--whisper-layers", "2", "--model", "cnn"], "--model cnn"),
        (["--whisper-chunk-ms", "1000"], "needs --whisper-layers"),
        (["--whisper-layers", "two"], "comma-separated"),
        (["--whisper-layers", "5"], "from 1 to 4"),
        (["--whisper-layers", "2", "--whisper-chunk-ms", "300"], "whole multiple"),
    ):
        with pytest.raises(ConfigError, match=fragment):
            features(*flags)


def plain_vad():
    from emostream.frontend.vad import VadConfig

    return VadConfig()


def plain_aug():
    from emostream.train.augment import AugmentConfig

    return AugmentConfig()
