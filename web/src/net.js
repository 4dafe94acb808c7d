// The page's network worker: it owns the connection to ringcastd (WebTransport, or the
// benchmark's one WebSocket, ws.js), so that audio never waits on the page's main thread
// where xterm.js draws the console. Audio periods (datagrams, or frames on their stream)
// are read, counted and decoded here (feed.js) and posted straight to the AudioWorklet
// through a MessagePort. Every other stream (control, consoles, captures) is handed to the
// page as a pair of transferred streams (transport.js is the page's side).
//
// Messages from the page: {op: 'open', url, hashes, ws, timeOrigin}, {op: 'stream', id},
// {op: 'close', info}, {op: 'play', attach, jitterMs, stampOffsetMs}, {op: 'port', port},
// {op: 'stop'},
// {op: 'lose', every}. To the page: {op: 'ready'} or {op: 'failed', message},
// {op: 'closed', reason}, {op: 'stream', id, readable, writable} or {op: 'stream', id,
// error}, {op: 'attached', first, format} or {op: 'attached', error}, {op: 'counts', counts}.
import * as P from './proto.js';
import { AudioFeed } from './feed.js';
import { OPUS_RATE } from './opus.js';
import { WsTransport } from './ws.js';

let t = null; // the transport
let shift = 0; // the page's clock minus this worker's, ms
let audio = null; // {feed, writer, timer}
let lose = { every: 0, seen: 0 };

const pageMs = () => performance.now() + shift;

function hexBytes(h) {
  const b = new Uint8Array(h.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(h.substr(i * 2, 2), 16);
  return b;
}

async function open(m) {
  shift = performance.timeOrigin - m.timeOrigin;
  try {
    if (m.ws) {
      t = new WsTransport(m.ws);
    } else {
      const opts = m.hashes.length
        ? { serverCertificateHashes: m.hashes.map((h) => ({ algorithm: 'sha-256', value: hexBytes(h) })) }
        : {};
      t = new WebTransport(m.url, opts);
    }
    await t.ready;
  } catch (e) {
    postMessage({ op: 'failed', message: e.message });
    return;
  }
  t.closed.then((c) => c.reason || 'closed', (e) => e.message).then((reason) => {
    stopAudio();
    postMessage({ op: 'closed', reason });
  });
  // Audio periods come as datagrams: queue a second's worth rather than drop them while
  // this worker is busy.
  try { t.datagrams.incomingHighWaterMark = 1024; } catch (_) { /* older browsers */ }
  postMessage({ op: 'ready' });
  readDatagrams();
}

async function readDatagrams() {
  const reader = t.datagrams.readable.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      // A lossy path, when a test asks for one: every n-th audio datagram is dropped.
      if (lose.every && ++lose.seen % lose.every === 0) continue;
      try {
        if (audio) audio.feed.period(P.decodeDatagram(value), true);
      } catch (e) { console.warn('an audio datagram was dropped:', e.message); }
    }
  } catch (_) { /* the session ended */ }
}

// A stream for the page: the transport's own, piped through a pair of transform streams
// whose ends are transferred (any ReadableStream or WritableStream can be), so the page
// reads and writes them as it would the transport's.
async function stream(id) {
  try {
    const s = await t.createBidirectionalStream();
    const down = new TransformStream();
    const up = new TransformStream();
    s.readable.pipeTo(down.writable).catch(() => {});
    up.readable.pipeTo(s.writable).catch(() => {});
    postMessage({ op: 'stream', id, readable: down.readable, writable: up.writable }, [down.readable, up.writable]);
  } catch (e) {
    postMessage({ op: 'stream', id, error: e.message });
  }
}

// The audio attachment: its stream stays here; the page learns the format and encoding
// (to start its worklet) and the counters, ten times a second. Only the latest play
// counts: one that a later play replaced while it waited detaches and closes its stream.
let playing = 0; // the latest play's id
async function play(m) {
  stopAudio();
  playing = m.id;
  const answer = (a) => { if (playing === m.id) postMessage({ op: 'attached', id: m.id, ...a }); };
  let s;
  try { s = await t.createBidirectionalStream(); } catch (e) { answer({ error: e.message }); return; }
  const writer = s.writable.getWriter();
  const frames = new P.FrameStream(s.readable);
  const leave = () => { writer.write(P.detach()).catch(() => {}); writer.close().catch(() => {}); };
  try { await writer.write(m.attach); } catch (e) { answer({ error: `the audio stream failed: ${e.message}` }); return; }
  const first = await frames.next().catch(() => null);
  if (playing !== m.id) { leave(); return; }
  if (!first || first.type !== P.T.ATTACHED || !first.audio) {
    answer({ error: first && first.type === P.T.ERROR ? P.errorText(first) : 'no audio format yet' });
    return;
  }
  const enc = first.encoding;
  // Opus decodes to 48 kHz float samples with the encoding's channels.
  const format = enc.codec === 'opus' ? { rate: OPUS_RATE, channels: enc.channels, sampleFormat: 6, bigEndian: false } : first.audio;
  const feed = new AudioFeed(format, enc, m.jitterMs, pageMs, m.stampOffsetMs);
  const timer = setInterval(() => postMessage({ op: 'counts', counts: feed.allCounts() }), 100);
  audio = { feed, writer, timer };
  answer({ first, format });
  // Periods on the stream (the default, and those too large for a datagram).
  try {
    for (;;) {
      const f = await frames.next();
      if (!f || f.type !== P.T.AUDIO) break;
      feed.period(f);
    }
  } catch (_) { /* ended */ }
  // The server ended the attachment: its counters and decoder stop with it (a last count
  // first, so the page sees the final figures).
  if (audio && audio.feed === feed) {
    postMessage({ op: 'counts', counts: feed.allCounts() });
    stopAudio();
  }
}

function stopAudio() {
  if (!audio) return;
  const a = audio;
  audio = null;
  clearInterval(a.timer);
  a.writer.write(P.detach()).catch(() => {});
  a.feed.close();
}

onmessage = (e) => {
  const m = e.data;
  switch (m.op) {
    case 'open': open(m); break;
    case 'stream': stream(m.id); break;
    case 'close': if (t) t.close(m.info); break;
    case 'play': play(m); break;
    case 'port': if (audio) audio.feed.setPort(m.port); break;
    case 'stop': stopAudio(); break;
    case 'lose': lose = { every: m.every, seen: 0 }; break;
    default: console.warn('net worker: unknown message', m.op);
  }
};
