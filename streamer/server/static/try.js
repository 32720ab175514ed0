// The /try app: stream the microphone (getUserMedia -> AudioWorklet -> f32le frames) or a decoded
// file (mono, paced in real time) to WS /ingest with "events": true, and show the reading that comes
// back on the same socket: label, score bars, arousal, speech state, a one-minute timeline, alerts.
import {
  Timeline, checkToken, clock, describeClose, describeReading, el, emotionColour, forgetToken,
  inkOn, legend, openSocket, pct, readToken, saveToken,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const DEFAULT_LABELS = ["neutral", "happy", "sad", "angry"]; // [labels] default, until the server says which it shows
const FILE_LEAD_S = 0.2; // a file is sent at most this far ahead of real time
const MAX_BACKLOG_S = 10; // audio waiting in the socket's send buffer before the page gives up
const SUMMARY_WAIT_S = 30; // after "stop", wait this long for the server's call_end before closing
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

let token = readToken();
let labels = [];
let run = null; // the current stream: {kind, ws, ctx, ...}
const timeline = new Timeline($("timeline"), 60);

// ---- messages and state ------------------------------------------------------------------------

function showMessage(text, kind = "error") {
  const m = $("message");
  m.textContent = text;
  m.dataset.kind = kind;
  m.hidden = !text;
}

function setStatus(text, state = "") {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

function setConn(state, text) {
  $("conn").dataset.state = state;
  $("conn").querySelector(".text").textContent = text;
}

function askToken(reason) {
  $("token-form").hidden = false;
  if (reason) showMessage(reason);
  $("token-input").focus();
}

function badToken(reason) {
  forgetToken();
  token = null;
  askToken(`The server refused the token${reason ? ` (${reason})` : ""}. Enter the token printed by \`emostream serve\` (or set in EMOSTREAM_TOKEN), or open the link it printed.`);
}

function setBusy(busy) {
  $("mic-start").disabled = busy;
  $("file").disabled = busy;
  $("stop").disabled = !busy;
}

// ---- the reading panel ------------------------------------------------------------------------

function setLabels(list) {
  if (!list?.length || list.join() === labels.join()) return;
  labels = list;
  const box = $("scores");
  box.replaceChildren();
  for (const label of labels) {
    const colour = emotionColour(label);
    box.append(
      el("span", { class: "name", "data-label": label, text: label }),
      el("span", { class: "bar" }, el("span", { "data-label": label, style: `background:${colour}` })),
      el("span", { class: "value", "data-label": label, text: "–" }),
    );
  }
  $("legend").replaceChildren(legend(labels));
}

function showHop(hop) {
  const r = describeReading(hop);
  const chip = $("reading");
  chip.textContent = r.text;
  chip.dataset.kind = r.kind;
  const colour = r.emotion ? emotionColour(r.emotion) : "";
  chip.style.background = r.kind === "emotion" ? colour : "";
  chip.style.color = r.kind === "emotion" ? inkOn(colour) : "";
  chip.style.borderColor = colour;
  $("reading-detail").textContent = r.detail;
  const speech = hop.is_speech ?? hop.speech_ratio >= 0.3;
  $("speech").dataset.speech = String(speech);
  $("speech").textContent = speech ? `speech (${pct(hop.speech_ratio)} of the window)` : "silence";
  const a = hop.arousal;
  $("arousal").style.width = a == null ? "0" : `${Math.round(a * 100)}%`;
  $("arousal").classList.toggle("high", a != null && a >= 0.6);
  $("arousal-text").textContent = a == null ? "–" : a.toFixed(2);
  const scores = hop.smoothed ?? hop.scores;
  if (scores) {
    setLabels(labels.length ? labels : Object.keys(scores));
    const top = Object.entries(scores).sort((x, y) => y[1] - x[1])[0]?.[0];
    for (const label of labels) {
      const v = scores[label] ?? 0;
      const bar = $("scores").querySelector(`.bar span[data-label="${label}"]`);
      if (bar) bar.style.width = `${Math.round(v * 100)}%`;
      const value = $("scores").querySelector(`.value[data-label="${label}"]`);
      if (value) value.textContent = pct(v);
      $("scores").querySelector(`.name[data-label="${label}"]`)?.classList.toggle("top", label === top);
    }
  }
  timeline.push(hop);
  timeline.draw();
}

function resetReading() {
  $("reading").textContent = "waiting for audio";
  $("reading").dataset.kind = "waiting";
  $("reading").style.cssText = "";
  $("reading-detail").textContent = "";
  $("speech").textContent = "no audio";
  $("speech").dataset.speech = "false";
  $("alerts").replaceChildren();
  timeline.points = [];
  timeline.alerts = [];
  timeline.draw();
}

function showAlert(rec) {
  timeline.alert(rec);
  const what = rec.on === "arousal" ? "arousal" : (rec.emotions ?? []).join("/");
  const at = clock(rec.t_end ?? 0);
  const text = rec.state === "fired"
    ? `⚠ alert ${rec.rule} fired at ${at}: ${what} ${pct(rec.score)}`
    : `alert ${rec.rule} cleared at ${at}`;
  $("alerts").append(el("li", { text }));
}

function showSummary(summary) {
  const parts = [];
  for (const ch of summary?.channels ?? []) {
    if (ch.analysed === false) continue;
    const secs = ch.emotion_seconds ?? ch.emotion_s ?? {};
    const total = Object.values(secs).reduce((a, b) => a + b, 0);
    const shares = Object.entries(secs).filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${pct(v / total)}`);
    if (shares.length) parts.push(shares.join(", "));
  }
  const duration = summary?.duration_s != null ? ` (${clock(summary.duration_s)} analysed)` : "";
  return parts.length ? `Whole recording${duration}: ${parts.join("; ")}.` : `No emotion was read${duration}: was there speech?`;
}

// ---- the /ingest socket -----------------------------------------------------------------------

/**
 * Open WS /ingest for mono f32le audio at `rateHz`; resolves once the server has accepted the
 * stream, rejects with an Error whose message is for the page.
 */
function openIngest(rateHz, what) {
  return new Promise((resolve, reject) => {
    let accepted = false;
    const ws = openSocket("ingest", token);
    ws.binaryType = "arraybuffer";
    let opened = false;
    let ended = null; // set by call_end: {stopping} (whether the page had asked to stop)
    ws.onopen = () => {
      opened = true;
      ws.send(JSON.stringify({ sample_rate_hz: Math.round(rateHz), encoding: "f32le", channels: 1, events: true }));
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg.type === "accepted") {
        accepted = true;
        setLabels(msg.labels ?? DEFAULT_LABELS);
        $("model").textContent = msg.model ? `model: ${msg.model}` : "";
        $("meta").textContent = `call ${msg.call_id} · ${what} · ${Math.round(rateHz)} Hz`;
        resolve(ws);
      } else if (msg.type === "hop") showHop(msg);
      else if (msg.type === "alert") showAlert(msg);
      else if (msg.type === "call_end") {
        // the call is over: the page is ready for another run at once, not only when the socket closes
        const mine = run && run.ws === ws;
        ended = { stopping: Boolean(mine && run.stopping) };
        if (mine) stopLocal({ keepSocket: true });
        setConn("idle", "not streaming");
        setStatus(showSummary(msg.summary));
        // the server closes the socket after call_end; close it ourselves if it does not
        setTimeout(() => { if (ws.readyState === WebSocket.OPEN) ws.close(1000, "done"); }, 5000);
      }
    };
    ws.onclose = async (ev) => {
      const mine = run && run.ws === ws;
      if (!accepted) {
        if (ev.code === 1008 || (!opened && ["bad", "scope"].includes(await checkToken(token, "ingest")))) {
          badToken(ev.reason);
          reject(new Error(""));
        } else {
          reject(new Error(`Could not start the stream: ${describeClose(ev)}.`));
        }
        return;
      }
      if (ended) {
        // the summary is shown; say why only if the server ended a call the page had not stopped
        if (ev.code === 1008) badToken(ev.reason);
        else if (!ended.stopping) showMessage(`The server ended the call: ${describeClose(ev)}.`, "info");
        return;
      }
      if (!mine) return;
      // the socket closed before any call_end
      const { stopping } = run;
      stopLocal();
      setConn("idle", "not streaming");
      if (ev.code === 1008) badToken(ev.reason);
      else if (stopping && (ev.code === 1000 || ev.code === 1005)) {
        setStatus("Finished (the server sent no summary).");
      } else {
        showMessage(`The server closed the stream: ${describeClose(ev)}.`);
        setStatus("Stopped.");
      }
    };
  });
}

function sendSamples(ws, samples) {
  if (ws.readyState !== WebSocket.OPEN || run?.stopping) return;
  if (run && ws.bufferedAmount > MAX_BACKLOG_S * run.rateHz * 4) {
    // the network cannot carry the audio as fast as it comes: stop rather than fall ever further behind
    showMessage(`The connection is too slow: more than ${MAX_BACKLOG_S} s of audio is waiting to be sent. Stopped.`);
    finish("Stopping…");
    return;
  }
  if (LITTLE_ENDIAN) {
    ws.send(samples.buffer.byteLength === samples.byteLength ? samples.buffer : samples.slice().buffer);
  } else {
    const view = new DataView(new ArrayBuffer(samples.length * 4));
    samples.forEach((v, i) => view.setFloat32(i * 4, v, true));
    ws.send(view.buffer);
  }
}

function showLevel(samples) {
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  const db = 10 * Math.log10(sum / Math.max(1, samples.length) + 1e-12);
  $("level").style.width = `${Math.max(0, Math.min(100, (db + 60) / 60 * 100))}%`;
  $("level-text").textContent = db < -90 ? "silent" : `${Math.round(db)} dB`;
}

// ---- microphone --------------------------------------------------------------------------------

async function startMic() {
  if (!token) { askToken("Enter the access token first."); return; }
  showMessage("");
  resetReading();
  if (!navigator.mediaDevices?.getUserMedia) {
    showMessage("This browser gives the microphone only to secure pages: open this page over https:// or as http://127.0.0.1 / http://localhost.");
    return;
  }
  setBusy(true);
  setStatus("Asking for the microphone…");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
  } catch (err) {
    setBusy(false);
    setStatus("");
    showMessage(micError(err));
    return;
  }
  const ctx = new AudioContext();
  run = { kind: "microphone", ctx, stream, rateHz: ctx.sampleRate };
  try {
    await ctx.audioWorklet.addModule("static/capture-worklet.js");
    setConn("connecting", "connecting…");
    const ws = await openIngest(ctx.sampleRate, "microphone");
    run.ws = ws;
    const source = ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(ctx, "emostream-capture", {
      numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
      channelCount: 1, channelCountMode: "explicit", channelInterpretation: "speakers",
    });
    const mute = ctx.createGain();
    mute.gain.value = 0; // the worklet must be pulled by the graph; nothing is heard
    source.connect(node).connect(mute).connect(ctx.destination);
    run.node = node;
    let sent = 0;
    node.port.onmessage = (ev) => {
      sendSamples(ws, ev.data);
      showLevel(ev.data);
      sent += ev.data.length;
      if (run) setStatus(`Streaming the microphone: ${clock(sent / ctx.sampleRate)} sent. Press Stop to end.`, "streaming");
    };
    await ctx.resume();
    setConn("live", "streaming");
    setStatus("Streaming the microphone. Speak!", "streaming");
  } catch (err) {
    stopLocal();
    if (err.message) showMessage(err.message);
    setStatus("");
    setConn("idle", "not streaming");
  }
}

function micError(err) {
  switch (err?.name) {
    case "NotAllowedError": case "SecurityError":
      return "Microphone permission was refused. Allow the microphone for this site (the icon in the address bar) and press Start again.";
    case "NotFoundError": case "OverconstrainedError":
      return "No microphone was found. Plug one in (or pick a file instead).";
    case "NotReadableError":
      return "The microphone is in use by another program or could not be opened.";
    default:
      return `The microphone could not be opened: ${err?.message || err}`;
  }
}

// ---- a file, paced in real time -------------------------------------------------------------------

async function startFile(file) {
  if (!token) { askToken("Enter the access token first."); return; }
  showMessage("");
  resetReading();
  setBusy(true);
  setStatus(`Decoding ${file.name}…`);
  const ctx = new AudioContext();
  let buffer;
  try {
    buffer = await ctx.decodeAudioData(await file.arrayBuffer());
  } catch {
    ctx.close();
    setBusy(false);
    setStatus("");
    showMessage(`This browser cannot decode ${file.name}: pick a WAV, FLAC, MP3, Ogg or WebM recording.`);
    return;
  }
  const rate = buffer.sampleRate;
  const mono = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const data = buffer.getChannelData(c);
    for (let i = 0; i < data.length; i++) mono[i] += data[i] / buffer.numberOfChannels;
  }
  run = { kind: "file", ctx, rateHz: rate };
  try {
    setConn("connecting", "connecting…");
    const ws = await openIngest(rate, `file ${file.name}`);
    run.ws = ws;
    await ctx.resume();
    if ($("play").checked) {
      const player = ctx.createBufferSource();
      player.buffer = buffer;
      player.connect(ctx.destination);
      player.start();
      run.player = player;
    }
    setConn("live", "streaming");
    const t0 = performance.now();
    const block = Math.round(rate / 20);
    let pos = 0;
    const pump = () => {
      if (!run || run.ws !== ws) return;
      const due = Math.min(mono.length, Math.round(((performance.now() - t0) / 1000 + FILE_LEAD_S) * rate));
      while (pos < due) {
        const chunk = mono.subarray(pos, Math.min(due, pos + block));
        sendSamples(ws, chunk);
        showLevel(chunk);
        pos += chunk.length;
      }
      setStatus(`Sending ${file.name} in real time: ${clock(pos / rate)} of ${clock(mono.length / rate)}.`, "streaming");
      if (pos >= mono.length) {
        clearInterval(run.timer);
        finish("Finished sending; waiting for the last readings…");
      }
    };
    run.timer = setInterval(pump, 50);
    pump();
  } catch (err) {
    stopLocal();
    if (err.message) showMessage(err.message);
    setStatus("");
    setConn("idle", "not streaming");
  }
}

// ---- stopping -------------------------------------------------------------------------------------

/** Ask the server to end the call (it answers with call_end, then closes). */
function finish(text) {
  if (!run) return;
  run.stopping = true;
  clearInterval(run.timer);
  run.node?.port.postMessage("stop");
  run.stream?.getTracks().forEach((t) => t.stop());
  try { run.player?.stop(); } catch { /* already ended */ }
  if (run.ws?.readyState === WebSocket.OPEN) {
    run.ws.send(JSON.stringify({ type: "stop" }));
    setStatus(text);
    const ws = run.ws;
    setTimeout(() => { if (ws.readyState === WebSocket.OPEN) ws.close(1000, "done"); }, SUMMARY_WAIT_S * 1000);
  } else {
    stopLocal();
  }
}

/**
 * Release the microphone, the audio context and (unless `keepSocket`: the server is closing it) the
 * socket; the page is ready for another run.
 */
function stopLocal({ keepSocket = false } = {}) {
  if (!run) return;
  const r = run;
  run = null;
  clearInterval(r.timer);
  r.node?.port.postMessage("stop");
  r.stream?.getTracks().forEach((t) => t.stop());
  try { r.player?.stop(); } catch { /* already ended */ }
  r.ctx?.close().catch(() => {});
  if (!keepSocket && r.ws && r.ws.readyState === WebSocket.OPEN) r.ws.close(1000, "done");
  $("level").style.width = "0";
  $("level-text").textContent = "–";
  setBusy(false);
  $("file").value = "";
}

// ---- wiring -----------------------------------------------------------------------------------------

$("mic-start").addEventListener("click", startMic);
$("stop").addEventListener("click", () => finish("Stopping…"));
$("file").addEventListener("change", () => {
  const file = $("file").files?.[0];
  if (file) startFile(file);
});
$("token-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  $("token-input").value = "";
  const verdict = await checkToken(value, "ingest");
  if (verdict === "bad") { showMessage("The server refused this token too. Check it and try again."); return; }
  if (verdict === "scope") { showMessage("This token cannot send audio (a read-only token?). Enter an ingest or admin token."); return; }
  token = value;
  saveToken(value);
  $("token-form").hidden = true;
  showMessage(verdict === "ok" ? "" : "The server could not be reached to check the token; it will be tried when you start.", "warn");
});
window.addEventListener("resize", () => timeline.draw());

setLabels(DEFAULT_LABELS);
resetReading();
if (!token) askToken("");
else checkToken(token, "ingest").then((verdict) => {
  if (verdict === "bad") badToken("");
  else if (verdict === "scope") badToken("this token cannot send audio; use an ingest or admin token");
});
