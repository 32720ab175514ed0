// Shared by the supervisor page and the /try app: the token, WebSocket URLs, emotion colours,
// the timeline drawing and small formatters. Plain ES module, no build step, no dependencies.

const TOKEN_KEY = "emostream.token";

/**
 * The token: from location.hash "#token=..." (kept in sessionStorage and removed from the address
 * bar and history at once), else sessionStorage, else null.
 */
export function readToken() {
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  const fromHash = hash.get("token");
  if (fromHash !== null) {
    history.replaceState(null, "", location.pathname + location.search);
    if (fromHash) {
      sessionStorage.setItem(TOKEN_KEY, fromHash);
      return fromHash;
    }
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  if (location.hash.includes("token=")) history.replaceState(null, "", location.pathname + location.search);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** ws(s):// URL of an endpoint beside this page ("events", "ingest") with extra query parameters (never the token). */
export function wsUrl(path, params = {}) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  url.search = "";
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.toString();
}

/** The subprotocol that carries the token: "emostream.bearer." + the token's UTF-8 as unpadded base64url. */
export function bearerProtocol(token) {
  let bin = "";
  for (const b of new TextEncoder().encode(token)) bin += String.fromCharCode(b);
  return "emostream.bearer." + btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * A WebSocket to an endpoint beside this page, the token in a subprotocol: browsers cannot set an
 * Authorization header on a WebSocket, and a ?token= query would land in proxies' access logs.
 */
export function openSocket(path, token, params = {}) {
  return new WebSocket(wsUrl(path, params), ["emostream", bearerProtocol(token)]);
}

/**
 * Why a WebSocket closed, in words for the page. A refused token is close code 1008; a socket
 * refused before the handshake completed shows as 1006 with no reason, so the caller asks
 * checkToken() in that case.
 */
export function describeClose(event) {
  const reason = event.reason ? `: ${event.reason}` : "";
  switch (event.code) {
    case 1000: return `the server ended the stream${reason}`;
    case 1001: return `the server is going away (restart or shutdown)${reason}`;
    case 1003: return `the server refused the audio format${reason}`;
    case 1006: return "the connection was lost (server stopped or unreachable)";
    case 1007: case 1002: return `the server refused a malformed message${reason}`;
    case 1008: return `the server refused the token${reason}`;
    case 1009: return `a message was too large for the server${reason}`;
    case 1011: return `the server hit an internal error${reason}`;
    case 1013: return `the server is full (too many calls), try again later${reason}`;
    case 4408: return `the server closed an idle stream (no audio for too long)${reason}`;
    case 4409: return `a call with this id is already open${reason}`;
    default: return `the connection closed (code ${event.code})${reason}`;
  }
}

/**
 * "ok", "bad" (the token is refused), "scope" (the token is valid but cannot do `scope`: "read"
 * for the supervisor page, "ingest" for the browser app) or "unreachable", by asking GET /api/whoami
 * with the token in the Authorization header.
 */
export async function checkToken(token, scope) {
  try {
    const url = new URL("api/whoami", location.href);
    url.hash = "";
    url.search = "";
    const r = await fetch(url, { cache: "no-store", headers: { Authorization: `Bearer ${token}` } });
    if (r.status === 401 || r.status === 403) return "bad";
    if (!r.ok) return "unreachable";
    const who = await r.json();
    return !scope || (who.scopes ?? []).includes(scope) ? "ok" : "scope";
  } catch {
    return "unreachable";
  }
}

// Colour-blind-safe hues (Okabe-Ito) for the RAVDESS labels; every label is also written out.
const EMOTION_COLOURS = {
  neutral: "#9a9a9a",
  calm: "#56b4e9",
  happy: "#f0e442",
  sad: "#0072b2",
  angry: "#d55e00",
  fearful: "#cc79a7",
  disgust: "#009e73",
  surprised: "#e69f00",
};
const FALLBACK = ["#88ccee", "#44aa99", "#ddcc77", "#aa4499", "#117733", "#332288", "#882255"];

/** A stable colour per label (fixed for RAVDESS labels, hashed for others). */
export function emotionColour(label) {
  if (label in EMOTION_COLOURS) return EMOTION_COLOURS[label];
  let h = 0;
  for (const ch of label) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return FALLBACK[h % FALLBACK.length];
}

/** Black or white, whichever reads better on the colour `hex` (#rrggbb). */
export function inkOn(hex) {
  const n = parseInt(hex.slice(1), 16);
  const lin = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  const lum = 0.2126 * lin(n >> 16) + 0.7152 * lin((n >> 8) & 255) + 0.0722 * lin(n & 255);
  return lum > 0.28 ? "#111" : "#fff";
}

export function pct(x) {
  return x == null ? "–" : `${Math.round(x * 100)}%`;
}

/** Seconds as m:ss or h:mm:ss. */
export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const mmss = `${String(m).padStart(h ? 2 : 1, "0")}:${String(r).padStart(2, "0")}`;
  return h ? `${h}:${mmss}` : mmss;
}

/** Element helper: el("div", {class: "x", text: "hi"}, child, ...). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null) continue;
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v; // CSSOM, not an inline style attribute (the CSP allows no inline style)
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

/** The reading of one hop record, in words: what the big label says and how. */
export function describeReading(hop, { short = false, minSpeechRatio = 0.3 } = {}) {
  if (!hop) return { kind: "waiting", text: "waiting for audio", detail: "" };
  const speech = hop.is_speech ?? hop.speech_ratio >= minSpeechRatio;
  if (hop.emotion == null) {
    return speech
      ? { kind: "listening", text: "listening…", detail: "speech, no reading yet" }
      : { kind: "silence", text: "no speech", detail: "" };
  }
  if (hop.uncertain) {
    return { kind: "uncertain", text: "uncertain", detail: `${hop.emotion}? ${pct(hop.confidence)}`, emotion: hop.emotion };
  }
  const detail = short ? pct(hop.confidence) : `${pct(hop.confidence)} confident`;
  return { kind: "emotion", text: hop.emotion, detail, emotion: hop.emotion };
}

/**
 * A rolling timeline of hops coloured by the shown emotion, drawn on a canvas.
 * push(hop) adds a point (audio time t_end, s); draw() repaints; `windowS` seconds are kept.
 * Uncertain readings are drawn pale and half height, speech without a reading as a thin grey
 * bar, silence as the empty baseline; alert spans as a red strip on top.
 */
export class Timeline {
  constructor(canvas, windowS = 180, minWindowS = 60) {
    this.canvas = canvas;
    this.windowS = windowS;
    this.minWindowS = Math.min(minWindowS, windowS); // a young call is drawn on this scale, then it widens
    this.points = []; // {t, emotion, uncertain, speech}
    this.alerts = []; // {t0, t1|null}
    this.count = 0;
  }

  push(hop, minSpeechRatio = 0.3) {
    const t = hop.t_end;
    if (typeof t !== "number") return;
    const last = this.points[this.points.length - 1];
    if (last && t < last.t) this.points = []; // a new stream on the same channel: start over
    this.points.push({
      t,
      emotion: hop.emotion,
      uncertain: !!hop.uncertain,
      speech: hop.is_speech ?? hop.speech_ratio >= minSpeechRatio,
    });
    this.count += 1;
    const keepFrom = t - this.windowS - 5;
    while (this.points.length && this.points[0].t < keepFrom) this.points.shift();
    this.canvas.dataset.points = String(this.count);
    this.canvas.dataset.seconds = t.toFixed(1); // audio time of the newest point
  }

  alert(record) {
    if (record.state === "fired") this.alerts.push({ t0: record.t_start, t1: null });
    else {
      const open = this.alerts.find((a) => a.t1 === null);
      if (open) open.t1 = record.t_end;
    }
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (!w || !h) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    g.fillStyle = "#eef0f3";
    g.fillRect(0, 0, w, h);
    const pts = this.points;
    if (!pts.length) return;
    const end = pts[pts.length - 1].t;
    const span = Math.min(this.windowS, Math.max(this.minWindowS, end));
    const left = Math.max(0, end - span);
    const x = (t) => ((t - left) / span) * w;
    const top = 4;
    for (let i = 0; i < pts.length; i++) {
      const p = pts[i];
      const t0 = i > 0 ? pts[i - 1].t : Math.max(left, p.t - 0.5);
      if (p.t <= left) continue;
      // whole pixels, rounded alike on both sides: neighbours share their edge (no seam, no double-painted overlap)
      const x0 = Math.round(x(Math.max(t0, left))), x1 = Math.max(Math.round(x(p.t)), x0 + 1);
      if (p.emotion) {
        g.fillStyle = emotionColour(p.emotion);
        g.globalAlpha = p.uncertain ? 0.45 : 1;
        const y = p.uncertain ? top + (h - top) / 2 : top;
        g.fillRect(x0, y, x1 - x0, h - y);
        g.globalAlpha = 1;
      } else if (p.speech) {
        g.fillStyle = "#b7bcc4";
        g.fillRect(x0, h - 6, x1 - x0, 6);
      }
    }
    g.fillStyle = "#c0392b";
    for (const a of this.alerts) {
      const t1 = a.t1 ?? end;
      if (t1 < left) continue;
      const x0 = x(Math.max(a.t0, left));
      g.fillRect(x0, 0, Math.max(x(t1) - x0, 2), top);
    }
  }

  /** Share of the labelled time per emotion over the window, for a text alternative. */
  shares() {
    const counts = {};
    let n = 0;
    for (const p of this.points) {
      if (p.emotion && !p.uncertain) { counts[p.emotion] = (counts[p.emotion] || 0) + 1; n++; }
    }
    return Object.entries(counts).map(([k, v]) => [k, v / n]).sort((a, b) => b[1] - a[1]);
  }
}

/** A legend of the label colours (written labels beside each swatch). */
export function legend(labels) {
  const box = el("ul", { class: "legend", "aria-label": "timeline colours" });
  for (const label of labels) {
    const colour = emotionColour(label);
    box.append(el("li", {}, el("span", { class: "swatch", style: `background:${colour}` }), label));
  }
  box.append(el("li", {}, el("span", { class: "swatch uncertain-swatch" }), "uncertain (pale, half height)"));
  box.append(el("li", {}, el("span", { class: "swatch alert-swatch" }), "alert"));
  return box;
}
