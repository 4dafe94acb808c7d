// The play-out delay of audio periods, as the page measures it: from the period's guest
// stamp to the time the AudioWorklet plays its first sample, both on the page's clock
// (performance.now(), milliseconds).
//
// * The stamp (the producer's CLOCK_MONOTONIC on ringcastd's host, ns) is mapped to the
//   page's clock through the first period, as `ringcast play`'s jitter buffer maps it:
//   stamp ts is due at arrival(first) + (ts - ts(first)). The delay is then what the
//   period waited beyond the first period's transit. When the page is given the offset
//   between the stamps' clock and its own (a bench on the same host, which reads both
//   clocks), the mapping is that offset and the delay is absolute, from stamp to sound.
// * The worklet reports the context frame at which a period's first sample went out; the
//   AudioContext's clock is mapped to the page's with ctx.getOutputTimestamp() (a pair of
//   readings of the two clocks at the output, so the output latency is included).
// * Percentiles as `ringcast play` takes them: the sorted values' element at
//   round((n - 1) * q).

// The stamp clock: `offsetMs` (stamp ms - page ms) if given, else learnt from the first period.
export class StampClock {
  constructor(offsetMs = null) { this.offsetMs = offsetMs; }
  // The page time (ms) at which the period stamped `stampNs` arrived or would have
  // arrived; `nowMs` is the arrival time of this period (used for the first one).
  map(stampNs, nowMs) {
    if (this.offsetMs === null) this.offsetMs = stampNs / 1e6 - nowMs;
    return stampNs / 1e6 - this.offsetMs;
  }
}

// The page time (ms) at which context frame `frame` is heard, from one getOutputTimestamp()
// reading ({contextTime s, performanceTime ms}) and the context's sample rate.
export function frameToPageMs(frame, rate, ts) {
  return ts.performanceTime + (frame / rate - ts.contextTime) * 1000;
}

export function percentile(values, q) {
  if (!values.length) return 0;
  const s = Float64Array.from(values).sort();
  return s[Math.min(s.length - 1, Math.round((s.length - 1) * q))];
}

// Delays of the periods played, in ms: ids of periods sent to the worklet and their mapped
// stamps, matched with the frames the worklet reports. The last KEEP delays are kept (an
// hour of play would otherwise grow the list, and each summary's sort, without end); the
// percentiles are of those, taken at most once a second.
const KEEP = 6000;
export class DelayMeter {
  constructor(clock) {
    this.clock = clock; this.due = new Map();
    this.delays = []; // the last KEEP delays at most
    this.total = 0; // delays measured since the start
    this.cached = null; this.cachedAt = -Infinity;
  }
  // A period sent to the worklet under `id`, stamped `stampNs`, arrived at `nowMs`.
  sent(id, stampNs, nowMs) { this.dueAt(id, this.clock.map(stampNs, nowMs)); }
  // A period whose stamp was due at page time `dueMs` (mapped where it arrived).
  dueAt(id, dueMs) { this.due.set(id, dueMs); }
  // The worklet played period `id`'s first sample at page time `playedMs`.
  played(id, playedMs) {
    const due = this.due.get(id);
    if (due === undefined) return;
    this.due.delete(id);
    this.delays.push(playedMs - due);
    this.total++;
    if (this.delays.length > 2 * KEEP) this.delays.splice(0, this.delays.length - KEEP);
  }
  // Periods whose first sample the worklet dropped (over its maximum) are never played.
  forget(id) { this.due.delete(id); }
  // The delays measured since the `n`th (counted from the start), of those still kept.
  since(n) { return this.delays.slice(Math.max(0, n - (this.total - this.delays.length))); }
  summary(nowMs = performance.now()) {
    if (this.cached === null || nowMs - this.cachedAt >= 1000 || this.total < 100) {
      const recent = this.delays.slice(-KEEP);
      this.cached = { delayP50: percentile(recent, 0.5), delayP99: percentile(recent, 0.99) };
      this.cachedAt = nowMs;
    }
    return { delays: this.total, ...this.cached };
  }
}
