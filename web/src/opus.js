// Opus on the page: ringcastd's Opus frames (one packet per frame, 48 kHz, see
// docs/audio.md) decoded by WebCodecs' AudioDecoder into float samples for the worklet.
//
// What the decoder cannot do, and what is done instead:
// - a lost frame (a gap in `seq` that ringcastd did not announce) is concealed with a
//   frame of silence, so what follows plays on time, and counted: AudioDecoder has no
//   packet-loss concealment call (an empty chunk is an error that closes the decoder);
// - in-band FEC is not used: AudioDecoder decodes a packet only as itself, with no way to
//   ask for the previous frame from the next packet's FEC data, as `ringcast play` does;
// - DTX: after a silent frame ringcastd sends nothing until sound comes back, so while
//   nothing comes the page plays a frame of silence every frame's duration (the buffer
//   does not run dry in a silence); frames ringcastd left out are counted, not played
//   again, when the next packet says how many there were.

export const OPUS_RATE = 48000;
// A packet this short is the encoder's answer for silence (DTX).
const DTX_PACKET = 2;
// Longest loss concealed with silence at once (longer is a stall: the buffer runs dry
// and starts again, an underrun).
const MAX_CONCEAL = 50;

// Whether this browser decodes Opus with `channels` channels.
export async function opusSupported(channels) {
  if (typeof AudioDecoder === 'undefined') return false;
  try {
    const s = await AudioDecoder.isConfigSupported({ codec: 'opus', sampleRate: OPUS_RATE, numberOfChannels: channels });
    return !!s.supported;
  } catch (_) { return false; }
}

export class OpusDecoder {
  // params: the Attached's encoding ({channels, frameSamples, bitrate});
  // deliver(samples, stampNs, arrivedMs): interleaved float samples, in the order of the
  // frames, with the stamp of the packet they were decoded from and when it arrived (no
  // stamp for silence).
  constructor(params, deliver) {
    this.channels = params.channels;
    this.frameSamples = params.frameSamples;
    this.frameUs = params.frameSamples * 1e6 / OPUS_RATE;
    this.deliver = deliver;
    this.counts = { concealed: 0, dtx: 0, decodeErrors: 0 };
    // What comes out next, in order: {silence: frames} or {decode: timestamp}.
    this.queue = [];
    this.silenceTimer = null;
    this.closed = false;
    this.open();
  }

  open() {
    this.queue = [];
    this.decoder = new AudioDecoder({
      output: (a) => this.output(a),
      error: (e) => {
        // The decoder is closed now: what it held is lost (counted), a new one takes over.
        this.counts.decodeErrors++;
        this.lastError = e.message;
        const pending = this.queue.filter((q) => q.decode !== undefined).length;
        this.queue = [];
        if (pending) this.silence(pending);
        if (!this.closed) this.open();
      },
    });
    this.decoder.configure({ codec: 'opus', sampleRate: OPUS_RATE, numberOfChannels: this.channels });
  }

  // One packet (an Audio frame's payload), arrived at `nowMs`; `lost` frames before it
  // never arrived.
  packet(p, lost, nowMs) {
    this.stopSilence();
    if (lost > 0) {
      this.counts.concealed += lost;
      this.silence(Math.min(lost, MAX_CONCEAL));
    }
    const silent = p.pcm.length <= DTX_PACKET;
    if (silent) this.counts.dtx++;
    if (p.pcm.length === 0) {
      this.silence(1);
    } else {
      const timestamp = Math.round(p.seq * this.frameUs);
      this.queue.push({ decode: timestamp, stampNs: p.timestampNs, arrivedMs: nowMs });
      this.decoder.decode(new EncodedAudioChunk({ type: 'key', timestamp, data: p.pcm }));
    }
    // A silence began: ringcastd sends nothing more until sound comes back. The frames of
    // silence due are counted from the clock, so a timer that fires late (a busy page)
    // catches up instead of letting the buffer run dry.
    if (silent) {
      const start = performance.now();
      let played = 0;
      this.silenceTimer = setInterval(() => {
        const due = Math.floor((performance.now() - start) * 1000 / this.frameUs);
        if (due > played) { this.silence(due - played); played = due; }
      }, this.frameUs / 1000);
    }
  }

  stopSilence() {
    if (this.silenceTimer !== null) { clearInterval(this.silenceTimer); this.silenceTimer = null; }
  }

  // `frames` frames of silence, after what the decoder still holds.
  silence(frames) {
    if (this.queue.length) { this.queue.push({ silence: frames }); return; }
    this.deliver(new Float32Array(frames * this.frameSamples * this.channels));
  }

  output(a) {
    while (this.queue.length && this.queue[0].silence !== undefined) {
      this.deliver(new Float32Array(this.queue.shift().silence * this.frameSamples * this.channels));
    }
    const frame = this.queue.shift();
    const n = a.numberOfFrames;
    const planes = [];
    for (let c = 0; c < Math.min(a.numberOfChannels, this.channels); c++) {
      const plane = new Float32Array(n);
      a.copyTo(plane, { planeIndex: c, format: 'f32-planar' });
      planes.push(plane);
    }
    a.close();
    // Interleaved, as the worklet takes them (a mono packet fills every channel).
    const out = new Float32Array(n * this.channels);
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < this.channels; c++) out[i * this.channels + c] = planes[Math.min(c, planes.length - 1)][i];
    }
    if (frame && frame.decode !== undefined) this.deliver(out, frame.stampNs, frame.arrivedMs);
    else this.deliver(out);
    while (this.queue.length && this.queue[0].silence !== undefined) {
      this.deliver(new Float32Array(this.queue.shift().silence * this.frameSamples * this.channels));
    }
  }

  close() {
    this.closed = true;
    this.stopSilence();
    if (this.decoder.state !== 'closed') this.decoder.close();
  }
}
