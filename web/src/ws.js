// The page over ONE WebSocket instead of WebTransport: the benchmark's baseline, the way
// web consoles (noVNC, Cockpit, SPICE's HTML5 client) reach their servers. It has the
// WebTransport calls the page uses (ready, closed, createBidirectionalStream, close), and
// carries every stream on the one WebSocket (one TCP connection) to a relay that opens
// them as QUIC streams to ringcastd. No datagrams: audio periods go on their stream.
//
// Each WebSocket message: stream id u32 (big-endian, chosen by the page, from 0), kind u8
// (0 data, 1 end of the page's side, 2 the page stopped reading), then the bytes.

const DATA = 0;
const FIN = 1;
const STOP = 2;

export class WsTransport {
  constructor(url) {
    this.ws = new WebSocket(url);
    this.ws.binaryType = 'arraybuffer';
    this.streams = new Map();
    this.nextId = 0;
    this.ready = new Promise((resolve, reject) => {
      this.ws.onopen = () => resolve();
      this.ws.onerror = () => reject(new Error(`the WebSocket to ${url} failed`));
    });
    this.closed = new Promise((resolve) => {
      this.ws.onclose = (e) => {
        for (const s of this.streams.values()) s.end();
        this.streams.clear();
        resolve({ reason: e.reason || `WebSocket closed (${e.code})` });
      };
    });
    this.ws.onmessage = (e) => {
      const b = new Uint8Array(e.data);
      if (b.length < 5) return;
      const id = new DataView(b.buffer).getUint32(0);
      const s = this.streams.get(id);
      if (!s) return;
      if (b[4] === DATA) s.push(b.slice(5));
      else { s.end(); this.streams.delete(id); }
    };
    // Nothing ever arrives as a datagram over TCP.
    this.datagrams = { readable: new ReadableStream() };
  }

  send(id, kind, bytes) {
    const m = new Uint8Array(5 + bytes.length);
    new DataView(m.buffer).setUint32(0, id);
    m[4] = kind;
    m.set(bytes, 5);
    this.ws.send(m);
  }

  async createBidirectionalStream() {
    await this.ready;
    const id = this.nextId++;
    let ctrl;
    const readable = new ReadableStream({
      start: (c) => { ctrl = c; },
      cancel: () => { this.streams.delete(id); this.send(id, STOP, new Uint8Array(0)); },
    });
    this.streams.set(id, {
      push: (bytes) => ctrl.enqueue(bytes),
      end: () => { try { ctrl.close(); } catch (_) { /* already closed */ } },
    });
    const writable = new WritableStream({
      write: (chunk) => this.send(id, DATA, chunk),
      close: () => this.send(id, FIN, new Uint8Array(0)),
    });
    return { readable, writable };
  }

  close(info) { this.ws.close(1000, (info && info.reason) || ''); }
}
