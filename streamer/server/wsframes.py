"""uvicorn's sans-I/O WebSocket protocol with a fast path for the frames Twilio sends: whole, masked data frames.

uvicorn's ``websockets-sansio`` protocol runs every received byte through the ``websockets``
parser (a chain of generators per frame), and after each message it pauses reading the
socket until the application has taken that message (``pause_reading`` / ``resume_reading``:
two system calls per message on uvloop). A Twilio call sends 100 small text messages a
second, so that was about half of the event loop's own work per call.

:class:`FastFrameProtocol` reads the common frames itself, once the opening handshake is done
and the ``websockets`` parser waits at a frame boundary: an unfragmented text or binary
frame, masked (as every client frame must be), no reserved bits (no compression extension),
at most ``ws_max_size`` bytes, and, for text, valid UTF-8. Such a frame becomes the same
ASGI message uvicorn would make (``{"type": "websocket.receive", "text": ...}`` or
``"bytes"``), in the same order. Reading pauses only when ``MAX_QUEUED`` messages wait for
the application, and resumes when it has taken them all (uvicorn's own rule). Sending
(``/events`` records) frames text and binary messages here too, byte for byte what the
``websockets`` protocol writes, while the connection is open and has no extension; the
frames sent within ``WRITE_DELAY_S`` (10 ms) of the first unwritten one are written together,
in one system call (a close or any other message uvicorn sends itself writes them first).

An application may also take text messages as they are read, without the queue and the
wake-up of its task per message: the scope's ``extensions`` carry
``RECEIVER_EXTENSION: {"set": set_receiver}`` (:meth:`FastFrameProtocol.set_receiver`).
``/twilio`` takes its media messages that way (:mod:`emostream.server.streams`).

A ping or a pong (uvicorn pings every ``ws_ping_interval``, 20 s by default, and the client's
pong comes back) is handed to the ``websockets`` parser alone, whole, at a frame boundary:
uvicorn answers or notes it as usual and the fast path goes on. Anything else (a close, a
fragment, a frame with reserved bits, an unmasked or oversized one, text that is not UTF-8)
ends the fast path for the rest of the connection: that frame and everything after it go to
the parser, which is still at the frame boundary where the fast path stopped, so every
refusal (close codes 1002, 1007, 1009) and the closing handshake stay uvicorn's. The fast
path only consumes whole frames: a frame split across reads waits in its buffer until it is
complete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import apply_mask  # type: ignore[attr-defined]  # the C version when built
from websockets.http11 import Request
from websockets.protocol import State
from websockets.streams import StreamReader

MAX_QUEUED = 64  # messages waiting for the application before reading pauses
WRITE_DELAY_S = 0.01  # data frames sent within this long of each other go out in one write
RECEIVER_EXTENSION = "emostream.text_receiver"  # scope["extensions"] key: {"set": FastFrameProtocol.set_receiver}
TextReceiver = Callable[[str], bool]
_TEXT_FIN = 0x81  # FIN, no reserved bits, opcode 1 (text)
_BINARY_FIN = 0x82  # FIN, no reserved bits, opcode 2 (binary)
_PING_PONG = (0x89, 0x8A)  # FIN, opcode 9 (ping) or 10 (pong): handed to the parser one frame at a time
_TAKEN = (_TEXT_FIN, _BINARY_FIN, *_PING_PONG)
_MASKED = 0x80
_MASKED_126 = 0xFE  # masked, length in the next two bytes (126 to 65535 bytes)
_AT_EOF = StreamReader.at_eof.__code__


class FastFrameProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, reading whole masked data frames itself (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast: bool | None = None  # None: not decided (before the handshake); then on or off for good
        self._pending = bytearray()  # the start of a frame that has not fully arrived
        self._max_size = self.config.ws_max_size
        self._receiver: TextReceiver | None = None
        self._unwritten: list[bytes] = []  # frames sent in the last WRITE_DELAY_S, written together

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # the handshake goes on: the application may take text messages as they come
            scope["extensions"][RECEIVER_EXTENSION] = {"set": self.set_receiver}  # type: ignore[index]

    def set_receiver(self, receiver: TextReceiver | None) -> None:
        """Hand text messages to ``receiver`` as they are read instead of queueing them (None: queue them again).

        ``receiver(text)`` is called in the event loop, inside the protocol's read, and must not
        wait or raise; it returns True when it took the message, False to decline it. A declined
        message, and every message after it, goes to the queue (``receive()``) until the
        receiver is set again; the receiver is only called while the queue is empty, so
        messages keep their order. Binary messages, a closed connection and the end of the
        stream always go through the queue.
        """
        self._receiver = receiver

    def data_received(self, data: bytes) -> None:
        if self.fast is None and self.handshake_complete:
            self.fast = self._parser_idle()
        if not self.fast:
            super().data_received(data)
            return
        if self._pending:
            self._pending += data
            buf: bytes | bytearray = self._pending
        else:
            buf = data
        pos = self._read_frames(buf)
        rest = buf[pos:]
        if self.fast:
            if rest:
                self._pending = bytearray(rest)
            elif self._pending:
                self._pending = bytearray()
            return
        self._pending = bytearray()
        if rest:
            super().data_received(bytes(rest))

    async def send(self, message: ASGISendEvent) -> None:
        """uvicorn's ``send``; a text or binary message on an open connection without extensions is framed here
        (a server frame: FIN, opcode, length, unmasked payload) instead of through the ``websockets`` protocol."""
        if message["type"] != "websocket.send" or not self._plain_sends():
            self._write_out()  # frames sent before this message go first
            await super().send(message)
            return
        data = message.get("bytes")
        text = message.get("text")
        if data is not None:
            payload, first = bytes(data), _BINARY_FIN
        elif text is not None:
            payload, first = text.encode(), _TEXT_FIN
        else:
            self._write_out()
            await super().send(message)
            return
        if not self.writable.is_set():
            await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if not self._plain_sends():  # closed while waiting to write: uvicorn's own send says how
            self._write_out()
            await super().send(message)
            return
        n = len(payload)
        if n < 126:
            head = bytes((first, n))
        elif n < 65536:
            head = bytes((first, 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((first, 127)) + n.to_bytes(8, "big")
        if not self._unwritten:
            self.loop.call_later(WRITE_DELAY_S, self._write_out)
        self._unwritten += (head, payload)

    def _write_out(self) -> None:
        """Write the frames sent since the first unwritten one in one go (one system call for a burst of records)."""
        if self._unwritten:
            data = b"".join(self._unwritten)
            self._unwritten.clear()
            if not self.transport.is_closing():
                self.transport.write(data)

    def _plain_sends(self) -> bool:
        """Whether a data message may be framed here: handshake done and accepted, open, no extension, no close."""
        return (
            self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.disconnected
            and not self.conn.extensions
            and self.conn.state is State.OPEN
        )

    def _parser_idle(self) -> bool:
        """Whether the ``websockets`` parser waits for the start of a frame, with nothing buffered.

        The fast path takes over only then (and only without extensions and after a normal
        accept), so that it can hand the parser the stream back at a frame boundary.
        """
        conn = self.conn
        if self.initial_response is not None or self.close_sent or conn.extensions or conn.reader.buffer:
            return False
        gen: Any = conn.parser
        while getattr(gen, "gi_yieldfrom", None) is not None:
            gen = gen.gi_yieldfrom
        return getattr(gen, "gi_code", None) is _AT_EOF

    def _read_frames(self, buf: bytes | bytearray) -> int:  # noqa: PLR0912  (one loop per read, the common case inlined)
        """Take the whole simple frames at the start of ``buf``; where the first other frame (or the
        incomplete rest) starts. Sets :attr:`fast` to False at a frame the fast path does not take."""
        queue = self.queue
        end = len(buf)
        pos = 0
        queued = False
        max_size = self._max_size
        while True:
            if end - pos >= 4 and buf[pos] == _TEXT_FIN and buf[pos + 1] == _MASKED_126:  # Twilio's media, inlined
                head = pos + 8
                stop = head + ((buf[pos + 2] << 8) | buf[pos + 3])
                if stop - head > max_size:  # the parser refuses it (1009)
                    self.fast = False
                    break
                if stop > end:  # not whole yet
                    break
            elif (bounds := self._next_frame(buf, pos, end)) is not None:
                head, stop = bounds
                if buf[pos] in _PING_PONG:  # the parser answers a ping and takes a pong (keepalive), then waits again
                    control = bytes(buf[pos:stop])
                    pos = stop
                    if self._control_frame(control):
                        continue
                    break
            else:
                break
            payload = apply_mask(buf[head:stop], buf[head - 4 : head])
            message: dict[str, Any] | None
            if buf[pos] == _TEXT_FIN:
                try:
                    text = payload.decode()
                except UnicodeDecodeError:  # the parser refuses it with 1007, as uvicorn does
                    self.fast = False
                    break
                receiver = self._receiver  # _text_message's receiver case, inlined (100 messages a second per call)
                if receiver is not None and not self.close_sent and queue.empty():
                    if receiver(text):
                        pos = stop
                        continue
                    self._receiver = None  # declined: this message and the next go through the queue
                message = self._text_message(text)
            else:
                message = None if self.close_sent else {"type": "websocket.receive", "bytes": payload}
            pos = stop
            if message is not None:
                queue.put_nowait(message)  # type: ignore[arg-type]
                queued = True
        if queued and not self.read_paused and queue.qsize() >= MAX_QUEUED:
            self.read_paused = True
            self.transport.pause_reading()
        return pos

    def _control_frame(self, frame: bytes) -> bool:
        """Hand a whole ping or pong frame to the parser; whether the fast path goes on after it."""
        self._write_out()
        super().data_received(frame)
        if self.conn.parser_exc is not None or self.close_sent or not self._parser_idle():
            self.fast = False
            return False
        return True

    def _next_frame(self, buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int] | None:
        """(payload start, frame end) of the frame at ``pos`` if it is whole and one the fast path takes; else
        None (and :attr:`fast` False for a frame it does not take)."""
        if end - pos < 2:
            return None
        first, second = buf[pos], buf[pos + 1]
        if first not in _TAKEN or not second & _MASKED or (first in _PING_PONG and second & 0x7F > 125):
            self.fast = False
            return None
        n = second & 0x7F
        head = pos + 6
        if n == 126:
            if end - pos < 4:
                return None
            n = (buf[pos + 2] << 8) | buf[pos + 3]
            head = pos + 8
        elif n == 127:  # 64 KiB or more: the parser checks it against the size limit
            self.fast = False
            return None
        if n > self._max_size:
            self.fast = False
            return None
        if end - head < n:
            return None
        return head, head + n

    def _text_message(self, text: str) -> dict[str, Any] | None:
        """The ASGI message of a text frame the receiver did not take, or None when the connection is closing."""
        if self.close_sent:
            return None  # past websocket.close: uvicorn discards data messages
        return {"type": "websocket.receive", "text": text}
