// Audio on the page's main thread: the AudioWorklet (worklet.js) and what is shown of it.
// The periods themselves never pass here: the network worker (net.js, feed.js) reads,
// decodes and posts them to the worklet through a MessagePort. Here: the counters of
// `ringcast play` (periods, late, skipped, from the worker) and the worklet's own
// (underruns, played, zero crossings, hence the frequency), and the play-out delay from the
// guest's stamp to the worklet's first sample of each period (delay.js).
import { DelayMeter, frameToPageMs } from './delay.js';

const $ = (id) => document.getElementById(id);

export class AudioView {
  // format: what the worklet plays (for Opus: 48 kHz, the encoding's channels);
  // encoding: the Attached's ({codec: 'pcm'} or the Opus parameters); net: the network
  // worker (transport.js) whose audio attachment this plays (the worker maps the stamps
  // to the page's clock: delay.js).
  constructor(d, format, jitterMs, encoding, net) {
    this.d = d; this.format = format; this.jitterMs = jitterMs; this.encoding = encoding; this.net = net;
    this.meter = new DelayMeter(null);
    this.heard = [];
    this.counts = { periods: 0, skipped: 0, skippedByServer: 0, lost: 0, reordered: 0, datagrams: 0, late: 0, underruns: 0, played: 0, crossings: 0 };
    this.opusCounts = encoding.codec === 'opus' ? { concealed: 0, dtx: 0, decodeErrors: 0 } : null;
    net.onCounts = (c) => {
      Object.assign(this.counts, c);
      if (this.opusCounts) for (const k of Object.keys(this.opusCounts)) this.opusCounts[k] = c[k];
    };
  }

  async start() {
    this.ctx = new AudioContext({ sampleRate: this.format.rate, latencyHint: 'interactive' });
    await this.ctx.audioWorklet.addModule('worklet.js');
    this.node = new AudioWorkletNode(this.ctx, 'ringcast-player', {
      numberOfInputs: 0, outputChannelCount: [Math.min(2, this.format.channels)],
      processorOptions: { channels: this.format.channels, jitterMs: this.jitterMs },
    });
    this.history = [];
    this.node.port.onmessage = (e) => {
      Object.assign(this.counts, { underruns: e.data.underruns, played: e.data.played, crossings: e.data.crossings, dropped: e.data.dropped, trimmed: e.data.trimmed, buffered: e.data.buffered });
      this.heard.push(...e.data.playedAt);
      // The output clock pair is there once the context plays; until then the frames wait.
      const ts = this.ctx.getOutputTimestamp();
      if (ts.contextTime > 0 && ts.performanceTime > 0) {
        for (const [id, frame, dueMs] of this.heard.splice(0)) {
          if (dueMs === null) continue;
          this.meter.dueAt(id, dueMs);
          this.meter.played(id, frameToPageMs(frame, this.ctx.sampleRate, ts));
        }
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
    // The samples' way from the worker to the worklet, past this thread.
    const ch = new MessageChannel();
    this.node.port.postMessage({ feed: ch.port1 }, [ch.port1]);
    this.net.audioPort(ch.port2);
    await this.ctx.resume();
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
    const o = this.opusCounts;
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
    this.net.stopAudio();
    this.net.onCounts = null;
    if (this.ctx) this.ctx.close();
  }
}
