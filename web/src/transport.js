// The page's side of the network worker (net.js): the calls of a WebTransport the page
// uses (ready, closed, createBidirectionalStream, close), answered by the worker that owns
// the connection, and the audio attachment, whose periods go from the worker straight to
// the AudioWorklet. Over WebTransport or, with `ws`, the benchmark's one WebSocket: the
// same code either way.
export class NetWorker {
  // url: the WebTransport session's; hashes: the certificate hashes to pin (hex); ws: a
  // WebSocket URL to use instead (ws.js), or null.
  constructor(url, hashes, ws) {
    this.w = new Worker('net.js', { type: 'module' });
    this.waiting = new Map(); // stream id -> {resolve, reject}
    this.nextId = 0;
    this.attached = null;
    this.onCounts = null;
    let ready;
    this.ready = new Promise((resolve, reject) => { ready = { resolve, reject }; });
    this.closed = new Promise((resolve) => { this.closedNow = resolve; });
    this.w.onerror = (e) => {
      ready.reject(new Error(`the network worker failed: ${e.message}`));
      this.end(`the network worker failed: ${e.message}`);
    };
    this.w.onmessage = (e) => {
      const m = e.data;
      switch (m.op) {
        case 'ready': ready.resolve(); break;
        case 'failed': ready.reject(new Error(m.message)); this.end(m.message); break;
        case 'closed': this.end(m.reason); break;
        case 'stream': {
          const w = this.waiting.get(m.id);
          this.waiting.delete(m.id);
          if (!w) break;
          if (m.error) w.reject(new Error(m.error));
          else w.resolve({ readable: m.readable, writable: m.writable });
          break;
        }
        // Only the answer to the latest play: an earlier one was already told it was replaced.
        case 'attached': if (this.attached && this.attached.id === m.id) { const a = this.attached; this.attached = null; a.resolve(m); } break;
        case 'counts': if (this.onCounts) this.onCounts(m.counts); break;
        default: break;
      }
    };
    this.w.postMessage({ op: 'open', url, hashes, ws, timeOrigin: performance.timeOrigin });
  }

  end(reason) {
    for (const w of this.waiting.values()) w.reject(new Error(reason));
    this.waiting.clear();
    if (this.attached) { const a = this.attached; this.attached = null; a.resolve({ error: reason }); }
    this.closedNow({ reason });
    this.w.terminate();
  }

  createBidirectionalStream() {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.w.postMessage({ op: 'stream', id });
    });
  }

  close(info) { this.w.postMessage({ op: 'close', info: info || {} }); }

  // Attaches to an audio device with the Attach frame `attach`: resolves to the worker's
  // answer ({first, format} or {error}).
  // stampOffsetMs: the stamps' clock minus the page's, when known (delay.js).
  // A play still waiting for its answer when another starts resolves to {replaced: true}.
  play(attach, jitterMs, stampOffsetMs) {
    if (this.attached) this.attached.resolve({ error: 'replaced by another device', replaced: true });
    const id = (this.playId = (this.playId || 0) + 1);
    return new Promise((resolve) => {
      this.attached = { id, resolve };
      this.w.postMessage({ op: 'play', id, attach, jitterMs, stampOffsetMs });
    });
  }

  // The worklet's end of the channel the samples go through.
  audioPort(port) { this.w.postMessage({ op: 'port', port }, [port]); }
  stopAudio() { this.w.postMessage({ op: 'stop' }); }
  loseDatagrams(every) { this.w.postMessage({ op: 'lose', every }); }
}
