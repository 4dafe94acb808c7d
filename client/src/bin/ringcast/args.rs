//! The command line: clap's types for `ringcast` and its subcommands, whose doc comments
//! are the `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, Subcommand};

use crate::duration::parse_duration;

/// ringcast: the consoles and sound of remote QEMU VMs over one secure QUIC connection.
///
/// The server is ringcastd (default 127.0.0.1:7878, or $RINGCAST_SERVER). On first contact
/// its identity is pinned in ~/.config/ringcast/known_hosts, like SSH; a changed identity
/// is refused. With --ca the server must instead present a certificate signed by that CA.
/// The client proves who it is with its own certificate, created on first use in
/// ~/.config/ringcast (`ringcast identity show` prints its fingerprint). The server grants
/// each certificate rights; on the server's own host, root and ringcastd's user are
/// authorized automatically through ringcastd's control socket; everyone else sends the
/// fingerprint to the server's admin, who runs `ringcastd authorize FINGERPRINT`.
///
/// Devices are named VM/DEVICE, as `ringcast list` shows them.
///
/// RUST_LOG=info shows more on stderr. Documentation: docs/ in the source tree.
///
/// Exit status:
///
///   0  done
///   1  error (said on stderr); also a QMP error reply to `ringcast qmp`
///   2  bad usage
///   3  `capture` finished with gaps: bytes the server no longer had are holes of zeros
///   4  --wait/--wait-timeout: the device did not appear in time
///
/// Examples:
///
///   ringcast list
///   ringcast console vm1/serial0
///   ringcast --server vmhost:7878 capture vm1/serial0 -o boot.log --follow
///   ringcast play vm1/sound0 --jitter-ms 60
#[derive(Debug, Parser)]
#[command(name = "ringcast", version, verbatim_doc_comment)]
pub struct Cli {
    /// ringcastd to connect to (HOST or HOST:PORT)
    #[arg(
        long,
        short,
        global = true,
        env = "RINGCAST_SERVER",
        default_value = "127.0.0.1:7878"
    )]
    pub server: String,

    /// Trust servers whose certificate this PEM CA bundle signed (instead of known_hosts)
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,

    /// Known-hosts file for trust on first use [default: ~/.config/ringcast/known_hosts]
    #[arg(long, global = true)]
    pub known_hosts: Option<PathBuf>,

    /// Directory of the client identity (client.crt, client.key) [default: ~/.config/ringcast]
    #[arg(long, global = true)]
    pub identity_dir: Option<PathBuf>,

    /// Control socket of a ringcastd on this host, asked to authorize this client on first
    /// use [default: $XDG_RUNTIME_DIR/ringcast/ringcastd.ctl or /run/ringcast/ringcastd.ctl]
    #[arg(long, global = true, env = "RINGCAST_CONTROL_SOCKET")]
    pub control_socket: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the devices you may use: kind, state, audio format, bytes, subscribers.
    ///
    /// Columns: DEVICE (VM/DEVICE), KIND (console or audio), STATE (attached: its QEMU is
    /// connected; gone: it left, the journal stays; poisoned: its ring broke the rules),
    /// FORMAT (audio: rate, channels, sample format), BYTES/PERIODS (console: the journal's
    /// end offset; audio: periods received), SUBS (clients attached now). Columns are as
    /// wide as their longest entry.
    ///
    /// --json prints a JSON array instead, one object per device. Fields (stable; later
    /// versions may add fields, never rename them):
    ///   vm, device       the names (strings)
    ///   kind             "console" or "audio"
    ///   state            "attached", "gone" or "poisoned"
    ///   audio            null, or {rate, channels, sample_format, big_endian} with
    ///                    sample_format one of "u8" "s8" "u16" "s16" "u32" "s32" "f32"
    ///   bytes            bytes received from QEMU
    ///   periods          audio periods received
    ///   journal_start    the oldest console offset still available
    ///   journal_end      the console's end offset
    ///   subscribers      clients attached now
    ///
    /// Examples:
    ///   ringcast list
    ///   ringcast --server vmhost:7878 list
    ///   ringcast list --json | jq -r '.[] | select(.state == "attached") | .vm + "/" + .device'
    #[command(verbatim_doc_comment)]
    List {
        /// Print JSON (an array of objects; fields above) instead of the table
        #[arg(long)]
        json: bool,
    },

    /// Every counter of every device: the table `ringcastd stats` prints on the server.
    ///
    /// Columns, with the --json field in brackets:
    ///   DEVICE, KIND, STATE  as in `ringcast list` [vm, device, kind, state]
    ///   BYTES          bytes received from QEMU; audio: and periods [bytes, periods]
    ///   JOURNAL        console offsets still available [journal_start, journal_end]
    ///   LOST:FLIGHT    console bytes the plugin's flight recorder dropped while no
    ///                  ringcastd was attached [dropped_flight_recorder]
    ///   LOST:AUDIO     audio periods the plugin dropped [dropped_audio_overflow]
    ///   SUB-GAPS       console bytes clients asked for beyond the retention
    ///                  [subscriber_gap_bytes]; audio: periods dropped from slow clients'
    ///                  queues [subscriber_dropped_periods]
    ///   SPOOL-ERR      failed writes to the server's disk spool [spool_errors]
    ///   LOST:NO-SPOOL  console bytes that left the server's RAM while its disk spool
    ///                  failed: lost for good [dropped_no_spool]
    ///   RING FILL      bytes in the shared ring now / its size [ring_fill, ring_capacity]
    ///   INPUT          console input bytes handed to the guest [input_bytes]
    ///   REGS           times QEMU registered the device [registrations]
    ///   SUBS           clients attached now [subscribers]
    ///   POISONED       why the ring was detached, or no [poisoned: null or a string]
    /// A "-" in the table marks a counter that does not apply to the device's kind; the
    /// JSON always has every field (0 there), and the audio format as in `list --json`
    /// [audio]. Field names are stable; later versions may add fields.
    ///
    /// Examples:
    ///   ringcast stats
    ///   ringcast stats --json | jq '.[] | select(.dropped_no_spool > 0) | .vm'
    #[command(verbatim_doc_comment)]
    Stats {
        /// Print JSON (an array of objects; fields above) instead of the table
        #[arg(long)]
        json: bool,
    },

    /// Interactive console in a raw terminal. Leave with Ctrl-] (the terminal is restored).
    ///
    /// Takes the console's write lock; only one client may type at a time. --spy watches
    /// read-only without the lock. --resume continues from the last offset this user saw
    /// (saved in ~/.local/state/ringcast/offsets/), so nothing is missed in between.
    ///
    /// --wait starts before the VM does: it waits until the device appears (checking
    /// every 250 ms), then attaches.
    ///
    /// Examples:
    ///   ringcast console vm1/serial0
    ///   ringcast console vm1/serial0 --spy --tail 0
    ///   ringcast console vm1/hvc0 --resume
    ///   ringcast console vm1/serial0 --wait --wait-timeout 2m
    #[command(verbatim_doc_comment)]
    Console {
        /// VM/DEVICE
        device: String,
        #[command(flatten)]
        wait: WaitArgs,
        /// Watch read-only (never takes the write lock)
        #[arg(long)]
        spy: bool,
        /// Start at the offset saved when this user last left this console
        #[arg(long)]
        resume: bool,
        /// Show this many bytes of history first
        #[arg(long, default_value_t = 2048)]
        tail: u64,
    },

    /// Capture a console's output to a file, byte for byte, from the oldest retained byte.
    ///
    /// The file's byte N is the console's byte N: bytes the server no longer has (gaps)
    /// become holes of zeros, reported on stderr and counted. Without --follow, stops at the
    /// end of what the server had when capture started. Shows progress and rate on stderr
    /// when it is a terminal.
    ///
    /// For a CI guest, start the capture before the VM: --wait waits until the device
    /// appears (checking every 250 ms), and with --follow nothing the guest writes from
    /// its first byte on is missed.
    ///
    /// Exit status 3 when there were gaps (0 when the capture is complete), 4 when the
    /// device did not appear within --wait-timeout.
    ///
    /// Examples:
    ///   ringcast capture vm1/serial0 -o serial0.log
    ///   ringcast capture vm1/serial0 -o serial0.log --resume --follow
    ///   ringcast capture ci-guest/serial0 -o boot.log --follow --wait --wait-timeout 5m
    #[command(verbatim_doc_comment)]
    Capture {
        /// VM/DEVICE
        device: String,
        #[command(flatten)]
        wait: WaitArgs,
        /// Output file
        #[arg(short, long)]
        output: PathBuf,
        /// Keep capturing new output until interrupted
        #[arg(long)]
        follow: bool,
        /// Continue an earlier capture: start at the file's length, append
        #[arg(long)]
        resume: bool,
    },

    /// Play an audio device live: the default sound output, a WAV file, or raw PCM.
    ///
    /// The codec: --codec pcm is the device's own samples, lossless (1.4 Mbit/s for 44.1
    /// kHz stereo s16); --codec opus is Opus at 48 kHz (64 kbit/s by default, set by
    /// ringcastd's --opus-bitrate) with in-band FEC; --codec auto (the default) takes PCM
    /// on a loopback path wide enough for it, Opus anywhere else. With Opus, --wav and
    /// --raw write s16 little-endian at 48000 Hz. A file has no clock to miss: --wav and
    /// --raw get every unit as it comes (a few units behind, for reordering), lost ones
    /// concealed or rebuilt from FEC; the sound card plays on its clock, as below.
    ///
    /// An adaptive jitter buffer absorbs network delay variation: its delay grows when
    /// units arrive late (conceals one unit, then plays the late one) and shrinks again
    /// in silence when the path is calm (drops a silent unit), never cutting sound.
    /// --jitter-ms is its floor (the least time the fastest units wait); with
    /// --fixed-jitter it is the delay, and late units are concealed and skipped. A lost
    /// Opus frame is rebuilt from the next frame's FEC data when that one is there, else
    /// concealed by libopus. At the end `play` prints units played, recovered by FEC,
    /// concealed, late, underruns, silent (left out by the server), and the time units
    /// waited in the buffer (p50/p99), plus the delay from QEMU on the same host.
    ///
    /// The sound card needs a build with the `sound-card` cargo feature (the default; it
    /// links ALSA). A build without it plays only to --wav or --raw.
    ///
    /// Examples:
    ///   ringcast play vm1/sound0
    ///   ringcast play vm1/sound0 --wav tone.wav --seconds 5
    ///   ringcast play vm1/sound0 --raw | aplay -f S16_LE -r 48000 -c 2
    #[command(verbatim_doc_comment)]
    Play {
        /// VM/DEVICE
        device: String,
        /// Write a WAV file instead of playing
        #[arg(long, conflicts_with = "raw")]
        wav: Option<PathBuf>,
        /// Write raw interleaved PCM to stdout instead of playing (stdout must be a file or
        /// a pipe, not a terminal)
        #[arg(long)]
        raw: bool,
        /// The jitter buffer's floor in milliseconds: the least time any unit waits before
        /// it plays (the buffer adds what the path's jitter needs)
        #[arg(long, default_value_t = 20)]
        jitter_ms: u64,
        /// Keep the jitter buffer's delay at exactly --jitter-ms (no adaptation)
        #[arg(long)]
        fixed_jitter: bool,
        /// pcm (lossless), opus, or auto (PCM on a wide loopback path, else Opus)
        #[arg(long, default_value = "auto")]
        codec: protocol::rules::audio::CodecChoice,
        /// Stop after this many seconds of audio (default: until interrupted)
        #[arg(long)]
        seconds: Option<f64>,
        /// Receive periods as QUIC datagrams (late is worse than lost)
        #[arg(long)]
        datagrams: bool,
    },

    /// Send sound to an audio device's input: what the guest's sound card records.
    ///
    /// The sound goes to the guest's capture side (AC97's line-in and microphone, HDA's
    /// line-in with hda-duplex) in the format the guest records in (QEMU's audiodev input
    /// settings, 44100 Hz stereo s16 by default), in real time, sent as PCM or Opus
    /// (--codec, as for play; ringcastd decodes Opus, rebuilding lost packets). The source is
    /// the client's sound input (ALSA's default input, or --device NAME), a generated
    /// tone (--tone HZ), a WAV file (--wav FILE: any channel count, integer or float
    /// samples, at the guest's rate), or raw s16 little-endian PCM at the guest's
    /// rate and channels (--raw FILE, - for stdin). `mic` ends at the end of the file,
    /// after --seconds, or when the VM goes away.
    ///
    /// Needs the audio and write rights on the device. One client sends to a device at a
    /// time (WRITER_BUSY otherwise); listeners (`play`) are not affected. What the guest
    /// does not take in time is dropped by ringcastd, never queued, so the guest hears
    /// the client with a constant delay.
    ///
    /// Examples:
    ///   ringcast mic vm1/sound0                     # the default sound input
    ///   ringcast mic vm1/sound0 --tone 1000 --seconds 5
    ///   ringcast mic vm1/sound0 --wav speech.wav --codec opus
    ///   sox speech.flac -t raw -r 44100 -c 2 -e signed -b 16 - | ringcast mic vm1/sound0 --raw -
    #[command(verbatim_doc_comment)]
    Mic {
        /// VM/DEVICE
        device: String,
        /// Send a sine tone of this frequency (Hz), at half of full scale
        #[arg(long, conflicts_with_all = ["wav", "raw"])]
        tone: Option<f64>,
        /// Send this WAV file
        #[arg(long, conflicts_with = "raw")]
        wav: Option<PathBuf>,
        /// Send raw s16 little-endian PCM at the guest's rate and channels from this file
        /// (- for stdin)
        #[arg(long)]
        raw: Option<PathBuf>,
        /// Stop after this many seconds of audio (default: the whole file; a tone goes on
        /// until interrupted)
        #[arg(long)]
        seconds: Option<f64>,
        /// What to send: opus (10 ms frames with FEC, 64 kbit/s; PCM if the server
        /// cannot take it), pcm (lossless), or auto (PCM on a wide loopback path, Opus
        /// anywhere else)
        #[arg(long, default_value = "auto")]
        codec: protocol::rules::audio::CodecChoice,
        /// Record from this ALSA input (default: ALSA's "default") when there is no --tone,
        /// --wav or --raw
        #[arg(long = "device", value_name = "NAME", conflicts_with_all = ["tone", "wav", "raw"])]
        input: Option<String>,
    },

    /// Send one QMP command to a QEMU monitor on a console device and print the reply.
    ///
    /// Performs the QMP capabilities handshake first. The monitor must be in control mode
    /// (-mon chardev=ID,mode=control) on a ringcast plugin chardev. Needs the write right
    /// and the console's write lock. The reply is the one whose "id" is the command's
    /// (ringcast adds an id when the command has none, and leaves it out of the output);
    /// replies to other commands and events are skipped. Prints the reply as one JSON line;
    /// exit status 1 when it is an error reply.
    ///
    /// Example:
    ///   ringcast qmp vm1/qmp0 '{"execute":"query-status"}'
    #[command(verbatim_doc_comment)]
    Qmp {
        /// VM/DEVICE of the monitor's chardev
        device: String,
        /// The command as JSON
        command: String,
        /// Give up after this many seconds
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },

    /// Manage this client's certificate (mTLS identity).
    ///
    /// The identity is client.crt and client.key in --identity-dir (default
    /// $XDG_CONFIG_HOME/ringcast, else ~/.config/ringcast). The client presents it to every
    /// server; servers beyond loopback want its fingerprint in their authorized_clients.
    ///
    /// Examples:
    ///   ringcast identity new
    ///   ringcast identity show
    #[command(subcommand, verbatim_doc_comment)]
    Identity(IdentityCommand),

    /// Mint a link that opens the browser client (ringcastd --web) as IDENTITY.
    ///
    /// Run it on ringcastd's host as root or as ringcastd's user: it asks ringcastd's
    /// control socket. The link can be used once, within --expires; the browser that opens
    /// it gets a session (--session long) with IDENTITY's rights, as the authorization file
    /// and the local grants give them (removing the rule removes them). Send the link
    /// privately, like a password: whoever opens it first gets the session.
    ///
    /// IDENTITY is a fingerprint (SHA256:..., what `ringcast identity show` prints) or
    /// cn:NAME [default: this client's own identity]. The link's host is --host [default:
    /// the host of --server]. Without an admin certificate (ringcastd --web-cert) the link
    /// also carries the hash of ringcastd's short-lived certificate, which WebTransport
    /// accepts; the page itself then shows the browser's certificate warning (docs/web.md).
    ///
    /// Examples:
    ///   ringcast web-link
    ///   ringcast web-link SHA256:3f1c... --host vmhost.example.org --expires 5m
    #[command(verbatim_doc_comment)]
    WebLink {
        /// Whose rights the browser gets [default: this client's identity]
        identity: Option<String>,
        /// How long the link may wait to be opened (e.g. 90s, 10m)
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        expires: Duration,
        /// How long the browser's session lasts once opened (e.g. 1h, 8h)
        #[arg(long, default_value = "8h", value_parser = parse_duration)]
        session: Duration,
        /// Host name the browser reaches ringcastd by [default: the host of --server]
        #[arg(long)]
        host: Option<String>,
    },
}

/// Waiting for a device that does not exist yet (`console`, `capture`).
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// If the device does not exist yet, wait until it appears (e.g. its VM boots)
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after DURATION (e.g. 500ms, 90s, 5m, 1h; a bare number is seconds)
    /// and exit with status 4; implies --wait [default: wait until interrupted]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait_timeout: Option<Duration>,
}

impl WaitArgs {
    pub fn enabled(&self) -> bool {
        self.wait || self.wait_timeout.is_some()
    }
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Create client.crt and client.key (refuses to replace them without --force).
    ///
    /// A self-signed ECDSA certificate; prints its fingerprint.
    ///
    /// Examples:
    ///   ringcast identity new
    ///   ringcast identity new --name alice@laptop
    #[command(verbatim_doc_comment)]
    New {
        /// Common name [default: USER@HOST]
        #[arg(long)]
        name: Option<String>,
        /// Replace an existing identity
        #[arg(long)]
        force: bool,
    },
    /// Print the identity's fingerprint and the line for the server's authorized_clients.
    ///
    /// Example: ringcast identity show
    #[command(verbatim_doc_comment)]
    Show,
}

/// Splits `VM/DEVICE` into its two names.
pub fn split_device(s: &str) -> anyhow::Result<(String, String)> {
    match s.rsplit_once('/') {
        Some((vm, dev)) if !vm.is_empty() && !dev.is_empty() => Ok((vm.into(), dev.into())),
        _ => bail!("{s:?} is not VM/DEVICE (see `ringcast list`)"),
    }
}
