// ringcast's wire protocol in the browser: the frames of the `protocol` crate (codec), the
// console reader's rules (offsets, gaps, Consumed reports) and the audio datagram layout.
// Every frame: type u8, payload length u32 (big-endian), payload. Integers big-endian;
// names u16-length-prefixed UTF-8; bytes u32-length-prefixed.

export const MIN_VERSION = 1;
export const MAX_VERSION = 1;
export const T = {
  HELLO: 0x01, LIST: 0x02, GET_STATS: 0x03, ATTACH: 0x04, INPUT: 0x05, CONSUMED: 0x06,
  DETACH: 0x07, WELCOME: 0x41, DEVICES: 0x42, STATS: 0x43, ATTACHED: 0x44, DATA: 0x45,
  GAP: 0x46, AUDIO: 0x47, ERROR: 0x7f,
};
export const MODE = { read: 0, write: 1, spy: 2 };
// Audio codecs on the wire (an Attach offers some, the Attached names the one chosen).
export const CODEC = { pcm: 0, opus: 1 };
// Largest payload a frame may have (the server's limit).
export const MAX_FRAME_PAYLOAD = 1 << 20;
// A console reader reports what it read every so many bytes (the server's in-flight credit).
export const REPORT_EVERY = 16 << 10;
// The error table's names, as the server's close reasons and Error frames use them.
export const GAP_REASONS = ['lost', 'retention'];

const enc = new TextEncoder();
const dec = new TextDecoder();

class Writer {
  constructor() { this.parts = []; this.len = 0; }
  u8(v) { this.raw(Uint8Array.of(v)); }
  u16(v) { const b = new Uint8Array(2); new DataView(b.buffer).setUint16(0, v); this.raw(b); }
  u32(v) { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, v); this.raw(b); }
  u64(v) { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(v)); this.raw(b); }
  str(s) { const b = enc.encode(s); this.u16(b.length); this.raw(b); }
  bytes(b) { this.u32(b.length); this.raw(b); }
  raw(b) { this.parts.push(b); this.len += b.length; }
  frame(type) {
    const out = new Uint8Array(5 + this.len);
    out[0] = type;
    new DataView(out.buffer).setUint32(1, this.len);
    let at = 5;
    for (const p of this.parts) { out.set(p, at); at += p.length; }
    return out;
  }
}

export function hello(software) {
  const w = new Writer(); w.u16(MIN_VERSION); w.u16(MAX_VERSION); w.str(software);
  return w.frame(T.HELLO);
}
export function listDevices(request) { const w = new Writer(); w.u32(request); return w.frame(T.LIST); }
export function getStats(request) { const w = new Writer(); w.u32(request); return w.frame(T.GET_STATS); }
// start: {offset: n} | {tail: n} | {now: true}
// codecs: the audio codecs the page can decode, preferred first ('pcm', 'opus'); PCM only
// writes nothing, as the first version's Attach.
export function attach(vm, device, mode, start, datagrams, codecs = ['pcm']) {
  const w = new Writer(); w.str(vm); w.str(device); w.u8(MODE[mode]);
  if (start.offset !== undefined) { w.u8(0); w.u64(start.offset); }
  else if (start.tail !== undefined) { w.u8(1); w.u64(start.tail); }
  else { w.u8(2); w.u64(0); }
  w.u8(datagrams ? 1 : 0);
  if (codecs.some((c) => c !== 'pcm')) { w.u8(codecs.length); for (const c of codecs) w.u8(CODEC[c]); }
  return w.frame(T.ATTACH);
}
export function input(bytes) { const w = new Writer(); w.bytes(bytes); return w.frame(T.INPUT); }
export function consumed(offset) { const w = new Writer(); w.u64(offset); return w.frame(T.CONSUMED); }
export function detach() { return new Writer().frame(T.DETACH); }

class Reader {
  constructor(bytes) { this.b = bytes; this.v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength); this.at = 0; }
  need(n) { if (this.at + n > this.b.length) throw new Error('a frame ends in the middle of a field'); }
  u8() { this.need(1); return this.b[this.at++]; }
  u16() { this.need(2); const x = this.v.getUint16(this.at); this.at += 2; return x; }
  u32() { this.need(4); const x = this.v.getUint32(this.at); this.at += 4; return x; }
  // Offsets stay below 2^53 in any journal a browser will see; Number keeps the code simple.
  u64() { this.need(8); const x = this.v.getBigUint64(this.at); this.at += 8; return Number(x); }
  str() { const n = this.u16(); this.need(n); const s = dec.decode(this.b.subarray(this.at, this.at + n)); this.at += n; return s; }
  bytes() { const n = this.u32(); this.need(n); const s = this.b.subarray(this.at, this.at + n); this.at += n; return s; }
  audioFormat() {
    if (this.u8() === 0) return null;
    return { rate: this.u32(), channels: this.u16(), sampleFormat: this.u16(), bigEndian: this.u8() === 1 };
  }
  // The encoding an Attached names: PCM when the payload ends (every older server).
  encoding() {
    if (this.at === this.b.length) return { codec: 'pcm' };
    const c = this.u8();
    if (c === CODEC.pcm) return { codec: 'pcm' };
    if (c !== CODEC.opus) throw new Error(`ringcastd chose audio codec ${c}, which the page did not offer`);
    return { codec: 'opus', channels: this.u16(), frameSamples: this.u32(), bitrate: this.u32() };
  }
  entry() {
    return {
      vm: this.str(), device: this.str(), kind: ['console', 'audio'][this.u8()],
      state: ['attached', 'gone', 'poisoned'][this.u8()], audio: this.audioFormat(),
      bytes: this.u64(), periods: this.u64(), journalStart: this.u64(), journalEnd: this.u64(),
      subscribers: this.u32(),
    };
  }
}

export function decodePayload(type, p) {
  const r = new Reader(p);
  switch (type) {
    case T.WELCOME: return { type, version: r.u16(), software: r.str() };
    case T.DEVICES: {
      const request = r.u32(); const n = r.u32(); const devices = [];
      for (let i = 0; i < n; i++) devices.push(r.entry());
      return { type, request, devices };
    }
    case T.ATTACHED: return { type, kind: ['console', 'audio'][r.u8()], offset: r.u64(), audio: r.audioFormat(), encoding: r.encoding() };
    case T.DATA: return { type, offset: r.u64(), bytes: r.bytes() };
    case T.GAP: return { type, offset: r.u64(), len: r.u64(), reason: GAP_REASONS[r.u8()] || 'unknown' };
    case T.AUDIO: return { type, seq: r.u64(), timestampNs: r.u64(), frames: r.u32(), skippedBefore: r.u64(), pcm: r.bytes() };
    case T.ERROR: return { type, request: r.u32(), code: r.u16(), message: r.str() };
    case T.STATS: return { type, request: r.u32() };
    default: throw new Error(`unknown frame type ${type}`);
  }
}

// Whole frames from a WebTransport receive stream.
export class FrameStream {
  constructor(readable) { this.reader = readable.getReader(); this.buf = new Uint8Array(0); }
  async next() {
    for (;;) {
      if (this.buf.length >= 5) {
        const len = new DataView(this.buf.buffer, this.buf.byteOffset).getUint32(1);
        if (len > MAX_FRAME_PAYLOAD) throw new Error(`a frame of ${len} bytes is over the limit`);
        if (this.buf.length >= 5 + len) {
          const type = this.buf[0];
          const payload = this.buf.slice(5, 5 + len);
          this.buf = this.buf.subarray(5 + len);
          return decodePayload(type, payload);
        }
      }
      const { value, done } = await this.reader.read();
      if (done) {
        if (this.buf.length) throw new Error('the stream ended in the middle of a frame');
        return null;
      }
      const joined = new Uint8Array(this.buf.length + value.length);
      joined.set(this.buf); joined.set(value, this.buf.length);
      this.buf = joined;
    }
  }
  cancel() { this.reader.cancel().catch(() => {}); }
}

// The console reader's rules: items in offset order, each where the last ended; a
// Consumed report due every REPORT_EVERY bytes.
export class ConsoleReader {
  constructor(offset) { this.offset = offset; this.reported = offset; }
  onItem(f) {
    if (f.offset !== this.offset) throw new Error(`expected offset ${this.offset}, got ${f.offset}`);
    this.offset += f.type === T.DATA ? f.bytes.length : f.len;
    if (this.offset - this.reported >= REPORT_EVERY) { this.reported = this.offset; return consumed(this.offset); }
    return null;
  }
}

// An audio datagram: attach stream id (u64), then one Audio frame.
export function decodeDatagram(d) {
  if (d.length < 13 || d[8] !== T.AUDIO) throw new Error('not an audio datagram');
  return decodePayload(T.AUDIO, d.subarray(13));
}

export function errorText(f) { return `${f.message} (code ${f.code})`; }
