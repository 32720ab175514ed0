"""Units of ``emostream serve`` without a server: Twilio parsing and track alignment, the /ingest header,
the token, [server] settings, close reasons, the summary of a call analysed from encoded chunks."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

pytest.importorskip("starlette")

from emostream.audio.codecs import encode_raw, mulaw_encode
from emostream.audio.files import load_mono
from emostream.config import config_from_dict
from emostream.errors import ConfigError
from emostream.server.analysis import CallSpec, decode_chunks
from emostream.server.auth import Token, resolve_token, token_from_request
from emostream.server.closing import MAX_REASON_BYTES, RejectError, fit_reason
from emostream.server.config import ServerConfig
from emostream.server.ingest import parse_header
from emostream.server.pool import joined
from emostream.server.twilio import (
    TrackAligner,
    parse_media,
    parse_media_text,
    parse_message,
    parse_start,
    stream_messages,
)

SILENCE = 0xFF


def test_twilio_messages_round_trip_through_the_parsers() -> None:
    tracks = {"inbound": bytes(range(200)), "outbound": bytes(200)}
    head, frames, tail = stream_messages(tracks, stream_sid="MZ1", custom_parameters={"token": "t"})
    assert [parse_message(t)[0] for t in head] == ["connected", "start"]
    start = parse_start(parse_message(head[1])[1])
    assert start.stream_sid == "MZ1" and start.tracks == ("inbound", "outbound")
    assert start.default_roles == ("customer", "agent") and start.custom_parameters == {"token": "t"}
    track, ts, payload = parse_media(parse_message(frames[1][0])[1])
    assert (track, ts, payload) == ("inbound", 20, bytes(range(160, 200)) + bytes([SILENCE]) * 120)
    assert parse_message(tail[0])[0] == "stop"


def test_twilio_media_in_its_own_form_reads_as_the_json_parser_reads_it() -> None:
    """The regular expression reads Twilio's media messages (spaced or compact) exactly as json does;
    anything else, valid JSON or not, is left to the JSON parser (None)."""
    tracks = {"inbound": bytes(range(256)) * 3, "outbound": bytes(range(255, -1, -1)) * 3}
    _, frames, _ = stream_messages(tracks, stream_sid="MZ1")
    texts = [t for group in frames for t in group]
    texts += [json.dumps(json.loads(t), separators=(",", ":")) for t in texts]  # Twilio's own spacing
    for text in texts:
        assert parse_media_text(text) == parse_media(parse_message(text)[1])
    text = texts[-1]
    body = json.loads(text)
    other = [
        text.replace('"chunk"', '"chunks"'),  # another key
        json.dumps({**body, "extra": 1}, separators=(",", ":")),
        text.replace('"MZ1"', '"MZ\\u0031"'),  # an escape in a string
        text.replace('"outbound"', '"both"'),
        text.replace('"payload":"', '"payload":"!'),
        text[:-1],  # not JSON
        text.replace('"timestamp":"', '"timestamp":"99999999999'),  # beyond MAX_TIMESTAMP_MS: refused by parse_media
    ]
    assert [parse_media_text(t) for t in other] == [None] * len(other)


@pytest.mark.parametrize(
    ("start", "code", "fragment"),
    [
        ({"streamSid": "MZ", "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 8000}}, 1003, "x-mulaw"),
        ({"streamSid": "MZ", "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 16000}}, 1003, "8000"),
        ({"streamSid": "MZ", "tracks": ["both"]}, 1007, "tracks"),
        ({"tracks": ["inbound"]}, 1007, "streamSid"),
        ({"streamSid": "MZ", "customParameters": "token"}, 1007, "customParameters"),
    ],
)
def test_bad_start_messages(start: dict[str, object], code: int, fragment: str) -> None:
    with pytest.raises(RejectError) as caught:
        parse_start({"event": "start", "start": start})
    assert caught.value.code == code and fragment in caught.value.reason


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"no_event": 1}'])
def test_malformed_twilio_messages(text: str) -> None:
    with pytest.raises(RejectError) as caught:
        parse_message(text)
    assert caught.value.code == 1007


def test_aligner_pairs_the_tracks_and_fills_gaps_with_silence() -> None:
    aligner = TrackAligner(("inbound", "outbound"))
    assert not aligner.add("inbound", 0, b"\x01" * 160)  # waits for the outbound message of the same 20 ms
    assert aligner.add("outbound", 0, b"\x02" * 160)
    assert aligner.take() == (b"\x01" * 160, b"\x02" * 160)
    aligner.add("inbound", 100, b"\x03" * 160)  # 80 ms lost on the inbound track: silence in its place
    aligner.add("outbound", 20, b"\x04" * 160)
    inbound, outbound = aligner.take() or (b"", b"")
    assert inbound == bytes([SILENCE]) * 160 and outbound == b"\x04" * 160
    assert aligner.gap_samples == 640


def test_aligner_pads_a_track_that_stopped() -> None:
    aligner = TrackAligner(("inbound", "outbound"), max_skew_s=0.1)
    aligner.add("outbound", 0, b"\x02" * 160)
    for k in range(10):  # 200 ms of inbound only: the outbound track stopped sending
        ready = aligner.add("inbound", 20 * k, b"\x01" * 160)
    assert ready
    inbound, outbound = aligner.take() or (b"", b"")
    assert len(inbound) == len(outbound) == 1600 - 800 and outbound.startswith(b"\x02" * 160)
    assert aligner.take(final=True) == (b"\x01" * 800, bytes([SILENCE]) * 800)


def test_aligner_refuses_an_unknown_track() -> None:
    with pytest.raises(RejectError) as caught:
        TrackAligner(("inbound",)).add("outbound", 0, b"\x00")
    assert caught.value.code == 1007


def test_decode_chunks_per_track_and_interleaved() -> None:
    x = np.linspace(-0.5, 0.5, 320, dtype=np.float32)
    codes = mulaw_encode(x).tobytes()
    twilio = CallSpec("c", "twilio", 8000, 2, (), "mulaw", True, {})
    block = decode_chunks([(codes[:160], codes[160:]), (codes[:160], codes[160:])], twilio)
    assert block.shape == (320, 2) and np.allclose(block[:160, 0], block[160:, 0])
    ingest = CallSpec("c", "ingest", 16000, 2, (), "s16le", False, {})
    stereo = np.stack([x, -x], axis=1)
    data = encode_raw(stereo, "s16le")
    assert np.allclose(decode_chunks([data[:640], data[640:]], ingest), stereo, atol=1e-4)


def test_a_request_sent_as_one_chunk_decodes_to_the_same_samples() -> None:
    """ProcessPool.feed joins a request's chunks (one byte string per track) before pickling them."""
    rng = np.random.default_rng(3)
    twilio = CallSpec("c", "twilio", 8000, 2, (), "mulaw", True, {})
    messages = [(rng.bytes(160), rng.bytes(160)) for _ in range(25)]
    assert np.array_equal(decode_chunks(joined(messages), twilio), decode_chunks(messages, twilio))
    assert len(joined(messages)) == 1
    ingest = CallSpec("c", "ingest", 16000, 2, (), "s16le", False, {})
    frames = [rng.bytes(640) for _ in range(10)]
    assert np.array_equal(decode_chunks(joined(frames), ingest), decode_chunks(frames, ingest))
    assert joined(frames[:1]) == frames[:1]


def test_ingest_header() -> None:
    header = parse_header(json.dumps({"sample_rate_hz": 48000, "encoding": "F32LE", "channels": 2, "events": True}))
    assert header.encoding == "f32le" and header.frame_bytes == 8 and header.events and header.call_id is None
    with pytest.raises(RejectError) as caught:
        parse_header(json.dumps({"sample_rate_hz": 8000, "encoding": "gsm"}))
    assert caught.value.code == 1003 and caught.value.label == "unknown_encoding"
    with pytest.raises(RejectError) as caught:
        parse_header(json.dumps({"encoding": "s16le"}))
    assert caught.value.code == 1007 and "sample_rate_hz" in caught.value.reason


def test_token_sources_and_checks() -> None:
    server = ServerConfig(token="from-config-0123456789")
    assert resolve_token(server, {}) == Token("from-config-0123456789", "config")
    assert resolve_token(server, {"EMOSTREAM_TOKEN": "from-env-0123456789ab"}).origin == "environment"
    generated = resolve_token(ServerConfig(), {})
    assert generated.origin == "generated" and len(generated.value) >= 16
    with pytest.raises(ConfigError, match="EMOSTREAM_TOKEN has 3 characters"):
        resolve_token(server, {"EMOSTREAM_TOKEN": "abc"})
    token = Token("secret-token-0123456789", "config")
    assert token.matches(token_from_request({"authorization": "Bearer secret-token-0123456789"}, {}))
    assert token.matches(token_from_request({}, {"token": "secret-token-0123456789"}))
    assert not token.matches(token_from_request({"authorization": "Basic secret-token-0123456789"}, {}))
    assert not token.matches(None) and not token.matches("secret-token-012345678")


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"port": 70000}, "[server] port is 70000"),
        ({"token": "short"}, "[server] token has 5 characters"),
        ({"max_calls": 0}, "[server] max_calls is 0"),
        ({"workers": -1}, "[server] workers is -1"),
        ({"host": "bad host"}, "[server] host is 'bad host'"),
        ({"max_calls": "many"}, "[server] max_calls is 'many'"),
    ],
)
def test_server_settings_are_checked_with_file_section_and_key(table: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"server": table}, "serve.toml")
    assert fragment in str(caught.value) and "serve.toml" in str(caught.value)


def test_close_reasons_fit_a_close_frame() -> None:
    assert fit_reason("short") == "short"
    long = fit_reason("é" * 200)
    assert len(long.encode()) <= MAX_REASON_BYTES and long.endswith("...")


def test_summary_of_a_call_fed_as_encoded_chunks_has_the_calls_format(tmp_path: object) -> None:
    from test_server_support import ANGRY

    from emostream.config import Config, apply_overrides
    from emostream.engine.plan import make_plan
    from emostream.server.analysis import CallAnalysis

    try:
        plan = make_plan(apply_overrides(Config(), {"model": {"name": "fast"}}))
    except Exception as exc:
        pytest.skip(f"no fast model ({exc})")
    codes = mulaw_encode(load_mono(ANGRY, 8000)).tobytes()
    spec = CallSpec("MZsum", "twilio", 8000, 2, ("customer", "agent"), "mulaw", True, {"stream_sid": "MZsum"})
    analysis = CallAnalysis(plan, spec, 10.0)
    step = 4000
    for i in range(0, len(codes), step):
        analysis.feed([(codes[i : i + step], codes[i : i + step])])
    _, summary = analysis.finish({"end_reason": "stop"})
    assert summary["version"] == 2 and summary["call"] == "MZsum" and summary["input"] == {"stream_sid": "MZsum"}
    assert [c["role"] for c in summary["channels"]] == ["customer", "agent"]
    assert summary["channels"][0]["dominant"] is not None and summary["channels"][1]["shares"] == {}
    assert summary["end_reason"] == "stop" and summary["model"] == "fast"
    assert summary["duration_s"] == pytest.approx(len(codes) / 8000, abs=1e-3)


class _ReferenceAligner:
    """The track aligner's rule written plainly (its first version), to compare the faster one with."""

    def __init__(self, tracks: tuple[str, ...], max_skew_s: float) -> None:
        self.buffers = {t: bytearray() for t in tracks}
        self.written = dict.fromkeys(tracks, 0)
        self.tracks, self.max_skew, self.gap_samples = tracks, round(max_skew_s * 8000), 0

    def add(self, track: str, timestamp_ms: int, payload: bytes) -> bool:
        buf = self.buffers[track]
        if timestamp_ms >= 0:
            gap = timestamp_ms * 8000 // 1000 - self.written[track]
            if gap > 40 * 8:
                fill = min(gap, 5 * 8000)
                buf.extend(b"\xff" * fill)
                self.written[track] += fill
                self.gap_samples += fill
        buf.extend(payload)
        self.written[track] += len(payload)
        shortest = min(len(b) for b in self.buffers.values())
        return track == self.tracks[-1] or len(buf) - shortest > self.max_skew

    def take(self, *, final: bool = False) -> tuple[bytes, ...] | None:
        lengths = {t: len(b) for t, b in self.buffers.items()}
        floor = max(lengths.values()) - (0 if final else self.max_skew)
        for t, length in lengths.items():
            if length < floor:
                self.buffers[t].extend(b"\xff" * (floor - length))
                self.written[t] += floor - length
                self.gap_samples += floor - length
        n = min(len(b) for b in self.buffers.values())
        if n == 0:
            return None
        out = tuple(bytes(self.buffers[t][:n]) for t in self.tracks)
        for buf in self.buffers.values():
            del buf[:n]
        return out


def test_track_aligner_hands_out_what_the_plain_rule_does_with_gaps_lags_and_odd_sizes() -> None:
    rng = random.Random(16)
    for _ in range(400):
        tracks = rng.choice([("inbound",), ("outbound",), ("inbound", "outbound")])
        skew_s = rng.choice([0.1, 0.5, 1.0])
        fast, plain = TrackAligner(tracks, max_skew_s=skew_s), _ReferenceAligner(tracks, skew_s)
        clock = dict.fromkeys(tracks, 0)
        for step in range(rng.randint(1, 150)):
            track = rng.choice(tracks) if rng.random() < 0.3 else tracks[step % len(tracks)]
            size = rng.choice([160, 160, 160, 80, 0, 320])
            if rng.random() < 0.05:
                clock[track] += rng.randint(0, 3000)  # a gap in the timestamps
            stamp = clock[track] if rng.random() > 0.05 else -1
            clock[track] += size // 8
            payload = rng.randbytes(size)
            due = fast.add(track, stamp, payload)
            assert due == plain.add(track, stamp, payload)
            if due or rng.random() < 0.2:
                assert fast.take() == plain.take()
            assert fast.gap_samples == plain.gap_samples
        assert fast.take(final=True) == plain.take(final=True)
