"""The web pages of ``emostream serve`` in a real headless browser (Debian's Chromium, driven by playwright).

A real ``emostream serve`` runs on 127.0.0.1 on a free port with a random token. The
supervisor page must show live calls streamed by a scripted ``/ingest`` client (RAVDESS
fixtures): the reading turns into an emotion label, the timeline grows, alerts match the
records the server sent, ended calls move to "ended". The ``/try`` page, with Chromium's fake
microphone fed a WAV made from fixtures, must show an emotion label; a file picked in the page
must be analysed to its summary; a bad token must be refused on both pages with a clear message.

Screenshots (1200x800 PNG) go to ``$EMOSTREAM_SCREENSHOT_DIR`` when it is set (the README's are
made with ``EMOSTREAM_SCREENSHOT_DIR=docs/screenshots``), else to the test's temporary folder.

Skips cleanly without Chromium (/usr/bin/chromium), playwright, or the ``[server]`` extra.
Never downloads a browser.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from conftest import fixture_clip

pytest.importorskip("starlette", reason="the [server] extra is not installed (pip install 'emostream[server]')")
pytest.importorskip("uvicorn", reason="the [server] extra is not installed (pip install 'emostream[server]')")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (the dev extra)")
ws_client = pytest.importorskip("websockets.sync.client", reason="websockets is not installed (the [server] extra)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")

pytestmark = pytest.mark.slow

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
VIEWPORT = {"width": 1200, "height": 800}
RAVDESS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
SHOWN = ("neutral", "happy", "sad", "angry")  # the labels the pages show: [labels] show, by default
# An arousal alert that the angry and fearful fixtures set off: the supervisor page must highlight it.
# Once fired it stays active for the rest of a short call (clear_after_s), so the page can be checked.
CONFIG = """
[[alerts]]
name = "customer_aroused"
on = "arousal"
threshold = 0.6
min_duration_s = 1.0
clear_after_s = 60.0
roles = ["customer"]
"""


@dataclass
class Server:
    url: str
    token: str
    log: Path
    labels: tuple[str, ...] = SHOWN


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve_command() -> list[str]:
    """The installed console script beside this interpreter (.venv/bin/emostream), else ``python -m emostream``."""
    script = Path(sys.executable).with_name("emostream")
    return [str(script)] if script.exists() else [sys.executable, "-m", "emostream"]


@contextlib.contextmanager
def _running_server(folder: Path, model_arg: str, token: str, port: int) -> Iterator[Server]:
    """``emostream serve`` on 127.0.0.1:``port`` with ``token`` in EMOSTREAM_TOKEN, until SIGTERM at the end."""
    config = folder / "config.toml"
    config.write_text(CONFIG, encoding="utf-8")
    log = folder / f"serve-{port}-{time.monotonic_ns()}.log"
    cmd = [*_serve_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--config", str(config)]
    cmd += ["--model", model_arg]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "EMOSTREAM_TOKEN": token}, cwd=folder
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"emostream serve exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"emostream serve did not answer /healthz within 60 s:\n{log.read_text(errors='replace')}")
        time.sleep(0.2)
    try:
        yield Server(url=url, token=token, log=log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_arg: str) -> Iterator[Server]:
    """A real ``emostream serve`` on a free port with a random token, shared by the module's tests."""
    with _running_server(tmp_path_factory.mktemp("serve"), model_arg, secrets.token_urlsafe(24), _free_port()) as srv:
        yield srv


def _clips(*pairs: tuple[int, int], gap_s: float = 0.6) -> np.ndarray:
    """RAVDESS fixtures (actor, emotion 1..8) one after the other with short silences; float32 mono 16 kHz."""
    parts: list[np.ndarray] = []
    for actor, emotion in pairs:
        x, rate = sf.read(fixture_clip(actor, emotion), dtype="float32")
        assert rate == 16000
        parts += [x, np.zeros(int(gap_s * rate), np.float32)]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def mic_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48 kHz 16-bit mono WAV of angry, fearful and happy fixtures: Chromium's fake microphone plays it in a loop."""
    x16 = _clips((1, 5), (2, 5), (1, 6), (2, 3))
    x48 = np.interp(np.arange(len(x16) * 3) / 3, np.arange(len(x16)), x16).astype(np.float32)  # 16 -> 48 kHz
    path = tmp_path_factory.mktemp("mic") / "fake_mic.wav"
    sf.write(path, x48, 48000, subtype="PCM_16")
    return path


BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Playwright's Chromium driver pointed at Debian's Chromium (never a downloaded browser)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package chromium, installed by .ci/setup)")
    with sync_api.sync_playwright() as p:
        yield p.chromium


def _launch(chromium: Any, args: list[str]) -> Any:
    try:
        return chromium.launch(executable_path=str(CHROMIUM), args=args, headless=True)
    except sync_api.Error as exc:
        pytest.skip(f"Chromium at {CHROMIUM} does not start under playwright: {exc}")


@pytest.fixture(scope="module")
def browser(chromium: Any, mic_wav: Path) -> Iterator[Any]:
    """Headless Chromium whose microphone is granted and plays ``mic_wav``."""
    b = _launch(
        chromium, [*BROWSER_ARGS, "--use-fake-ui-for-media-stream", f"--use-file-for-fake-audio-capture={mic_wav}"]
    )
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (its own context: own sessionStorage) that collects page errors; fails on any."""
    context = browser.new_context(viewport=VIEWPORT)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.errors = errors
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _wait_fn(pg: Any, expression: str, arg: Any = None, timeout: float = 30000) -> None:
    """``pg.wait_for_function``; on a timeout, an AssertionError that shows what the page says."""
    try:
        pg.wait_for_function(expression, arg=arg, timeout=timeout)
    except sync_api.TimeoutError:
        said = pg.evaluate(
            "() => ['status', 'message', 'conn', 'reading'].map(id => "
            "`${id}: ${document.getElementById(id)?.textContent ?? '-'}`).join(' | ')"
        )
        raise AssertionError(
            f"waited {timeout / 1000:.0f} s for {expression!r} ({arg!r}); the page shows {said}"
        ) from None


def _screenshot(pg: Any, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("EMOSTREAM_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pg.screenshot(path=str(path))
    return path


# ---- a scripted /ingest client -------------------------------------------------------------------


@dataclass
class IngestCall:
    """One call streamed to /ingest in real time (s16le, 100 ms frames), with the records sent back to it."""

    server: Server
    call_id: str
    audio: np.ndarray  # (n, channels) float32
    roles: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> IngestCall:
        self.thread = threading.Thread(target=self._run, name=f"ingest {self.call_id}", daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float) -> None:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"call {self.call_id} did not finish within {timeout} s"
        if self.error is not None:
            raise AssertionError(f"call {self.call_id} failed: {self.error!r}") from self.error

    def fired(self) -> int:
        return sum(1 for r in self.records if r.get("type") == "alert" and r.get("state") == "fired")

    def _run(self) -> None:
        try:
            self._stream()
        except BaseException as exc:  # reported by join() in the test thread
            self.error = exc

    def _stream(self) -> None:
        rate = 16000
        url = self.server.url.replace("http://", "ws://") + f"/ingest?token={self.server.token}"
        hello = {
            "call_id": self.call_id,
            "sample_rate_hz": rate,
            "encoding": "s16le",
            "channels": self.audio.shape[1],
            "roles": self.roles,
            "events": True,
        }
        with ws_client.connect(url, open_timeout=10, close_timeout=5) as ws:
            ws.send(json.dumps(hello))
            accepted = json.loads(ws.recv(timeout=10))
            assert accepted.get("type") == "accepted", accepted
            reader = threading.Thread(target=self._read, args=(ws,), daemon=True)
            reader.start()
            pcm = (np.clip(self.audio, -1, 1) * 32767).astype("<i2")
            step = rate // 10
            t0 = time.monotonic()
            for i, start in enumerate(range(0, len(pcm), step)):
                ws.send(pcm[start : start + step].tobytes())
                time.sleep(max(0.0, t0 + (i + 1) * 0.1 - time.monotonic()))
            ws.send(json.dumps({"type": "stop"}))
            reader.join(30)
        assert any(r.get("type") == "call_end" for r in self.records), f"no call_end for {self.call_id}"

    def _read(self, ws: Any) -> None:
        try:
            while True:
                msg = ws.recv(timeout=30)
                if isinstance(msg, str):
                    record = json.loads(msg)
                    self.records.append(record)
                    if record.get("type") == "call_end":
                        return
        except Exception:  # the socket closed; _stream checks that call_end came
            return


# ---- the supervisor page --------------------------------------------------------------------------

CHIP_TEXT = "id => document.querySelector(`article.call[data-call-id='${id}'] .chip`)?.textContent ?? ''"


def test_supervisor_page_shows_live_calls(server: Server, page: Any, tmp_path: Path) -> None:
    page.goto(f"{server.url}/#token={server.token}")
    page.wait_for_selector("#conn[data-state='live']", timeout=15000)
    assert page.locator("#no-calls").is_visible()

    tag = secrets.token_hex(3)
    mono = [  # eleven customers (the first one watched closely) and a stereo call below: a screenful
        (f"CA-{tag}-angry", _clips((1, 5), (2, 5), (1, 6))),
        (f"CA-{tag}-happy", _clips((1, 3), (2, 3), (1, 8))),
        (f"CA-{tag}-sad", _clips((2, 4), (1, 4), (1, 1))),
        (f"CA-{tag}-calm", _clips((1, 2), (2, 2), (2, 1))),
        (f"CA-{tag}-disgust", _clips((2, 7), (1, 7), (2, 6))),
        (f"CA-{tag}-fearful", _clips((2, 6), (1, 6), (2, 4))),
        (f"CA-{tag}-surprised", _clips((2, 8), (1, 8), (1, 3))),
        (f"CA-{tag}-neutral", _clips((1, 1), (2, 1), (1, 2))),
        (f"CA-{tag}-mixed1", _clips((2, 3), (1, 5), (2, 7))),
        (f"CA-{tag}-mixed2", _clips((1, 4), (2, 2), (1, 7))),
        (f"CA-{tag}-mixed3", _clips((2, 2), (1, 6), (2, 5))),
    ]
    calls = [IngestCall(server, cid, x[:, None], ["customer"]) for cid, x in mono]
    customer, agent = _clips((2, 5), (1, 5), (2, 8)), _clips((1, 1), (2, 2), (1, 2))
    n = min(len(customer), len(agent))
    stereo = np.stack([customer[:n], agent[:n]], axis=1)
    calls.append(IngestCall(server, f"CA-{tag}-stereo", stereo, ["customer", "agent"]))
    for call in calls:
        call.start()

    watched = calls[0].call_id
    card = f"article.call[data-call-id='{watched}']"
    page.wait_for_selector(f"#live {card}", timeout=15000)
    first = page.evaluate(CHIP_TEXT, watched)
    assert first not in RAVDESS, f"the card showed {first!r} before any audio was analysed"
    # the reading turns into an emotion label (a label of the model, in words)
    _wait_fn(page, f"([id, labels]) => labels.includes(({CHIP_TEXT})(id))", arg=[watched, list(SHOWN)], timeout=30000)
    points = int(page.get_attribute(f"{card} canvas.timeline", "data-points") or 0)
    assert points >= 1
    _wait_fn(
        page,
        "([sel, n]) => Number(document.querySelector(sel)?.dataset.points) >= n",
        arg=[f"{card} canvas.timeline", points + 4],
        timeout=15000,
    )
    # the agent channel of the stereo call is listed but not analysed
    stereo_card = f"article.call[data-call-id='{calls[-1].call_id}']"
    page.wait_for_selector(f"{stereo_card} .channel.passive", timeout=15000)
    assert "not analysed" in page.inner_text(f"{stereo_card} .channel.passive")
    # a few more seconds so most cards carry a reading and a timeline, then the README screenshot
    _wait_fn(
        page,
        "() => [...document.querySelectorAll('#live .chip')].filter(c => ['emotion', 'uncertain']"
        ".includes(c.dataset.kind)).length >= 8",
        timeout=20000,
    )
    _wait_fn(  # about ten seconds into the calls: the timelines show a few readings
        page,
        "sel => Number(document.querySelector(sel)?.dataset.seconds) >= 9",
        arg=f"{card} canvas.timeline",
        timeout=20000,
    )
    shot = _screenshot(page, "supervisor.png", tmp_path)
    assert shot.stat().st_size > 10_000
    assert page.evaluate("() => document.querySelectorAll('#live article.call').length") >= len(calls)

    for call in calls:
        call.join(120)
    # every call ends: its card moves to "ended", greyed, with the alerts the server sent highlighted before
    for call in calls:
        ended = f"#ended article.call.is-ended[data-call-id='{call.call_id}']"
        page.wait_for_selector(ended, timeout=15000)
        assert page.get_attribute(ended, "data-alerts-fired") == str(call.fired()), call.call_id
        assert page.locator(f"{ended} .elapsed").inner_text().startswith("ended")
    assert sum(call.fired() for call in calls) >= 1, "no alert fired on the angry and fearful calls"
    assert page.locator("#no-calls").is_visible()


def test_supervisor_page_opened_mid_call_shows_the_timeline_so_far_and_keeps_the_token_out_of_urls(
    server: Server, page: Any
) -> None:
    """Issue 19 item 14 and issue 18 (the token leaks): the snapshot fills the timeline; no URL carries the token."""
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.on("websocket", lambda ws: urls.append(ws.url))
    call = IngestCall(
        server, f"CA-{secrets.token_hex(3)}-midcall", _clips((1, 5), (2, 5), (1, 6))[:, None], ["customer"]
    )
    call.start()
    deadline = time.monotonic() + 30
    while sum(r.get("type") == "hop" for r in call.records) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    before = sum(r.get("type") == "hop" for r in call.records)
    assert before >= 10, "the call gave too few readings before the page was opened"
    page.goto(f"{server.url}/#token={server.token}")
    card = f"article.call[data-call-id='{call.call_id}'] canvas.timeline"
    page.wait_for_selector(card, timeout=15000)
    points = int(page.get_attribute(card, "data-points") or 0)
    assert points >= before - 1, f"{points} timeline points for a call that had {before} readings when opened"
    assert "token" not in page.url  # the fragment is removed from the address bar (and history) at once
    assert page.evaluate("() => sessionStorage.getItem('emostream.token')") == server.token
    call.join(60)
    assert urls and not [u for u in urls if "token=" in u], urls


def test_supervisor_page_highlights_an_alerting_call(server: Server, page: Any) -> None:
    page.goto(f"{server.url}/#token={server.token}")
    page.wait_for_selector("#conn[data-state='live']", timeout=15000)
    tag = secrets.token_hex(3)
    calm = IngestCall(server, f"CA-{tag}-calm", _clips((1, 2), (2, 2), (1, 2), (2, 2))[:, None], ["customer"]).start()
    page.wait_for_selector(f"#live article.call[data-call-id='{calm.call_id}']", timeout=15000)
    time.sleep(0.5)
    angry = IngestCall(server, f"CA-{tag}-angry", _clips((1, 5), (2, 5), (1, 5))[:, None], ["customer"]).start()
    card = f"article.call[data-call-id='{angry.call_id}']"
    page.wait_for_selector(f"#live {card}", timeout=15000)
    first = "() => document.querySelector('#live article.call')?.dataset.callId"
    assert page.evaluate(first) == calm.call_id, "without alerts, calls keep their start order"
    deadline = time.monotonic() + 60
    seen_alerting = False
    while angry.thread is not None and angry.thread.is_alive() and time.monotonic() < deadline:
        alerts = [r for r in angry.records if r.get("type") == "alert"]
        if alerts and alerts[-1].get("state") == "fired":
            page.wait_for_selector(f"#live {card}.alerting .alert-banner:not([hidden])", timeout=5000)
            banner = page.inner_text(f"{card} .alert-banner")
            assert "customer_aroused" in banner and "ALERT" in banner
            assert page.evaluate(first) == angry.call_id, "a call with an active alert sorts first"
            assert "alerting" not in (page.get_attribute(f"article.call[data-call-id='{calm.call_id}']", "class") or "")
            assert "with an alert" in page.inner_text("#totals")
            seen_alerting = True
            break
        time.sleep(0.2)
    angry.join(120)
    calm.join(120)
    assert angry.fired() >= 1, "the arousal rule did not fire on three angry clips"
    assert calm.fired() == 0, "the arousal rule fired on calm speech"
    assert seen_alerting, "the page never showed the active alert"


# ---- the /try app ------------------------------------------------------------------------------------


def test_try_page_reads_the_fake_microphone(server: Server, page: Any, tmp_path: Path) -> None:
    page.goto(f"{server.url}/try#token={server.token}")
    page.click("#mic-start")
    _wait_fn(
        page,
        "labels => { const c = document.getElementById('reading'); "
        "return c.dataset.kind === 'emotion' && labels.includes(c.textContent); }",
        arg=list(SHOWN),
        timeout=40000,
    )
    assert "Streaming the microphone" in page.inner_text("#status")
    assert page.inner_text("#message") == "" or not page.locator("#message").is_visible()
    _wait_fn(page, "() => Number(document.getElementById('timeline').dataset.points) >= 6", timeout=20000)
    bars = page.evaluate("() => [...document.querySelectorAll('#scores .bar span')].map(s => s.style.width)")
    assert len(bars) == len(SHOWN) and any(b not in ("", "0%") for b in bars)
    assert page.inner_text("#arousal-text") not in ("", "–")
    # the input level meter follows the microphone
    loud = "Number(/(-?\\d+) dB$/.exec(document.getElementById('level-text').textContent)?.[1] ?? -99) > -35"
    _wait_fn(page, f"() => {loud}", timeout=15000)
    # for the screenshot, a moment of speech with a confident label if one comes within 15 s
    with contextlib.suppress(sync_api.TimeoutError):
        page.wait_for_function(
            f"() => {loud} && document.getElementById('speech').dataset.speech === 'true'"
            " && document.getElementById('reading').dataset.kind === 'emotion'",
            timeout=15000,
        )
    shot = _screenshot(page, "try.png", tmp_path)
    assert shot.stat().st_size > 10_000
    page.click("#stop")
    # the server ends the call and sends its summary back on the same socket
    _wait_fn(
        page,
        "() => /^(Whole recording|No emotion was read)/.test(document.getElementById('status').textContent)",
        timeout=45000,
    )
    assert page.is_enabled("#mic-start")
    assert page.get_attribute("#conn", "data-state") == "idle"


def test_try_page_analyses_a_picked_file(server: Server, page: Any, tmp_path: Path) -> None:
    wav = tmp_path / "angry.wav"
    sf.write(wav, _clips((2, 5), (1, 5)), 16000, subtype="PCM_16")
    page.goto(f"{server.url}/try#token={server.token}")
    page.uncheck("#play")
    page.set_input_files("#file", str(wav))
    _wait_fn(
        page,
        "labels => labels.includes(document.getElementById('reading').textContent)",
        arg=list(SHOWN),
        timeout=30000,
    )
    assert "in real time" in page.inner_text("#status")
    _wait_fn(page, "() => document.getElementById('status').textContent.startsWith('Whole recording')", timeout=60000)
    assert any(label in page.inner_text("#status") for label in SHOWN)
    assert page.is_enabled("#mic-start") and page.is_enabled("#file")


def test_try_page_says_when_the_microphone_is_refused(server: Server, chromium: Any) -> None:
    browser = _launch(chromium, BROWSER_ARGS)  # no --use-fake-ui-for-media-stream: the permission is refused
    try:
        pg = browser.new_context(viewport=VIEWPORT).new_page()
        pg.goto(f"{server.url}/try#token={server.token}")
        pg.click("#mic-start")
        pg.wait_for_selector("#message:not([hidden])", timeout=15000)
        assert "Microphone permission was refused" in pg.inner_text("#message")
        assert pg.is_enabled("#mic-start") and not pg.is_enabled("#stop")
        assert pg.get_attribute("#conn", "data-state") == "idle"
    finally:
        browser.close()


# ---- a bad token -------------------------------------------------------------------------------------


def test_bad_token_is_refused_with_a_message(server: Server, page: Any) -> None:
    page.goto(f"{server.url}/#token=not-the-token-{secrets.token_hex(8)}")
    page.wait_for_selector("#message:not([hidden])", timeout=15000)
    assert "refused" in page.inner_text("#message") and "token" in page.inner_text("#message")
    assert page.locator("#token-form").is_visible()
    assert page.get_attribute("#conn", "data-state") == "offline"
    # the form takes the right token and the page connects
    page.fill("#token-input", server.token)
    page.click("#token-form button[type='submit']")
    page.wait_for_selector("#conn[data-state='live']", timeout=15000)
    assert not page.locator("#token-form").is_visible() and not page.locator("#message").is_visible()

    page.goto(f"{server.url}/try#token=not-the-token-{secrets.token_hex(8)}")
    page.wait_for_selector("#message:not([hidden])", timeout=15000)
    assert "refused the token" in page.inner_text("#message")
    assert page.locator("#token-form").is_visible()


def test_no_token_asks_for_one(server: Server, page: Any) -> None:
    page.goto(f"{server.url}/try")
    assert page.locator("#token-form").is_visible()
    page.click("#mic-start")
    assert "token" in page.inner_text("#message")
    page.goto(f"{server.url}/")
    page.wait_for_selector("#token-form:not([hidden])", timeout=5000)
    assert page.get_attribute("#conn", "data-state") == "offline"


# ---- the connection indicator ------------------------------------------------------------------------


def test_supervisor_page_reconnects_after_a_server_restart(page: Any, tmp_path: Path, model_arg: str) -> None:
    token, port = secrets.token_urlsafe(24), _free_port()
    with _running_server(tmp_path, model_arg, token, port) as srv:
        page.goto(f"{srv.url}/#token={token}")
        page.wait_for_selector("#conn[data-state='live']", timeout=15000)
    # the server is gone: the page says so and counts down to its next attempt (no reload)
    _wait_fn(page, "() => /reconnecting in \\d+ s/.test(document.querySelector('#conn').textContent)", timeout=15000)
    assert page.get_attribute("#conn", "data-state") == "offline"
    with _running_server(tmp_path, model_arg, token, port) as srv:
        # backoff: 1, 2, 4, 8 s (+-20%) while the server was away; the next attempt finds it
        page.wait_for_selector("#conn[data-state='live']", timeout=40000)
        call = IngestCall(srv, f"CA-{secrets.token_hex(3)}-back", _clips((1, 5))[:, None], ["customer"]).start()
        page.wait_for_selector(f"#live article.call[data-call-id='{call.call_id}']", timeout=15000)
        call.join(60)


def test_try_page_when_the_server_ends_the_call(page: Any, tmp_path: Path, model_arg: str) -> None:
    """SIGTERM on the server mid-stream: the page shows the call's summary, says why, and can start again."""
    token, port = secrets.token_urlsafe(24), _free_port()
    with _running_server(tmp_path, model_arg, token, port) as srv:
        page.goto(f"{srv.url}/try#token={token}")
        page.click("#mic-start")
        _wait_fn(page, "() => Number(document.getElementById('timeline').dataset.points) >= 2", timeout=40000)
    # the server has exited (SIGTERM finishes open calls' summaries first)
    _wait_fn(
        page,
        "() => /^(Whole recording|No emotion was read)/.test(document.getElementById('status').textContent)",
        timeout=15000,
    )
    assert page.is_enabled("#mic-start") and not page.is_enabled("#stop")
    assert page.get_attribute("#conn", "data-state") == "idle"
    page.wait_for_selector("#message:not([hidden])", timeout=10000)
    assert "The server ended the call" in page.inner_text("#message")
