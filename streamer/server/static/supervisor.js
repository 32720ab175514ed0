// The supervisor page: every live call as a compact card (reading, arousal, timeline, alerts),
// fed by WS /events; calls with an active alert sort first; ended calls move down, greyed.
import {
  Timeline, checkToken, clock, describeClose, describeReading, el, emotionColour, forgetToken,
  inkOn, legend, openSocket, pct, readToken, saveToken,
} from "./common.js";

const TIMELINE_S = 180; // the last three minutes of each call
const MAX_ENDED = 12;
const $ = (id) => document.getElementById(id);

const calls = new Map(); // call_id -> Call
let labels = [];
let token = readToken();
let socket = null;
let attempt = 0;
let retryTimer = null;
let countdown = null;
let dirty = new Set();
let orderDirty = true;
let droppedTotal = 0;

// Timelines of cards out of view are not drawn (with 100 calls most of the grid is off screen).
const visibility = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const call = entry.target.emostreamCall;
    if (!call) continue;
    call.visible = entry.isIntersecting;
    if (call.visible && call.stale && call.built) call.drawTimelines();
  }
});

class Call {
  constructor(info) {
    this.id = info.call_id;
    this.channels = new Map(); // channel index -> {role, analysed, last, timeline, node parts}
    this.alerts = new Map(); // "rule/channel" -> alert record
    this.ended = false;
    this.summary = null;
    this.firstAlertAt = null;
    this.alertsFired = 0;
    this.node = el("article", { class: "call", "data-call-id": this.id });
    this.node.emostreamCall = this;
    this.visible = true; // until the observer says otherwise
    visibility.observe(this.node);
    this.update(info);
  }

  update(info) {
    this.source = info.source ?? this.source ?? "";
    if (info.replica && info.replica !== this.replica) { this.replica = info.replica; this.built = false; } // a fleet's supervisor
    this.startedAt = info.started_at ? Date.parse(info.started_at) : (this.startedAt ?? Date.now());
    for (const ch of info.channels ?? []) {
      const c = this.channel(ch.channel, ch.role, ch.analysed);
      // a [[channels]] name given in the config, not the default "role (ch i)"
      const custom = ch.name && !/^\S+ \(ch \d+\)$/.test(ch.name) ? ch.name : null;
      if (custom !== c.name) { c.name = custom; this.built = false; }
    }
    if (info.history) { // the snapshot of a call under way: its recent timeline, so the page starts filled
      for (const [key, points] of Object.entries(info.history)) {
        const ch = this.channel(Number(key), undefined, undefined);
        ch.timeline.points = [];
        ch.timeline.alerts = [];
        for (const [t_end, emotion, uncertain, is_speech] of points) ch.timeline.push({ t_end, emotion, uncertain, is_speech });
      }
      for (const a of info.alert_history ?? []) this.channel(a.channel ?? 0, a.role, undefined).timeline.alert(a);
    }
    for (const [key, hop] of Object.entries(info.last ?? {})) {
      if (hop) this.hop({ ...hop, channel: hop.channel ?? Number(key) }, false);
    }
    if (info.alerts) { // the active alerts now: keep the known ones, add the new, drop the cleared
      const now = new Set(info.alerts.map((a) => `${a.rule}/${a.channel}`));
      for (const key of [...this.alerts.keys()]) if (!now.has(key)) this.alerts.delete(key);
      for (const a of info.alerts) if (!this.alerts.has(`${a.rule}/${a.channel}`)) this.alertRecord(a);
      if (!this.alerts.size) this.firstAlertAt = null;
    }
  }

  channel(index, role, analysed) {
    let ch = this.channels.get(index);
    if (!ch) {
      const canvas = el("canvas", { class: "timeline", "data-points": "0", role: "img" });
      ch = { index, role: role ?? `channel ${index}`, analysed: analysed ?? true, last: null, timeline: new Timeline(canvas, TIMELINE_S) };
      this.channels.set(index, ch);
      this.built = false;
    } else {
      if ((role && role !== ch.role) || (analysed != null && analysed !== ch.analysed)) this.built = false;
      if (role) ch.role = role;
      if (analysed != null) ch.analysed = analysed;
    }
    return ch;
  }

  hop(record, toTimeline = true) {
    const ch = this.channel(record.channel ?? 0, record.role, undefined);
    if (record.emotion != null && !ch.analysed) {
      ch.analysed = true; // a reading on a channel announced as not analysed: show it as analysed
      this.built = false;
    }
    ch.last = record;
    if (toTimeline) ch.timeline.push(record);
  }

  alertRecord(record) {
    const key = `${record.rule}/${record.channel}`;
    if (record.state === "cleared") this.alerts.delete(key);
    else {
      if (!this.alerts.has(key)) this.alertsFired += 1;
      this.alerts.set(key, record);
      if (this.firstAlertAt == null) this.firstAlertAt = Date.now();
    }
    if (!this.alerts.size) this.firstAlertAt = null;
    this.channel(record.channel ?? 0, record.role, undefined).timeline.alert(record);
  }

  get alerting() {
    return !this.ended && this.alerts.size > 0;
  }

  build() {
    const n = this.node;
    n.replaceChildren();
    this.head = el("header", {},
      el("span", { class: "call-id", title: this.id, text: this.id }),
      el("span", { class: "source", text: this.source }),
      this.replica ? el("span", { class: "replica", title: "the replica that runs this call", text: this.replica }) : null,
      (this.elapsed = el("span", { class: "elapsed" })));
    this.banner = el("div", { class: "alert-banner", hidden: "" });
    n.append(this.head, this.banner);
    const sorted = [...this.channels.values()].sort((a, b) => Number(b.analysed) - Number(a.analysed) || a.index - b.index);
    for (const ch of sorted) {
      if (ch.analysed) {
        ch.chip = el("span", { class: "chip" });
        ch.detail = el("span", { class: "detail" });
        ch.arousalFill = el("span", { class: "fill" });
        ch.arousalText = el("span", { class: "arousal-value" });
        ch.node = el("div", { class: "channel", "data-channel": String(ch.index) },
          el("div", { class: "reading" }, el("span", { class: "role", text: ch.name ?? ch.role, title: ch.role }), ch.chip, ch.detail),
          el("div", { class: "arousal", title: "arousal: 0 calm/low energy … 1 aroused/high energy" },
            el("span", { class: "arousal-label", text: "arousal" }),
            el("span", { class: "meter" }, ch.arousalFill), ch.arousalText),
          ch.timeline.canvas);
      } else {
        ch.speechText = el("span", { class: "detail" });
        ch.node = el("div", { class: "channel passive", "data-channel": String(ch.index) },
          el("span", { class: "role", text: ch.name ?? ch.role, title: ch.role }), ch.speechText,
          el("span", { class: "note", text: "not analysed" }));
      }
      n.append(ch.node);
    }
    this.footer = el("div", { class: "call-footer" });
    n.append(this.footer);
    this.built = true;
  }

  render() {
    if (!this.built) this.build();
    this.node.classList.toggle("alerting", this.alerting);
    this.node.classList.toggle("is-ended", this.ended);
    this.node.dataset.alertsFired = String(this.alertsFired);
    if (this.alerting) {
      const several = [...this.channels.values()].filter((c) => c.analysed).length > 1;
      const texts = [...this.alerts.values()].map((a) => {
        const score = a.on === "arousal" ? Number(a.score).toFixed(2) : pct(a.score);
        return `${a.rule}${several ? ` (${a.role ?? "channel " + a.channel})` : ""} ${score}`;
      });
      this.banner.textContent = `⚠ ALERT ${texts.join("; ")}`;
      this.banner.title = [...this.alerts.values()].map((a) =>
        `${a.rule}: ${a.on === "arousal" ? "arousal" : (a.emotions ?? []).join(" + ")} at ${Number(a.score).toFixed(2)} ` +
        `(threshold ${a.threshold}) since ${clock(a.t_start ?? 0)} of the call`).join("\n");
      this.banner.hidden = false;
    } else {
      this.banner.hidden = true;
    }
    for (const ch of this.channels.values()) {
      if (!ch.node) continue;
      if (ch.analysed && ch.chip) renderReading(ch);
      else if (ch.speechText) {
        const speaking = ch.last && (ch.last.is_speech ?? ch.last.speech_ratio >= 0.3);
        ch.speechText.textContent = ch.last ? (speaking ? "speaking" : "silent") : "–";
      }
    }
    if (this.ended) {
      this.footer.textContent = endedText(this);
    }
    this.tick();
  }

  tick() {
    if (!this.elapsed) return;
    const seconds = this.ended && this.duration != null ? this.duration : (Date.now() - this.startedAt) / 1000;
    this.elapsed.textContent = (this.ended ? "ended · " : "") + clock(seconds);
  }

  drawTimelines() {
    if (!this.visible) { this.stale = true; return; } // drawn when scrolled into view
    this.stale = false;
    for (const ch of this.channels.values()) {
      if (!ch.analysed) continue;
      ch.timeline.draw();
      const shares = ch.timeline.shares().slice(0, 3).map(([k, v]) => `${k} ${pct(v)}`).join(", ");
      ch.timeline.canvas.setAttribute("aria-label", `last ${TIMELINE_S / 60} minutes: ${shares || "no reading yet"}`);
    }
  }
}

function renderReading(ch) {
  const r = describeReading(ch.last, { short: true });
  ch.chip.textContent = r.text;
  ch.chip.dataset.kind = r.kind;
  if (r.kind === "emotion") {
    const colour = emotionColour(r.emotion);
    ch.chip.style.background = colour;
    ch.chip.style.color = inkOn(colour);
    ch.chip.style.borderColor = colour;
  } else if (r.kind === "uncertain") {
    const colour = emotionColour(r.emotion);
    ch.chip.style.background = "transparent";
    ch.chip.style.color = "#333";
    ch.chip.style.borderColor = colour;
  } else {
    ch.chip.style.background = "";
    ch.chip.style.color = "";
    ch.chip.style.borderColor = "";
  }
  ch.detail.textContent = r.detail;
  const a = ch.last?.arousal;
  ch.arousalFill.style.width = a == null ? "0" : `${Math.round(a * 100)}%`;
  ch.arousalFill.classList.toggle("high", a != null && a >= 0.6);
  ch.arousalText.textContent = a == null ? "–" : a.toFixed(2);
}

const NORMAL_ENDS = new Set(["stop", "server shutting down"]);

function endedText(call) {
  const s = call.summary;
  if (!s) return "ended";
  const parts = [];
  // why, unless the call simply ended: a replica lost or stopped, an error, an idle timeout
  if (s.end_reason && !NORMAL_ENDS.has(s.end_reason) && !s.end_reason.startsWith("disconnected")) parts.push(s.end_reason);
  for (const ch of s.channels ?? []) {
    if (ch.analysed === false) continue;
    const dominant = ch.dominant ?? topShare(ch.emotion_seconds ?? ch.emotion_s);
    if (dominant) parts.push(`${ch.role}: mostly ${dominant}`);
    const n = Array.isArray(ch.alerts) ? ch.alerts.filter((a) => a.state !== "cleared").length : ch.alerts;
    if (n) parts.push(`${n} alert${n > 1 ? "s" : ""}`);
  }
  return parts.length ? `ended · ${parts.join(" · ")}` : "ended";
}

function topShare(seconds) {
  if (!seconds) return null;
  const best = Object.entries(seconds).sort((a, b) => b[1] - a[1])[0];
  return best && best[1] > 0 ? best[0] : null;
}

// ---- messages --------------------------------------------------------------------------------

function getCall(info) {
  let call = calls.get(info.call_id);
  if (!call) {
    call = new Call(info);
    calls.set(call.id, call);
    orderDirty = true;
  } else {
    call.update(info);
  }
  return call;
}

function onMessage(msg) {
  switch (msg.type) {
    case "snapshot": {
      if (msg.labels) setLabels(msg.labels);
      $("model").textContent = msg.model ? `model: ${msg.model}` : "";
      if (msg.fleet) document.querySelector(".navlink")?.remove(); // a fleet's supervisor takes no audio: no /try
      const present = new Set();
      for (const info of msg.calls ?? []) {
        const call = getCall(info);
        call.ended = false;
        present.add(call.id);
        dirty.add(call);
      }
      for (const call of calls.values()) {
        if (!present.has(call.id) && !call.ended) endCall(call, null); // ended while we were away
      }
      orderDirty = true;
      break;
    }
    case "call_start": {
      if (msg.labels) setLabels(msg.labels);
      const call = getCall(msg);
      call.ended = false;
      dirty.add(call);
      orderDirty = true;
      break;
    }
    case "hop": {
      if (!msg.call_id) break;
      const call = calls.get(msg.call_id) ?? getCall({ call_id: msg.call_id, source: msg.source });
      call.hop(msg);
      dirty.add(call);
      break;
    }
    case "alert": {
      if (!msg.call_id) break;
      const call = calls.get(msg.call_id) ?? getCall({ call_id: msg.call_id, source: msg.source });
      const before = call.alerting;
      call.alertRecord(msg);
      if (before !== call.alerting) orderDirty = true;
      dirty.add(call);
      break;
    }
    case "call_end": {
      const call = calls.get(msg.call_id);
      if (call) endCall(call, msg.summary ?? null);
      break;
    }
    case "dropped":
      droppedTotal += msg.count ?? 0;
      showMessage(`This page fell behind and missed ${droppedTotal} updates; the readings carry on from the latest ones.`, "warn");
      break;
    default:
      break;
  }
  schedule();
}

function endCall(call, summary) {
  call.ended = true;
  call.summary = summary;
  call.duration = summary?.duration_s ?? (Date.now() - call.startedAt) / 1000;
  call.endedAt = Date.now();
  dirty.add(call);
  orderDirty = true;
}

function setLabels(list) {
  if (list.join() === labels.join()) return;
  labels = list;
  $("legend").replaceChildren(legend(labels));
}

// ---- rendering (batched once per animation frame) --------------------------------------------

// At most RENDER_HZ repaints a second however many calls send hops: with 100 calls a hop arrives
// every few milliseconds, and one layout per batch costs far less than one per hop.
const RENDER_HZ = 4;
let scheduled = false;
let lastFlush = 0;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  const wait = Math.max(0, lastFlush + 1000 / RENDER_HZ - performance.now());
  setTimeout(() => requestAnimationFrame(flush), wait);
}

function flush() {
  scheduled = false;
  lastFlush = performance.now();
  for (const call of dirty) call.render();
  if (orderDirty) arrange();
  for (const call of dirty) call.drawTimelines();
  dirty = new Set();
}

function arrange() {
  orderDirty = false;
  const all = [...calls.values()];
  const live = all.filter((c) => !c.ended).sort((a, b) =>
    Number(b.alerting) - Number(a.alerting) || (a.firstAlertAt ?? 0) - (b.firstAlertAt ?? 0) || a.startedAt - b.startedAt);
  const ended = all.filter((c) => c.ended).sort((a, b) => b.endedAt - a.endedAt);
  for (const c of ended.slice(MAX_ENDED)) {
    calls.delete(c.id);
    visibility.unobserve(c.node);
  }
  const kept = ended.slice(0, MAX_ENDED);
  place($("live"), live);
  place($("ended"), kept);
  const alerting = live.filter((c) => c.alerting).length;
  $("live-count").textContent = `(${live.length})`;
  $("ended-count").textContent = `(${kept.length})`;
  $("ended-title").hidden = kept.length === 0;
  $("no-calls").hidden = live.length > 0;
  $("totals").textContent = `${live.length} live call${live.length === 1 ? "" : "s"}` +
    (alerting ? ` · ${alerting} with an alert` : "");
  $("totals").classList.toggle("alerting", alerting > 0);
  document.title = `${alerting ? `(${alerting}⚠) ` : ""}emostream · ${live.length} live`;
  for (const c of [...live, ...kept]) if (c.built) c.drawTimelines();
}

/** Put `items`' nodes into `container` in order, moving only what is out of place. */
function place(container, items) {
  items.forEach((item, i) => {
    if (container.children[i] !== item.node) container.insertBefore(item.node, container.children[i] ?? null);
  });
  while (container.children.length > items.length) container.lastChild.remove();
}

setInterval(() => { for (const c of calls.values()) if (!c.ended) c.tick(); }, 1000);
window.addEventListener("resize", () => { for (const c of calls.values()) if (c.built) c.drawTimelines(); });

// ---- connection: WS /events with reconnection and backoff ----------------------------------

function setConn(state, text) {
  const conn = $("conn");
  conn.dataset.state = state;
  conn.querySelector(".text").textContent = text;
}

function showMessage(text, kind = "error") {
  const m = $("message");
  m.textContent = text;
  m.dataset.kind = kind;
  m.hidden = !text;
}

function askToken(reason) {
  setConn("offline", "no token");
  $("token-form").hidden = false;
  if (reason) showMessage(reason);
  $("token-input").focus();
}

function connect() {
  clearTimeout(retryTimer);
  clearInterval(countdown);
  if (!token) { askToken(""); return; }
  setConn("connecting", attempt ? "reconnecting…" : "connecting…");
  let opened = false;
  const ws = openSocket("events", token);
  socket = ws;
  ws.onopen = () => { opened = true; };
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (msg.type === "snapshot") {
      attempt = 0;
      setConn("live", "live");
      $("token-form").hidden = true;
      if ($("message").dataset.kind !== "warn") showMessage("");
    }
    onMessage(msg);
  };
  ws.onclose = async (ev) => {
    if (socket !== ws) return;
    socket = null;
    if (ev.code === 1008 || (!opened && ["bad", "scope"].includes(await checkToken(token, "read")))) {
      forgetToken();
      token = null;
      askToken(`The server refused this token (${ev.reason || "bad token"}). Enter the token printed by \`emostream serve\` or set in EMOSTREAM_TOKEN.`);
      setConn("offline", "bad token");
      return;
    }
    const delay = Math.min(30, 2 ** attempt) * (0.8 + Math.random() * 0.4);
    attempt += 1;
    retry(describeClose(ev), delay);
  };
}

function retry(why, delayS) {
  const until = Date.now() + delayS * 1000;
  const show = () => {
    const left = Math.ceil((until - Date.now()) / 1000);
    setConn("offline", `offline: ${why}; reconnecting in ${left} s`);
  };
  show();
  countdown = setInterval(show, 1000);
  retryTimer = setTimeout(() => { clearInterval(countdown); connect(); }, delayS * 1000);
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  token = value;
  saveToken(value);
  $("token-input").value = "";
  showMessage("");
  attempt = 0;
  connect();
});

setLabels(["neutral", "happy", "sad", "angry"]); // [labels] default, until the server says which it shows
arrange();
connect();
