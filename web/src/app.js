// The ringcast browser client: a link exchanged for a session, WebTransport to ringcastd,
// the device list, consoles on xterm.js (writer or spy, resumed at their offset after a
// reconnect, gaps marked), console captures, audio through an AudioWorklet.
import * as P from './proto.js';
import { AudioView } from './audio.js';
import { opusSupported } from './opus.js';
import { NetWorker } from './transport.js';

const $ = (id) => document.getElementById(id);
const enc = new TextEncoder();
const SOFTWARE = 'ringcast-web 0.1';
const STORE = 'ringcast.session';
// The terminal is given console bytes in slices of at most SHOW_SLICE (xterm.js parses
// what it was given in turns of about 12 ms, but one write at a time: a slice bounds a
// turn); above SHOW_HIGH given and not yet parsed, the console view stops reading until
// they are down to SHOW_LOW.
const SHOW_SLICE = 16 << 10;
const SHOW_HIGH = 256 << 10;
const SHOW_LOW = 64 << 10;

const state = {
  session: null, // {token, expires, identity, hashes}
  wt: null,
  control: null, // {writer, frames}
  nextRequest: 1,
  devices: [],
  console: null, // the open console view
  audio: null,
  status: '',
  closedReason: null,
  // ?ws=wss://HOST:PORT/: everything over one WebSocket to a relay (the benchmark's
  // baseline, ws.js) instead of WebTransport to ringcastd; the network worker (net.js)
  // runs either.
  ws: new URLSearchParams(location.search).get('ws'),
  // The stamps' clock minus the page's, ms, when a caller on ringcastd's host knows it.
  stampOffsetMs: null,
};

// The page's main-thread stalls: tasks over 50 ms, as the browser's Long Tasks API reports
// them (count, total and longest, ms), so a bench can say what held the page up.
const longTasks = { count: 0, totalMs: 0, maxMs: 0 };
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      longTasks.count++; longTasks.totalMs += e.duration; longTasks.maxMs = Math.max(longTasks.maxMs, e.duration);
    }
  }).observe({ type: 'longtask' });
} catch (_) { /* a browser without the Long Tasks API: none counted */ }

function setStatus(text, kind = 'info') {
  state.status = text;
  const s = $('status');
  s.textContent = text;
  s.className = kind;
}

function hexBytes(h) {
  const b = new Uint8Array(h.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(h.substr(i * 2, 2), 16);
  return b;
}

// ---- the link and the session ----

async function start() {
  const params = new URLSearchParams(location.hash.slice(1));
  const link = params.get('link');
  if (link) {
    // The link is single-use: take it out of the address bar and history at once.
    history.replaceState(null, '', location.pathname + location.search);
    let r;
    try {
      r = await fetch('/api/session', { method: 'POST', body: link, cache: 'no-store' });
    } catch (e) {
      return setStatus(`cannot reach ringcastd: ${e.message}`, 'refused');
    }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) return setStatus(`This link was refused: ${body.error || r.status}`, 'refused');
    // WebTransport is pinned to the certificate hashes the link names: the link came from
    // the operator, while this page came over HTTPS the browser could not check. No hash in
    // the link: ringcastd has a certificate the browser verifies itself.
    const cert = params.get('cert');
    const hashes = cert ? cert.split(',').filter((h) => /^[0-9a-f]{64}$/.test(h)) : [];
    state.session = { token: body.session, expires: body.expires, identity: body.identity, hashes };
    sessionStorage.setItem(STORE, JSON.stringify(state.session));
  } else {
    const saved = sessionStorage.getItem(STORE);
    if (saved) state.session = JSON.parse(saved);
  }
  if (!state.session) {
    return setStatus("Open the link the host's operator gave you (they make it with: ringcast web-link).", 'refused');
  }
  $('identity').textContent = `${state.session.identity}, until ${new Date(state.session.expires).toLocaleString()}`;
  $('logout').hidden = false;
  await connect();
}

async function logout() {
  if (state.session) {
    await fetch('/api/logout', { method: 'POST', body: state.session.token }).catch(() => {});
  }
  sessionStorage.removeItem(STORE);
  state.session = null;
  if (state.wt) state.wt.close();
  $('logout').hidden = true;
  setStatus('Logged out. Open a new link to come back.', 'refused');
}

// ---- WebTransport ----

async function connect() {
  const url = `https://${location.host}/session?token=${encodeURIComponent(state.session.token)}`;
  setStatus('connecting…');
  const wt = new NetWorker(url, state.session.hashes, state.ws);
  try {
    await wt.ready;
  } catch (e) {
    setStatus(`cannot open the session: ${e.message} (a session that expired or was logged out, or a certificate the link does not name: ask for a new link)`, 'refused');
    return false;
  }
  state.wt = wt;
  wt.closed.then((c) => onClosed(wt, c.reason || 'closed'), (e) => onClosed(wt, e.message));
  const s = await wt.createBidirectionalStream();
  const control = { writer: s.writable.getWriter(), frames: new P.FrameStream(s.readable) };
  await control.writer.write(P.hello(SOFTWARE));
  const welcome = await control.frames.next();
  if (!welcome || welcome.type !== P.T.WELCOME) {
    setStatus(`ringcastd refused: ${welcome ? P.errorText(welcome) : 'no answer'}`, 'refused');
    return false;
  }
  state.control = control;
  setStatus(`connected (protocol ${welcome.version}, ${welcome.software})`, 'ok');
  await refreshDevices();
  if (state.console) state.console.resume();
  return true;
}

function onClosed(wt, reason) {
  if (state.wt !== wt) return;
  state.wt = null;
  state.control = null;
  state.closedReason = reason;
  if (!state.session) return;
  if (/NOT_AUTHORIZED/.test(reason)) {
    setStatus(`The session ended: ${reason}`, 'refused');
    return;
  }
  // A network change or a sleeping laptop: come back and resume where we were.
  setStatus(`connection lost (${reason}); reconnecting…`, 'refused');
  setTimeout(reconnect, 500);
}

async function reconnect() {
  if (state.wt || !state.session) return;
  if (!(await connect().catch(() => false)) && state.session && !state.wt) setTimeout(reconnect, 2000);
}

async function request(frame) {
  const c = state.control;
  if (!c) throw new Error('not connected');
  // One request at a time on the control stream.
  const prev = c.busy || Promise.resolve();
  let done;
  c.busy = new Promise((r) => { done = r; });
  await prev;
  try {
    await c.writer.write(frame);
    return await c.frames.next();
  } finally { done(); }
}

async function refreshDevices() {
  const reply = await request(P.listDevices(state.nextRequest++));
  if (!reply || reply.type !== P.T.DEVICES) {
    setStatus(`the device list was refused: ${reply ? P.errorText(reply) : 'no answer'}`, 'refused');
    return;
  }
  state.devices = reply.devices;
  renderDevices();
}

function fmtAudio(a) {
  if (!a) return '';
  const names = ['u8', 's8', 'u16', 's16', 'u32', 's32', 'f32'];
  return `${a.rate} Hz ${a.channels}ch ${names[a.sampleFormat] || a.sampleFormat}${a.bigEndian ? 'be' : ''}`;
}

function renderDevices() {
  const body = $('devices');
  body.replaceChildren();
  for (const d of state.devices) {
    const tr = document.createElement('tr');
    tr.dataset.device = `${d.vm}/${d.device}`;
    const cells = [`${d.vm}/${d.device}`, d.kind, d.state, fmtAudio(d.audio),
      d.kind === 'console' ? String(d.journalEnd) : String(d.periods), String(d.subscribers)];
    for (const c of cells) { const td = document.createElement('td'); td.textContent = c; tr.append(td); }
    const actions = document.createElement('td');
    const button = (label, fn) => {
      const b = document.createElement('button');
      b.textContent = label; b.dataset.action = label; b.onclick = fn; actions.append(b);
    };
    if (d.kind === 'console') {
      button('write', () => openConsole(d, 'write'));
      button('spy', () => openConsole(d, 'spy'));
      button('capture', () => capture(d));
    } else {
      button('play', () => playAudio(d));
    }
    tr.append(actions);
    body.append(tr);
  }
}

// ---- consoles ----

class ConsoleView {
  constructor(d, mode) {
    this.d = d; this.mode = mode; this.offset = null; this.stream = null; this.gaps = 0; this.received = 0;
    this.closed = false;
    $('console-title').textContent = `${d.vm}/${d.device} (${mode === 'spy' ? 'spy, read-only' : 'writer'})`;
    $('console-pane').hidden = false;
    if (!state.term) {
      state.term = new window.Terminal({ convertEol: false, scrollback: 10000, fontSize: 14 });
      state.term.open($('terminal'));
      state.term.onData((data) => state.console && state.console.type(data));
    }
    state.term.reset();
    this.term = state.term;
  }

  async attach() {
    if (!state.wt) return;
    const start = this.offset === null ? { tail: 64 << 10 } : { offset: this.offset };
    const s = await state.wt.createBidirectionalStream();
    const writer = s.writable.getWriter();
    const frames = new P.FrameStream(s.readable);
    await writer.write(P.attach(this.d.vm, this.d.device, this.mode, start, false));
    const first = await frames.next();
    if (!first || first.type !== P.T.ATTACHED) {
      this.refused = first ? P.errorText(first) : 'the attachment ended';
      setStatus(`${this.d.vm}/${this.d.device}: ${this.refused}`, 'refused');
      return;
    }
    if (this.offset !== null && first.offset > this.offset) {
      // History this client may not read (a spy) is not sent again: say what was missed.
      this.term.write(`\r\n[ringcast: ${first.offset - this.offset} bytes missing: not readable]\r\n`);
    }
    this.offset = first.offset;
    this.stream = { writer, frames };
    this.reader = new P.ConsoleReader(first.offset);
    setStatus(`${this.d.vm}/${this.d.device} attached at offset ${first.offset}`, 'ok');
    this.pump(this.stream);
  }

  async pump(stream) {
    try {
      for (;;) {
        const f = await stream.frames.next();
        if (!f) break;
        if (f.type === P.T.DATA || f.type === P.T.GAP) {
          const report = this.reader.onItem(f);
          if (f.type === P.T.DATA) {
            await this.show(f.bytes);
            this.received += f.bytes.length;
          } else {
            this.gaps += f.len;
            this.term.write(`\r\n[ringcast: ${f.len} bytes missing: ${f.reason}]\r\n`);
          }
          this.offset = this.reader.offset;
          if (report) await stream.writer.write(report);
        } else if (f.type === P.T.ERROR) {
          this.refused = P.errorText(f);
          setStatus(`${this.d.vm}/${this.d.device}: ${this.refused}`, 'refused');
          break;
        }
      }
    } catch (_) { /* the connection went away: resume() attaches again */ }
    if (this.stream === stream) this.stream = null;
  }

  // Hands bytes to the terminal in slices; beyond a backlog it waits until the terminal
  // has parsed them, so a flood is read (and credited to the server) only as fast as it
  // is shown, and no single write holds the main thread for long.
  async show(bytes) {
    for (let at = 0; at < bytes.length; at += SHOW_SLICE) {
      const slice = bytes.subarray(at, at + SHOW_SLICE);
      const n = slice.length;
      this.backlog = (this.backlog || 0) + n;
      this.term.write(slice, () => {
        this.backlog -= n;
        if (this.drained && this.backlog <= SHOW_LOW) { const d = this.drained; this.drained = null; d(); }
      });
      if (this.backlog > SHOW_HIGH) await new Promise((r) => { this.drained = r; });
    }
  }

  type(data) {
    if (this.mode !== 'write' || !this.stream) return;
    this.stream.writer.write(P.input(enc.encode(data))).catch(() => {});
  }

  resume() { if (!this.closed) this.attach().catch((e) => setStatus(e.message, 'refused')); }

  close() {
    this.closed = true;
    if (this.stream) { this.stream.writer.write(P.detach()).catch(() => {}); this.stream.writer.close().catch(() => {}); }
    this.stream = null;
  }
}

async function openConsole(d, mode) {
  if (state.console) state.console.close();
  state.console = new ConsoleView(d, mode);
  await state.console.attach();
  state.term.focus();
}

// The whole journal as a file, as `ringcast capture` writes it: bytes the server no longer
// has are holes of zeros (and counted).
async function capture(d) {
  await refreshDevices();
  const now = state.devices.find((x) => x.vm === d.vm && x.device === d.device) || d;
  const end = now.journalEnd;
  const s = await state.wt.createBidirectionalStream();
  const writer = s.writable.getWriter();
  const frames = new P.FrameStream(s.readable);
  await writer.write(P.attach(d.vm, d.device, 'read', { offset: 0 }, false));
  const first = await frames.next();
  if (!first || first.type !== P.T.ATTACHED) {
    setStatus(`capture of ${d.vm}/${d.device} refused: ${first ? P.errorText(first) : 'ended'}`, 'refused');
    return;
  }
  const parts = [];
  let missing = 0;
  if (first.offset > 0) { parts.push(new Uint8Array(first.offset)); missing += first.offset; }
  const reader = new P.ConsoleReader(first.offset);
  while (reader.offset < end) {
    const f = await frames.next();
    if (!f || f.type === P.T.ERROR) break;
    const report = reader.onItem(f);
    if (f.type === P.T.DATA) parts.push(f.bytes.slice(0, Math.max(0, end - f.offset)));
    else { const n = Math.min(f.len, end - f.offset); parts.push(new Uint8Array(n)); missing += n; }
    if (report) await writer.write(report);
  }
  await writer.write(P.detach()).catch(() => {});
  writer.close().catch(() => {});
  const blob = new Blob(parts, { type: 'application/octet-stream' });
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = `${d.vm}-${d.device}.log`;
  document.body.append(a);
  a.click();
  a.remove();
  state.lastCapture = { device: `${d.vm}/${d.device}`, bytes: blob.size, missing };
  setStatus(`captured ${blob.size} bytes of ${d.vm}/${d.device}${missing ? `, ${missing} missing (zeros)` : ''}`, 'ok');
}

// ---- audio ----

// The codecs to offer, preferred first: the page's choice, Opus only where this browser's
// WebCodecs AudioDecoder decodes it (an error if Opus was asked for and it cannot).
async function codecOffer(d) {
  const choice = $('codec').value;
  if (choice === 'pcm') return ['pcm'];
  const opus = await opusSupported(Math.min(2, (d.audio && d.audio.channels) || 2));
  if (opus) return ['opus', 'pcm'];
  if (choice === 'opus') throw new Error('this browser cannot decode Opus (no WebCodecs AudioDecoder for it): choose PCM or auto');
  return ['pcm'];
}

async function playAudio(d) {
  if (state.audio) state.audio.stop();
  let codecs;
  try { codecs = await codecOffer(d); } catch (e) { setStatus(`${d.vm}/${d.device}: ${e.message}`, 'refused'); return; }
  const jitter = Number($('jitter').value) || 60;
  // On the stream by default, as `ringcast play`: every period, in order. As datagrams when
  // asked: a lost period is skipped rather than waited for. The network worker keeps the
  // attachment and feeds the worklet; this thread learns the format.
  const a = await state.wt.play(P.attach(d.vm, d.device, 'read', { now: true }, $('datagrams').checked && !state.ws, codecs), jitter, state.stampOffsetMs);
  if (a.replaced) return;
  if (a.error) {
    setStatus(`${d.vm}/${d.device}: ${a.error}`, 'refused');
    return;
  }
  const enc = a.first.encoding;
  if (enc.codec === 'pcm' && codecs[0] === 'opus') setStatus(`${d.vm}/${d.device}: ringcastd sends PCM (it cannot encode this device as Opus)`, 'info');
  const view = new AudioView(d, a.format, jitter, enc, state.wt);
  state.audio = view;
  $('audio-pane').hidden = false;
  try {
    await view.start();
  } catch (e) {
    // No worklet (its module refused, no AudioContext): nothing would take the samples.
    view.stop();
    if (state.audio === view) state.audio = null;
    setStatus(`${d.vm}/${d.device}: cannot play here: ${e.message}`, 'refused');
  }
}

// What tests and scripts read: the page's state.
window.ringcast = {
  status: () => state.status,
  connected: () => !!state.control,
  devices: () => state.devices.map((d) => ({ ...d })),
  refresh: () => refreshDevices(),
  openConsole: (name, mode) => openConsole(state.devices.find((d) => `${d.vm}/${d.device}` === name), mode),
  console: () => state.console && { offset: state.console.offset, received: state.console.received, gaps: state.console.gaps, mode: state.console.mode, attached: !!state.console.stream, refused: state.console.refused || null },
  screen: () => {
    if (!state.term) return '';
    const b = state.term.buffer.active; const lines = [];
    for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
    return lines.join('\n');
  },
  capture: async (name) => { await capture(state.devices.find((d) => `${d.vm}/${d.device}` === name)); return state.lastCapture; },
  play: (name) => playAudio(state.devices.find((d) => `${d.vm}/${d.device}` === name)),
  audio: () => state.audio && { ...state.audio.counts, ...(state.audio.opusCounts || {}), codec: state.audio.encoding.codec, frequency: state.audio.frequency(), rate: state.audio.format.rate, ...state.audio.meter.summary() },
  audioText: () => $('audio-counters').textContent,
  // Each period's play-out delay (ms), in the order they were played, from the `from`th
  // on (of the last 6000 kept); audioDelayCount() counts them all.
  audioDelays: (from = 0) => (state.audio ? state.audio.meter.since(from) : []),
  audioDelayCount: () => (state.audio ? state.audio.meter.total : 0),
  // For the audio played next: the stamps' clock (CLOCK_MONOTONIC of ringcastd's host, ms)
  // minus performance.now(), so that the delay is measured from the stamp itself.
  setStampClock: (offsetMs) => { state.stampOffsetMs = offsetMs; },
  transport: () => (state.ws ? 'websocket' : 'webtransport'),
  // Main-thread tasks over 50 ms since the page loaded; resetLongTasks() starts again.
  longTasks: () => ({ ...longTasks }),
  resetLongTasks: () => Object.assign(longTasks, { count: 0, totalMs: 0, maxMs: 0 }),
  logout,
  sessionToken: () => state.session && state.session.token,
  // Whether `token` opens a WebTransport session now ('ok', or the browser's error).
  // `hashes`: the certificate hashes to offer instead of the session's (the link's).
  probe: async (token, hashes) => {
    hashes = hashes || (state.session ? state.session.hashes : []);
    const opts = hashes.length ? { serverCertificateHashes: hashes.map((h) => ({ algorithm: 'sha-256', value: hexBytes(h) })) } : {};
    const wt = new WebTransport(`https://${location.host}/session?token=${encodeURIComponent(token)}`, opts);
    try { await wt.ready; wt.close(); return 'ok'; } catch (e) { return `refused: ${e.message}`; }
  },
  loseDatagrams: (every) => state.wt && state.wt.loseDatagrams(every),
  dropConnection: () => state.wt && state.wt.close({ closeCode: 0, reason: 'test: network change' }),
};

$('logout').onclick = logout;
$('refresh').onclick = () => refreshDevices();
start();
