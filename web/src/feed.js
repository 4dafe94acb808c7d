// The audio feed, in the page's network worker (net.js): audio periods as they arrive (on
// their stream or as datagrams), counted as `ringcast play` counts them (periods, late,
// skipped: by ringcastd or lost on the way, out of order), decoded (PCM, or Opus through
// opus.js) and posted straight to the AudioWorklet (worklet.js) through a MessagePort.
// Nothing of this waits on the page's main thread, where the console is drawn.
import { OpusDecoder } from './opus.js';
import { StampClock } from './delay.js';

export function decodePcm(fmt, pcm) {
  const v = new DataView(pcm.buffer, pcm.byteOffset, pcm.byteLength);
  const le = !fmt.bigEndian;
  const width = [1, 1, 2, 2, 4, 4, 4][fmt.sampleFormat];
  const n = Math.floor(pcm.byteLength / width);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * width;
    switch (fmt.sampleFormat) {
      case 0: out[i] = (v.getUint8(o) - 128) / 128; break;
      case 1: out[i] = v.getInt8(o) / 128; break;
      case 2: out[i] = (v.getUint16(o, le) - 32768) / 32768; break;
      case 3: out[i] = v.getInt16(o, le) / 32768; break;
      case 4: out[i] = (v.getUint32(o, le) - 2147483648) / 2147483648; break;
      case 5: out[i] = v.getInt32(o, le) / 2147483648; break;
      default: out[i] = v.getFloat32(o, le);
    }
  }
  return out;
}

export class AudioFeed {
  // format: what the worklet plays (for Opus: 48 kHz, the encoding's channels); encoding:
  // the Attached's; jitterMs: the worklet's target (for the `late` count); pageMs(): now on
  // the page's clock (its performance.now(): a worker's clock has another origin);
  // stampOffsetMs: the stamps' clock minus the page's, when known, else the first period
  // to arrive maps one to the other (delay.js).
  constructor(format, encoding, jitterMs, pageMs, stampOffsetMs = null) {
    this.format = format; this.jitterMs = jitterMs; this.pageMs = pageMs;
    this.stampClock = new StampClock(stampOffsetMs);
    if (encoding.codec === 'opus') this.opus = new OpusDecoder(encoding, (samples, stampNs, arrivedMs) => this.deliver(samples, stampNs, arrivedMs));
    this.nextId = 0;
    this.counts = { periods: 0, skipped: 0, skippedByServer: 0, lost: 0, reordered: 0, datagrams: 0, late: 0 };
    this.lastSeq = null; this.clock = null;
    this.port = null; this.pending = [];
  }

  // Where the samples go: the worklet's end of a MessageChannel. What came before waits.
  setPort(port) {
    this.port = port;
    for (const m of this.pending.splice(0)) port.postMessage(m, [m.samples.buffer]);
  }

  period(p, datagram = false) {
    // Datagrams overtake periods sent on the stream (those too large for a datagram):
    // one that comes after a later one is dropped, as late (late is worse than lost).
    if (this.lastSeq !== null && p.seq <= this.lastSeq) { this.counts.reordered++; return; }
    this.counts.periods++;
    if (datagram) this.counts.datagrams++;
    // As `ringcast play` counts them: periods ringcastd dropped for this client
    // (skippedBefore) and periods that never arrived (gaps in seq: lost datagrams).
    this.counts.skipped += p.skippedBefore;
    this.counts.skippedByServer += p.skippedBefore;
    // Numbers in the gap are those of the units ringcastd left out (the last skippedBefore
    // of them) and of those lost on the way (the rest).
    const gap = this.lastSeq !== null && p.seq > this.lastSeq + 1 ? p.seq - this.lastSeq - 1 : 0;
    const lost = Math.max(0, gap - p.skippedBefore);
    this.counts.skipped += lost;
    this.counts.lost += lost;
    this.lastSeq = p.seq;
    const now = this.pageMs();
    if (!this.clock) this.clock = { t0: now, ts0: p.timestampNs };
    const due = this.clock.t0 + this.jitterMs + (p.timestampNs - this.clock.ts0) / 1e6;
    if (now > due) this.counts.late++;
    if (this.opus) this.opus.packet(p, lost, now);
    else this.deliver(decodePcm(this.format, p.pcm), p.timestampNs, now);
  }

  // Samples for the worklet, with the page time their period's stamp was due (its stamp
  // mapped in arrival order, delay.js), which the worklet hands back with the frame it
  // played them at: the page measures the play-out delay from those. Silence the page
  // plays has none.
  deliver(samples, stampNs = null, arrivedMs = 0) {
    const dueMs = stampNs === null ? null : this.stampClock.map(stampNs, arrivedMs);
    const m = { id: this.nextId++, samples, dueMs };
    if (!this.port) {
      // Until the worklet's port comes (the page starting its AudioContext), at most
      // about four seconds of 10 ms periods wait; the oldest go first.
      if (this.pending.length >= 400) this.pending.shift();
      this.pending.push(m);
      return;
    }
    this.port.postMessage(m, [m.samples.buffer]);
  }

  allCounts() { return { ...this.counts, ...(this.opus ? this.opus.counts : {}) }; }

  close() { if (this.opus) this.opus.close(); }
}
