// Audio play-out with a fixed jitter target (`ringcast play` adapts its own): playback starts once the
// jitter target is buffered, an underrun (the buffer runs dry while playing) is counted
// and buffering starts again, and more than 8 targets buffered drops the oldest samples.
// A buffer that stays above twice the target for a whole second of play (a burst that came
// at once, after a stall of the page) is trimmed back to the target, oldest samples first
// (counted as `trimmed`), so one stall does not leave every later sample that much late.
// It also counts positive-going zero crossings of the first channel, from which the page
// tells the frequency of what is played, and reports the context frame at which each
// period's first sample was played, with the page time its stamp was due, from which the
// page measures the play-out delay (delay.js).
// The samples come from the page's network worker (feed.js) through the MessagePort the
// page hands over first ({feed: port}): they never wait on the page's main thread.
class RingcastPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions;
    this.channels = o.channels;
    this.target = Math.max(1, Math.floor(o.jitterMs / 1000 * sampleRate)) * this.channels;
    this.max = this.target * 8;
    this.queue = []; // sample arrays
    this.meta = []; // of each queue entry: [id, dueMs]
    this.playedAt = []; // [id, frame, dueMs] since the last report
    this.head = 0; // read position in queue[0]
    this.buffered = 0;
    this.playing = false;
    this.counts = { underruns: 0, dropped: 0, trimmed: 0, played: 0, crossings: 0, buffered: 0, playing: false };
    // The least buffered in this second of play, and the frames played in it.
    this.lowest = Infinity;
    this.windowFrames = 0;
    this.last = 0;
    this.sinceReport = 0;
    const take = (e) => {
      if (e.data.feed) { e.data.feed.onmessage = take; return; }
      this.queue.push(e.data.samples);
      this.meta.push([e.data.id, e.data.dueMs]);
      this.buffered += e.data.samples.length;
      if (this.buffered > this.max) this.counts.dropped += this.dropOldest(this.buffered - this.max);
    };
    this.port.onmessage = take;
  }

  // Drops `n` samples (whole frames: n is a multiple of the channels) from the front.
  dropOldest(n) {
    let left = n;
    while (left > 0 && this.queue.length) {
      const drop = Math.min(this.queue[0].length - this.head, left);
      this.head += drop; this.buffered -= drop; left -= drop;
      if (this.head >= this.queue[0].length) this.next();
    }
    return n - left;
  }

  next() {
    this.queue.shift(); this.meta.shift(); this.head = 0;
  }

  process(_inputs, outputs) {
    const out = outputs[0];
    const frames = out[0].length;
    if (!this.playing && this.buffered >= this.target) this.playing = true;
    for (let i = 0; i < frames; i++) {
      for (let c = 0; c < out.length; c++) {
        let s = 0;
        if (this.playing && this.buffered > 0 && c < this.channels) {
          if (this.head === 0) { const [id, dueMs] = this.meta[0]; this.playedAt.push([id, currentFrame + i, dueMs]); }
          s = this.queue[0][this.head++];
          this.buffered--;
          if (this.head >= this.queue[0].length) this.next();
        }
        out[c][i] = s;
        if (c === 0 && this.playing) {
          if (this.last <= 0 && s > 0) this.counts.crossings++;
          this.last = s;
        }
      }
      // Channels the output does not have are skipped in the queue.
      for (let c = out.length; c < this.channels && this.playing && this.buffered > 0; c++) {
        this.head++; this.buffered--;
        if (this.head >= this.queue[0].length) this.next();
      }
      if (this.playing) this.counts.played++;
      if (this.playing && this.buffered === 0) { this.playing = false; this.counts.underruns++; }
    }
    if (this.playing) {
      this.lowest = Math.min(this.lowest, this.buffered);
      this.windowFrames += frames;
      if (this.windowFrames >= sampleRate) {
        if (this.lowest > 2 * this.target) this.counts.trimmed += this.dropOldest(this.lowest - this.target);
        this.lowest = Infinity; this.windowFrames = 0;
      }
    } else {
      this.lowest = Infinity; this.windowFrames = 0;
    }
    this.sinceReport += frames;
    if (this.sinceReport >= sampleRate / 10) {
      this.sinceReport = 0;
      this.counts.buffered = this.buffered;
      this.counts.playing = this.playing;
      this.port.postMessage({ ...this.counts, playedAt: this.playedAt });
      this.playedAt = [];
    }
    return true;
  }
}
registerProcessor('ringcast-player', RingcastPlayer);
