"""The WebSocket fast path gives the application exactly what uvicorn's own protocol gives, however the bytes arrive."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from emostream.server.wsframes import MAX_QUEUED, FastFrameProtocol

MAX_SIZE = 100_000
MASK = b"\x5a\x13\xc7\x02"
HANDSHAKE = (
    b"GET /twilio HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def frame(payload: bytes, opcode: int = 1, *, fin: bool = True, masked: bool = True, rsv1: bool = False) -> bytes:
    """A client frame as a client writes it (masked unless told otherwise)."""
    n = len(payload)
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([first, bit | n])
    elif n < 65536:
        head = bytes([first, bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + body


class FakeTransport:
    """What the protocol writes and whether it paused reading."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.paused = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8000)}.get(name, default)


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    await asyncio.Event().wait()  # the test reads the protocol's queue itself


async def _received(
    cls: type[WebSocketsSansIOProtocol], chunks: list[bytes], extra_headers: bytes = b"", max_size: int = MAX_SIZE
) -> tuple[list[dict[str, Any]], WebSocketsSansIOProtocol]:
    """The ASGI messages ``cls`` queues for the application when ``chunks`` arrive after an accepted handshake."""
    config = uvicorn.Config(_app, ws_max_size=max_size, log_level="critical")
    config.load()
    proto = cls(config, ServerState(), {}, asyncio.get_running_loop())
    transport = FakeTransport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.data_received(HANDSHAKE + extra_headers + b"\r\n")
    for _ in range(5):
        await asyncio.sleep(0)
    assert proto.handshake_complete  # the application took websocket.connect and accepted
    for chunk in chunks:
        if transport.closed:  # a closed transport reads no more
            break
        proto.data_received(chunk)
    messages = []
    while not proto.queue.empty():
        messages.append(dict(proto.queue.get_nowait()))
    for task in list(proto.tasks):
        task.cancel()
    return messages, proto


def _split(data: bytes, rng: random.Random, largest: int) -> list[bytes]:
    chunks, i = [], 0
    while i < len(data):
        n = rng.randint(1, largest)
        chunks.append(data[i : i + n])
        i += n
    return chunks


def _compare(
    frames: list[bytes], *, seed: int, largest: int, extra_headers: bytes = b"", max_size: int = MAX_SIZE
) -> tuple[list[dict[str, Any]], Any]:
    """The fast path's messages for ``frames`` split at random; asserts uvicorn's protocol, given one frame per
    read, queues the same and writes the same (uvicorn drops the good frames of a read that has a bad one too)."""
    rng = random.Random(seed)
    chunks = _split(b"".join(frames), rng, largest)

    async def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]], Any, Any]:
        fast, fast_proto = await _received(FastFrameProtocol, chunks, extra_headers, max_size)
        plain, plain_proto = await _received(WebSocketsSansIOProtocol, frames, extra_headers, max_size)
        return fast, plain, fast_proto, plain_proto

    fast, plain, fast_proto, plain_proto = asyncio.run(both())
    assert fast == plain
    assert fast_proto.transport.written == plain_proto.transport.written  # close frames, pongs
    return fast, fast_proto


def _texts(rng: random.Random, n: int) -> list[bytes]:
    sizes = [0, 1, 4, 125, 126, 300, 65535, *(rng.randint(0, 600) for _ in range(n))]
    return [frame(("é" * (k // 2) + "x" * (k % 2)).encode()) for k in sizes]


@pytest.mark.parametrize("largest", [1, 7, 200, 5000, 1_000_000])
def test_data_frames_give_what_uvicorn_gives_in_any_split(largest: int) -> None:
    rng = random.Random(largest)
    frames = _texts(rng, 40) + [frame(bytes(rng.randrange(256) for _ in range(k)), 2) for k in (0, 3, 200, 4000)]
    rng.shuffle(frames)
    messages, proto = _compare(frames, seed=largest, largest=largest)
    assert len(messages) == len(frames)
    assert proto.fast is True  # nothing here needed the parser


def test_a_control_frame_hands_the_rest_to_the_parser() -> None:
    rng = random.Random(3)
    before, after = _texts(rng, 10), _texts(rng, 10)
    frames = [*before, frame(b"ping!", 9), *after, frame(b"\x03\xe8bye", 8)]
    messages, proto = _compare(frames, seed=3, largest=300)
    assert proto.fast is False
    assert len(messages) == len(before) + len(after) + 1
    assert messages[-1] == {"type": "websocket.disconnect", "code": 1000, "reason": "bye"}


@pytest.mark.parametrize("largest", [1, 9, 400])
def test_pings_and_pongs_go_through_the_parser_and_the_fast_path_goes_on(largest: int) -> None:
    """uvicorn pings every 20 s and the client's pong comes back: that must not end the fast path of a call."""
    rng = random.Random(largest)
    frames = _texts(rng, 30)
    for i in (3, 11, 20):
        frames.insert(i, frame(b"ping %d" % i, 9))
    frames.insert(15, frame(b"\x00\x01\x02\x03", 10))  # an unsolicited pong: ignored
    messages, proto = _compare(frames, seed=largest, largest=largest)
    assert proto.fast is True
    assert len(messages) == len(frames) - 4  # every data frame; no message for a ping or a pong
    assert proto.transport.written.endswith(b"\x8a\x06ping 3\x8a\x07ping 11\x8a\x07ping 20")  # pongs, as uvicorn


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(b"\xff\xfe not UTF-8"), 1007),
        (frame(b"x" * (MAX_SIZE + 1)), 1009),
        (frame(b"x" * 70_000 * 2), 1009),  # 64-bit length
        (frame(b"unmasked", masked=False), 1002),
        (frame(b"compressed?", rsv1=True), 1002),
        (frame(b"p" * 126, 9), 1002),  # a control frame longer than 125 bytes
        (frame(b"part one", fin=False) + frame(b" and two", 0), None),  # a fragmented message: the parser's
    ],
    ids=["not-utf8", "oversize", "64-bit-length", "unmasked", "reserved-bit", "long-ping", "fragmented"],
)
def test_refused_frames_are_refused_as_uvicorn_refuses_them(bad: bytes, code: int | None) -> None:
    rng = random.Random(5)
    good = _texts(rng, 5)
    messages, proto = _compare([*good, bad], seed=5, largest=64)
    assert proto.fast is False
    assert messages[: len(good)] == [{"type": "websocket.receive", "text": f.decode()} for f in _payloads(good)]
    if code is not None:
        assert messages[-1]["type"] == "websocket.disconnect"
        assert messages[-1]["code"] == code
    else:
        assert messages[-1] == {"type": "websocket.receive", "text": "part one and two"}


@pytest.mark.parametrize("largest", [1, 9, 400])
def test_a_twilio_sized_frame_over_the_size_limit_is_refused_as_uvicorn_refuses_it(largest: int) -> None:
    """Text frames of 126-65535 bytes (Twilio's media messages) are read inline: under a limit below their size
    the fast path stops at the frame before and the parser refuses it (1009), as uvicorn does."""
    good = [frame(b"m" * 300), frame(b"n" * 126), frame(b"o" * 400)]
    messages, proto = _compare([*good, frame(b"x" * 401), frame(b"late")], seed=largest, largest=largest, max_size=400)
    assert proto.fast is False
    assert [m.get("text") for m in messages[:3]] == ["m" * 300, "n" * 126, "o" * 400]
    assert messages[-1]["type"] == "websocket.disconnect" and messages[-1]["code"] == 1009


def _payloads(frames: list[bytes]) -> list[bytes]:
    out = []
    for f in frames:
        n = f[1] & 0x7F
        start = 2 + (2 if n == 126 else 0) + 4
        out.append(bytes(b ^ MASK[i % 4] for i, b in enumerate(f[start:])))
    return out


def test_no_fast_path_with_compression() -> None:
    offer = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    _, proto = _compare([frame(b"hello")], seed=1, largest=3, extra_headers=offer)
    assert proto.fast is False


def test_reading_pauses_only_when_the_application_falls_behind() -> None:
    async def run() -> tuple[bool, bool]:
        _, proto = await _received(FastFrameProtocol, [frame(b"a") * (MAX_QUEUED - 1)])
        early = proto.transport.paused  # type: ignore[attr-defined]
        proto.data_received(frame(b"b") * (MAX_QUEUED + 1))
        return early, proto.transport.paused  # type: ignore[attr-defined]

    early, late = asyncio.run(run())
    assert not early
    assert late


def _not_called(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the fast path should have framed this message")


def test_sent_messages_are_framed_as_uvicorn_frames_them() -> None:
    messages: list[dict[str, Any]] = [{"type": "websocket.send", "text": "é" * k} for k in (0, 1, 62, 63, 64, 40_000)]
    messages += [{"type": "websocket.send", "bytes": b"\x00\xff" * k} for k in (0, 70, 40_000)]
    messages.append({"type": "websocket.close", "code": 1000, "reason": "call ended"})
    messages.append({"type": "websocket.send", "text": "after the close"})

    async def written(cls: type[WebSocketsSansIOProtocol]) -> bytes:
        _, proto = await _received(cls, [])
        if cls is FastFrameProtocol:  # its data frames never go through the websockets protocol
            proto.conn.send_text = proto.conn.send_binary = _not_called  # type: ignore[method-assign]
        for message in messages:
            try:
                await proto.send(message)  # type: ignore[arg-type]
            except RuntimeError as exc:  # the send after the close: uvicorn refuses it
                assert "after sending 'websocket.close'" in str(exc)
        return bytes(proto.transport.written)  # type: ignore[attr-defined]

    async def both() -> tuple[bytes, bytes]:
        return await written(FastFrameProtocol), await written(WebSocketsSansIOProtocol)

    fast, plain = asyncio.run(both())
    assert fast == plain
    assert len(fast) > 150_000


def test_a_receiver_takes_texts_as_read_and_a_declined_one_keeps_its_order() -> None:
    taken: list[str] = []

    def receiver(text: str) -> bool:
        if text.startswith("media"):
            taken.append(text)
            return True
        return False

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        config = uvicorn.Config(_app, ws_max_size=MAX_SIZE, log_level="critical")
        config.load()
        proto = FastFrameProtocol(config, ServerState(), {}, asyncio.get_running_loop())
        proto.connection_made(FakeTransport())  # type: ignore[arg-type]
        proto.data_received(HANDSHAKE + b"\r\n")
        for _ in range(5):
            await asyncio.sleep(0)
        proto.scope["extensions"]["emostream.text_receiver"]["set"](receiver)  # type: ignore[index]
        texts = ["media 1", "media 2", "mark", "media 3", "stop"]
        proto.data_received(b"".join(frame(t.encode()) for t in texts) + frame(b"\x01", 2))
        first = _drain(proto)
        proto.set_receiver(receiver)  # the application handled what was declined: it takes media again
        proto.data_received(frame(b"media 4") + frame(b"media 5"))
        proto.close_sent = True  # past websocket.close: nothing more reaches the receiver or the queue
        proto.data_received(frame(b"media 6"))
        for task in list(proto.tasks):
            task.cancel()
        return first, _drain(proto)

    first, second = asyncio.run(run())
    assert taken == ["media 1", "media 2", "media 4", "media 5"]
    assert first == [
        {"type": "websocket.receive", "text": "mark"},
        {"type": "websocket.receive", "text": "media 3"},  # after the declined mark: in order, through the queue
        {"type": "websocket.receive", "text": "stop"},
        {"type": "websocket.receive", "bytes": b"\x01"},
    ]
    assert second == []


def _drain(proto: WebSocketsSansIOProtocol) -> list[dict[str, Any]]:
    out = []
    while not proto.queue.empty():
        out.append(dict(proto.queue.get_nowait()))
    return out
