"""`emostream fetch-nemo` / `fetch-ased` on small archives built here (laid out as the source repositories are).

No network: downloads come from file:// URLs. No ASED audio: every WAV here is generated.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emostream.apps.cli import main
from emostream.errors import DatasetError
from emostream.train import fetch_ased, fetch_nemo
from emostream.train.fetch_ased import fetch_ased as run_ased
from emostream.train.fetch_common import packaged_sha_list, parse_sha_list, summarise
from emostream.train.fetch_nemo import fetch_nemo as run_nemo

REPO = Path(__file__).resolve().parents[1]
NEMO_TOP = f"nEMO-{fetch_nemo.COMMIT}/"
ASED_TOP = f"ASED_V1-{fetch_ased.COMMIT}/"


def wav_bytes(rate: int, seconds: float, freq: float, channels: int = 1) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.3 * np.sin(2 * np.pi * freq * t)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# (file_id, speaker as the original pads it, gender, age, normalized_text); not in name order, as the original
NEMO_ROWS = [
    ("MP0_sadness_45.wav", "        MP0", "male", "24", "postanowiłem wynająć samochód na wakacje"),
    ("EB0_anger_1.wav", "        EB0", "female", "27", "lubię czytać przed snem"),
    ("KD0_neutral_2.wav", "        KD0", "female", "28", "nie waśńmy się ze sobą"),
]


def nemo_tsv(rows: list[tuple[str, str, str, str, str]]) -> bytes:
    lines = ["file_id\temotion\traw_text\tnormalized_text\tspeaker_id\tgender\tage"]
    for file_id, speaker, gender, age, text in rows:
        emotion = file_id.split("_")[1]
        lines.append(f"{file_id}\t{emotion}\t{text.capitalize()}.\t{text}\t{speaker}\t{gender}\t{age}")
    return ("\n".join(lines) + "\n").encode("utf-8")


def nemo_zip(folder: Path, members: dict[str, bytes] | None = None) -> tuple[Path, dict[str, str], str]:
    """nEMO's repository archive in small: 24 kHz WAVs in samples/ (one stereo), data.tsv, README.md."""
    wavs = {
        "EB0_anger_1.wav": wav_bytes(24000, 0.3, 220.0),
        "KD0_neutral_2.wav": wav_bytes(24000, 0.4, 330.0, channels=2),
        "MP0_sadness_45.wav": wav_bytes(24000, 0.5, 440.0),
    }
    table = nemo_tsv(NEMO_ROWS)
    path = folder / "nemo.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(NEMO_TOP + "README.md", "# nEMO\n")
        archive.writestr(NEMO_TOP + "data.tsv", table)
        for name, data in (members or wavs).items():
            archive.writestr(NEMO_TOP + "samples/" + name, data)
    return path, {name: sha(data) for name, data in wavs.items()}, sha(table)


ASED_NAMES = (
    "01Neutral/n1-01-01-01-03.wav",
    "04Sad/S4-04-02-01-29.wav",
    "04Sad/s4-01-01-02-07.wav",
    "05Angry/a5-03-02-02-50.wav",
)


def ased_zip(folder: Path, names: tuple[str, ...] = ASED_NAMES) -> tuple[Path, dict[str, str], dict[str, bytes]]:
    """ASED's repository archive in small: generated 16 kHz WAVs in the emotion folders, README.md."""
    wavs = {name: wav_bytes(16000, 0.2 + 0.1 * i, 200.0 + 50 * i) for i, name in enumerate(names)}
    path = folder / "ased.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(ASED_TOP + "README.md", "# ASED\n")
        for name, data in wavs.items():
            archive.writestr(ASED_TOP + name, data)
    return path, {name: sha(data) for name, data in wavs.items()}, wavs


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_nemo_layout_table_and_flac(tmp_path):
    archive, sums, tsv_sha = nemo_zip(tmp_path)
    dest = tmp_path / "nemo"
    summary = run_nemo(dest, zip_file=archive, checksums=sums, data_tsv_sha256=tsv_sha)
    assert summary == "3 clips from 3 speakers, 3 emotions (anger, neutral, sadness)"
    assert tree(dest) == [
        "data.tsv",
        "samples",
        "samples/EB0_anger_1.flac",
        "samples/KD0_neutral_2.flac",
        "samples/MP0_sadness_45.flac",
    ]
    for name, seconds in (("EB0_anger_1", 0.3), ("KD0_neutral_2", 0.4), ("MP0_sadness_45", 0.5)):
        info = sf.info(str(dest / "samples" / f"{name}.flac"))
        assert (info.format, info.samplerate, info.channels, info.subtype) == ("FLAC", 16000, 1, "PCM_16")
        assert info.frames == round(seconds * 16000)
    # the original's row order, speaker ids stripped, sentence id from the name, CRLF as the shared folder has
    assert (dest / "data.tsv").read_bytes().decode("utf-8") == (
        "file\temotion\tspeaker_id\tgender\tage\tsentence_id\tnormalized_text\r\n"
        "MP0_sadness_45.flac\tsadness\tMP0\tmale\t24\t45\tpostanowiłem wynająć samochód na wakacje\r\n"
        "EB0_anger_1.flac\tanger\tEB0\tfemale\t27\t1\tlubię czytać przed snem\r\n"
        "KD0_neutral_2.flac\tneutral\tKD0\tfemale\t28\t2\tnie waśńmy się ze sobą\r\n"
    )
    assert archive.is_file()  # the user's own archive stays


def test_nemo_download_reports_stages_and_removes_the_archive(tmp_path):
    archive, sums, tsv_sha = nemo_zip(tmp_path)
    dest = tmp_path / "nemo"
    seen: list[tuple[str, int, int | None]] = []
    run_nemo(dest, url=archive.as_uri(), checksums=sums, data_tsv_sha256=tsv_sha, steps=lambda *a: seen.append(a))
    assert [s for s in dict.fromkeys(stage for stage, _, _ in seen)] == ["download", "verify", "convert"]
    assert ("download", archive.stat().st_size, archive.stat().st_size) in seen
    assert seen[-1] == ("convert", 3, 3)
    assert sorted(p.name for p in dest.iterdir()) == ["data.tsv", "samples"]

    kept = tmp_path / "kept"
    run_nemo(kept, url=archive.as_uri(), checksums=sums, data_tsv_sha256=tsv_sha, keep_zip=True)
    assert (kept / fetch_nemo.SPEC.archive_name).read_bytes() == archive.read_bytes()
    assert not list(kept.glob("*.part"))


def test_nemo_from_a_clone(tmp_path):
    archive, sums, tsv_sha = nemo_zip(tmp_path)
    clone = tmp_path / "clone"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(clone)
    (clone / NEMO_TOP / ".git").mkdir()
    (clone / NEMO_TOP / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    run_nemo(tmp_path / "nemo", source_dir=clone / NEMO_TOP, checksums=sums, data_tsv_sha256=tsv_sha)
    assert len(list((tmp_path / "nemo" / "samples").glob("*.flac"))) == 3


def test_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path):
    archive, sums, tsv_sha = nemo_zip(tmp_path)
    wrong = dict(sums)
    wrong["KD0_neutral_2.wav"] = "0" * 64
    dest = tmp_path / "nemo"
    with pytest.raises(DatasetError, match=r"KD0_neutral_2\.wav has sha256 [0-9a-f]{64}, expected 0{64}"):
        run_nemo(dest, url=archive.as_uri(), checksums=wrong, data_tsv_sha256=tsv_sha)
    assert not dest.exists()  # nor the downloaded archive, nor a staging folder
    with pytest.raises(DatasetError, match="sha256"):
        run_nemo(dest, zip_file=archive, checksums=wrong, data_tsv_sha256=tsv_sha)
    assert not dest.exists()
    assert archive.is_file()  # a user's archive is not ours to delete
    with pytest.raises(DatasetError, match=r"data\.tsv has sha256"):
        run_nemo(dest, zip_file=archive, checksums=sums, data_tsv_sha256="f" * 64)
    assert not dest.exists()


def test_corrupt_archives_are_refused(tmp_path):
    archive, sums, tsv_sha = nemo_zip(tmp_path)
    dest = tmp_path / "nemo"
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DatasetError, match="not a readable zip"):
        run_nemo(dest, url=truncated.as_uri(), checksums=sums, data_tsv_sha256=tsv_sha)
    assert not dest.exists()
    # a member whose bytes changed after zipping: the zip's own CRC check catches it
    damaged = tmp_path / "damaged.zip"
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(NEMO_TOP + "samples/EB0_anger_1.wav")
    raw[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match=r"EB0_anger_1\.wav is corrupt"):
        run_nemo(dest, zip_file=damaged, checksums=sums, data_tsv_sha256=tsv_sha)
    assert not dest.exists()


def test_missing_files_and_lfs_pointers_are_refused(tmp_path):
    archive, sums, tsv_sha = nemo_zip(tmp_path)
    dest = tmp_path / "nemo"
    with pytest.raises(DatasetError, match=r"holds 3 of the 4 nEMO audio files .*samples/ZZ0_fear_9\.wav"):
        run_nemo(dest, zip_file=archive, checksums=dict(sums, **{"ZZ0_fear_9.wav": "a" * 64}), data_tsv_sha256=tsv_sha)
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n"
    lfs, _, _ = nemo_zip(tmp_path, members={name: pointer for name in sums})
    with pytest.raises(DatasetError, match="Git LFS pointer"):
        run_nemo(dest, zip_file=lfs, checksums=sums, data_tsv_sha256=tsv_sha)
    assert not dest.exists()


def test_populated_dest_is_replaced_and_a_failed_fetch_keeps_it(tmp_path):
    archive, sums, tsv_sha = nemo_zip(tmp_path)
    dest = tmp_path / "nemo"
    (dest / "samples").mkdir(parents=True)
    (dest / "samples" / "OLD_anger_1.flac").write_bytes(b"old")
    (dest / "data.tsv").write_text("stale\n")
    (dest / "notes.txt").write_text("mine\n")
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    with pytest.raises(DatasetError, match="sha256"):
        run_nemo(dest, zip_file=archive, checksums=sums, data_tsv_sha256="0" * 64)
    assert {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before
    run_nemo(dest, zip_file=archive, checksums=sums, data_tsv_sha256=tsv_sha)
    assert sorted(p.name for p in (dest / "samples").iterdir()) == [
        "EB0_anger_1.flac",
        "KD0_neutral_2.flac",
        "MP0_sadness_45.flac",
    ]
    assert (dest / "notes.txt").read_text() == "mine\n"
    assert (dest / "data.tsv").read_text(encoding="utf-8").startswith("file\temotion")
    assert not list(dest.glob(".fetch-*"))


def test_ased_layout_table_and_unchanged_samples(tmp_path):
    archive, sums, wavs = ased_zip(tmp_path)
    dest = tmp_path / "ased"
    summary = run_ased(dest, zip_file=archive, checksums=sums)
    assert summary == "4 clips from 4 speakers, 3 emotions (angry, neutral, sad)"
    assert tree(dest) == [
        "01Neutral",
        "01Neutral/n1-01-01-01-03.flac",
        "04Sad",
        "04Sad/S4-04-02-01-29.flac",
        "04Sad/s4-01-01-02-07.flac",
        "05Angry",
        "05Angry/a5-03-02-02-50.flac",
        "data.tsv",
    ]
    for name, data in wavs.items():
        flac = dest / name.replace(".wav", ".flac")
        info = sf.info(str(flac))
        assert (info.format, info.samplerate, info.channels, info.subtype) == ("FLAC", 16000, 1, "PCM_16")
        original, _ = sf.read(io.BytesIO(data), dtype="int16")
        written, _ = sf.read(str(flac), dtype="int16")
        np.testing.assert_array_equal(written, original)  # already 16 kHz: only the container changes
    assert (dest / "data.tsv").read_bytes().decode("ascii") == (
        "file\temotion\tspeaker_id\tgender\tsentence_id\trepetition\r\n"
        "01Neutral/n1-01-01-01-03.flac\tneutral\t03\tfemale\t01\t01\r\n"
        "04Sad/S4-04-02-01-29.flac\tsad\t29\tfemale\t04\t02\r\n"
        "04Sad/s4-01-01-02-07.flac\tsad\t07\tmale\t01\t01\r\n"
        "05Angry/a5-03-02-02-50.flac\tangry\t50\tmale\t03\t02\r\n"
    )
    with (dest / "data.tsv").open(encoding="utf-8", newline="") as fh:
        assert [r["speaker_id"] for r in csv.DictReader(fh, delimiter="\t")] == ["03", "29", "07", "50"]


def test_ased_bad_name_is_refused_and_leaves_nothing(tmp_path):
    archive, sums, _ = ased_zip(tmp_path, names=("03Happy/h3-01-01-03-01.wav",))
    dest = tmp_path / "ased"
    with pytest.raises(DatasetError, match="xn-yy-aa-gg-bb"):
        run_ased(dest, zip_file=archive, checksums=sums)
    assert not dest.exists()


def test_cli_ased_states_the_missing_licence(tmp_path, capsys):
    archive, sums, _ = ased_zip(tmp_path)
    listing = tmp_path / "ased.sha256"
    listing.write_text("".join(f"{h}  {name}\n" for name, h in sums.items()))
    assert main(["fetch-ased", str(tmp_path / "ased"), "--zip", str(archive), "--sha256-list", str(listing)]) == 0
    out, err = capsys.readouterr()
    assert "no licence" in err and "do not redistribute" in err and "10.1145/3529759" in err
    assert "4 clips from 4 speakers" in out


def test_cli_refuses_an_archive_that_is_not_the_pinned_commit(tmp_path, capsys):
    archive, _, _ = nemo_zip(tmp_path)
    dest = tmp_path / "nemo"
    assert main(["fetch-nemo", str(dest), "--zip", str(archive)]) == 6  # the packaged list: all 4481 files
    err = capsys.readouterr().err
    assert "CC BY-NC-SA 4.0" in err and "holds 3 of the 4481 nEMO audio files" in err and "Traceback" not in err
    assert not dest.exists()
    assert main(["fetch-ased", str(dest), "--zip", str(tmp_path / "none.zip")]) == 6
    assert "none.zip does not exist" in capsys.readouterr().err


def test_packaged_checksum_lists_cover_the_whole_corpora():
    nemo = packaged_sha_list(fetch_nemo.SHA_LIST)
    assert len(nemo) == 4481
    pattern = re.compile(r"^[A-Z]{2}0_(anger|fear|happiness|neutral|sadness|surprised)_\d{1,2}\.wav$")
    assert all(pattern.match(name) and re.fullmatch("[0-9a-f]{64}", h) for name, h in nemo.items())
    assert len({name.split("_")[0] for name in nemo}) == 9
    ased = packaged_sha_list(fetch_ased.SHA_LIST)
    assert len(ased) == 2474
    rows = fetch_ased.build_table({k: k.replace(".wav", ".flac") for k in ased}, {})
    assert summarise(rows) == "2474 clips from 65 speakers, 5 emotions (angry, fearful, happy, neutral, sad)"


def test_sha_list_format_errors_name_the_line():
    assert parse_sha_list(f"{'A' * 64}  x/y.wav\r\n\n{'b' * 64} *z.wav\n", "t") == {
        "x/y.wav": "a" * 64,
        "z.wav": "b" * 64,
    }
    with pytest.raises(DatasetError, match="t line 2"):
        parse_sha_list(f"{'a' * 64}  x.wav\nnot a line\n", "t")
    with pytest.raises(DatasetError, match="listed twice"):
        parse_sha_list(f"{'a' * 64}  x.wav\n{'b' * 64}  x.wav\n", "t")


def test_fetch_commands_are_runtime_only_entry_points():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    commands = config["project"]["entry-points"]["emostream.commands"]
    assert commands["fetch-nemo"] == "emostream.train.fetch_nemo:register"
    assert commands["fetch-ased"] == "emostream.train.fetch_ased:register"
    assert config["tool"]["setuptools"]["package-data"]["emostream.train.checksums"] == ["*.sha256.gz"]
    code = (
        "import sys, emostream.train.fetch_nemo, emostream.train.fetch_ased; "
        "print(sorted(m for m in ('tensorflow', 'scipy', 'sklearn', 'keras') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert proc.stdout.strip() == "[]"


def test_training_reads_what_the_fetch_commands_write(tmp_path):
    from emostream.train.corpora import ased, nemo

    archive, sums, tsv_sha = nemo_zip(tmp_path)
    run_nemo(tmp_path / "nemo", zip_file=archive, checksums=sums, data_tsv_sha256=tsv_sha)
    clips = nemo.list_clips(tmp_path / "nemo")
    assert [(c.speaker, c.emotion, c.gender, c.sentence) for c in clips] == [
        ("EB0", "angry", "female", "1"),
        ("KD0", "neutral", "female", "2"),
        ("MP0", "sad", "male", "45"),
    ]
    archive, sums, _ = ased_zip(tmp_path)
    run_ased(tmp_path / "ased", zip_file=archive, checksums=sums)
    assert [(c.speaker, c.emotion) for c in ased.list_clips(tmp_path / "ased")] == [
        ("03", "neutral"),
        ("29", "sad"),
        ("07", "sad"),
        ("50", "angry"),
    ]


def test_failed_or_interrupted_download_leaves_nothing(tmp_path):
    archive, sums, tsv_sha = nemo_zip(tmp_path)
    dest = tmp_path / "nemo"
    with pytest.raises(DatasetError, match=r"downloading .*nothing\.zip failed .*--zip FILE"):
        run_nemo(dest, url=(tmp_path / "nothing.zip").as_uri(), checksums=sums, data_tsv_sha256=tsv_sha)
    assert not dest.exists()

    def interrupt(stage: str, done: int, total: int | None) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_nemo(dest, url=archive.as_uri(), checksums=sums, data_tsv_sha256=tsv_sha, steps=interrupt)
    assert not dest.exists()  # no .part, no archive, no staging folder
