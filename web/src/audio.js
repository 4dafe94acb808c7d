// Audio on the page: PCM periods decoded to float samples and handed to the AudioWorklet
// (worklet.js), with the counters of `ringcast play` (periods, late, skipped) and the
// worklet's own (underruns, played, zero crossings, hence the frequency), and the play-out
// delay from the guest's stamp to the worklet's first sample of each period (delay.js).
import * as P from './proto.js';
import { OpusDecoder } from './opus.js';
import { DelayMeter, StampClock, frameToPageMs } from './delay.js';

const $ = (id) => document.getElementById(id);

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

export class AudioView {
  // format: what the worklet plays (for Opus: 48 kHz, the encoding's channels);
  // encoding: the Attached's ({codec: 'pcm'} or the Opus parameters); stampOffsetMs: the
  // stamps' clock minus the page's (ms), when known; else the first period maps one to
  // the other.
  constructor(d, format, jitterMs, encoding = { codec: 'pcm' }, stampOffsetMs = null) {
    this.d = d; this.format = format; this.jitterMs = jitterMs; this.encoding = encoding;
    if (encoding.codec === 'opus') this.opus = new OpusDecoder(encoding, (samples, stampNs, arrivedMs) => this.deliver(samples, stampNs, arrivedMs));
    this.meter = new DelayMeter(new StampClock(stampOffsetMs));
    this.nextId = 0; this.heard = [];
    this.counts = { periods: 0, skipped: 0, skippedByServer: 0, lost: 0, reordered: 0, datagrams: 0, late: 0, underruns: 0, played: 0, crossings: 0 };
    this.lastSeq = null; this.clock = null; this.pending = [];
  }

  async start(stream) {
    this.stream = stream;
    this.ctx = new AudioContext({ sampleRate: this.format.rate, latencyHint: 'interactive' });
    await this.ctx.audioWorklet.addModule('worklet.js');
    this.node = new AudioWorkletNode(this.ctx, 'ringcast-player', {
      numberOfInputs: 0, outputChannelCount: [Math.min(2, this.format.channels)],
      processorOptions: { channels: this.format.channels, jitterMs: this.jitterMs },
    });
    this.history = [];
    this.node.port.onmessage = (e) => {
      Object.assign(this.counts, { underruns: e.data.underruns, played: e.data.played, crossings: e.data.crossings, dropped: e.data.dropped, trimmed: e.data.trimmed, buffered: e.data.buffered });
      for (const id of e.data.unplayed) this.meter.forget(id);
      this.heard.push(...e.data.playedAt);
      // The output clock pair is there once the context plays; until then the frames wait.
      const ts = this.ctx.getOutputTimestamp();
      if (ts.contextTime > 0 && ts.performanceTime > 0) {
        for (const [id, frame] of this.heard.splice(0)) this.meter.played(id, frameToPageMs(frame, this.ctx.sampleRate, ts));
      }
      // Reports while nothing plays (before the jitter target fills, after the stream
      // ends) are left out, so the frequency stays that of the last second played.
      const last = this.history[this.history.length - 1];
      if (!last || e.data.played !== last.played) {
        this.history.push({ played: e.data.played, crossings: e.data.crossings });
        if (this.history.length > 11) this.history.shift();
      }
      this.render();
    };
    this.node.connect(this.ctx.destination);
    for (const m of this.pending.splice(0)) this.node.port.postMessage(m, [m.samples.buffer]);
    await this.ctx.resume();
    // Periods on the stream (when a datagram does not fit) go the same way.
    (async () => {
      try {
        for (;;) {
          const f = await stream.frames.next();
          if (!f || f.type !== P.T.AUDIO) break;
          this.period(f);
        }
      } catch (_) { /* ended */ }
    })();
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
    const now = performance.now();
    if (!this.clock) this.clock = { t0: now, ts0: p.timestampNs };
    const due = this.clock.t0 + this.jitterMs + (p.timestampNs - this.clock.ts0) / 1e6;
    if (now > due) this.counts.late++;
    if (this.opus) this.opus.packet(p, lost, now);
    else this.deliver(decodePcm(this.format, p.pcm), p.timestampNs, now);
  }

  // Samples for the worklet; with the stamp of the period they begin (and when it
  // arrived), their play-out delay is measured (silence the page plays has none).
  deliver(samples, stampNs = null, arrivedMs = 0) {
    const m = { id: this.nextId++, samples };
    if (stampNs !== null) this.meter.sent(m.id, stampNs, arrivedMs);
    // Periods that come before the worklet is loaded wait for it.
    if (!this.node) { this.pending.push(m); return; }
    this.node.port.postMessage(m, [m.samples.buffer]);
  }

  // Of the last second played (the worklet reports ten times a second).
  frequency() {
    const h = this.history || [];
    if (h.length < 2) return 0;
    const a = h[0]; const b = h[h.length - 1];
    const played = b.played - a.played;
    return played > 0 ? (b.crossings - a.crossings) / (played / this.format.rate) : 0;
  }

  render() {
    const c = this.counts;
    const d = this.meter.summary();
    const o = this.opus ? this.opus.counts : null;
    $('audio-counters').textContent = `${this.d.vm}/${this.d.device} (${this.codecText()}): periods ${c.periods}, late ${c.late}, ` +
      `underruns ${c.underruns}, skipped ${c.skipped} (by ringcastd ${c.skippedByServer}, lost ${c.lost}, out of order ${c.reordered}), played ${(c.played / this.format.rate).toFixed(1)} s, trimmed ${((c.trimmed || 0) / this.format.channels / this.format.rate * 1000).toFixed(0)} ms, ` +
      `frequency ${this.frequency().toFixed(1)} Hz` +
      (o ? `; concealed ${o.concealed}, silent ${o.dtx}, decode errors ${o.decodeErrors}` : '') +
      `; stamp to play-out p50 ${d.delayP50.toFixed(1)} ms, p99 ${d.delayP99.toFixed(1)} ms`;
  }

  codecText() {
    const e = this.encoding;
    return e.codec === 'opus' ? `opus ${Math.round(e.bitrate / 1000)} kbit/s ${e.frameSamples / 48} ms frames` : 'pcm';
  }

  stop() {
    if (this.stream) this.stream.writer.write(P.detach()).catch(() => {});
    if (this.ctx) this.ctx.close();
    if (this.opus) this.opus.close();
  }
}
