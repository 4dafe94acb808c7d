//! `ringcast`: the command-line client of ringcastd.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use client::{ConsoleItem, Identity, Mode, Session, StartAt, Trust};

/// ringcast: the consoles and sound of remote QEMU VMs over one secure QUIC connection.
///
/// The server is ringcastd (default 127.0.0.1:7878, or $RINGCAST_SERVER). On first contact
/// its identity is pinned in ~/.config/ringcast/known_hosts, like SSH; a changed identity
/// is refused. With --ca the server must instead present a certificate signed by that CA.
/// Beyond loopback the server wants a client certificate: create one with
/// `ringcast identity new` and send the fingerprint `ringcast identity show` prints to the
/// server's administrator.
///
/// Devices are named VM/DEVICE, as `ringcast list` shows them.
///
/// Exit status: 0 done, 1 error (also a QMP error reply), 2 bad usage, 3 `capture` found
/// gaps, 4 the device did not appear within --wait-timeout. RUST_LOG=info shows more on
/// stderr. Documentation: docs/ in the source tree.
///
/// Examples:
///
///   ringcast list
///   ringcast console vm1/serial0
///   ringcast --server vmhost:7878 capture vm1/serial0 -o boot.log --follow
///   ringcast play vm1/sound0 --jitter-ms 60
#[derive(Debug, Parser)]
#[command(name = "ringcast", version, verbatim_doc_comment)]
struct Cli {
    /// ringcastd to connect to (HOST or HOST:PORT)
    #[arg(
        long,
        short,
        global = true,
        env = "RINGCAST_SERVER",
        default_value = "127.0.0.1:7878"
    )]
    server: String,

    /// Trust servers whose certificate this PEM CA bundle signed (instead of known_hosts)
    #[arg(long, global = true)]
    ca: Option<PathBuf>,

    /// Known-hosts file for trust on first use [default: ~/.config/ringcast/known_hosts]
    #[arg(long, global = true)]
    known_hosts: Option<PathBuf>,

    /// Directory of the client identity (client.crt, client.key) [default: ~/.config/ringcast]
    #[arg(long, global = true)]
    identity_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// A jitter buffer of --jitter-ms absorbs network delay variation; periods that arrive
    /// after their play-out time are counted late, empty buffers as underruns, both printed
    /// at the end with the periods the server skipped.
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
        /// Write raw interleaved PCM to stdout instead of playing
        #[arg(long)]
        raw: bool,
        /// Jitter-buffer target in milliseconds
        #[arg(long, default_value_t = 60)]
        jitter_ms: u64,
        /// Stop after this many seconds of audio (default: until interrupted)
        #[arg(long)]
        seconds: Option<f64>,
        /// Receive periods as QUIC datagrams (late is worse than lost)
        #[arg(long)]
        datagrams: bool,
    },

    /// Send one QMP command to a QEMU monitor on a console device and print the reply.
    ///
    /// Performs the QMP capabilities handshake first. The monitor must be in control mode
    /// (-mon chardev=ID,mode=control) on a ringcast plugin chardev. Needs the write right
    /// and the console's write lock. Prints the reply as one JSON line; exit status 1 when
    /// it is an error reply.
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
}

/// Waiting for a device that does not exist yet (`console`, `capture`).
#[derive(Debug, Clone, clap::Args)]
struct WaitArgs {
    /// If the device does not exist yet, wait until it appears (e.g. its VM boots)
    #[arg(long)]
    wait: bool,
    /// Give up waiting after DURATION (e.g. 500ms, 90s, 5m, 1h; a bare number is seconds)
    /// and exit with status 4; implies --wait [default: wait until interrupted]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    wait_timeout: Option<Duration>,
}

impl WaitArgs {
    fn enabled(&self) -> bool {
        self.wait || self.wait_timeout.is_some()
    }
}

/// Exit status when a waited-for device did not appear in time.
const EXIT_WAIT_TIMEOUT: i32 = 4;

/// How often --wait asks the server for its device list.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// `500ms`, `90s`, `1.5m`, `2h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 90s, 5m, 1h)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown unit {u:?} in {s:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is out of range"))
}

#[derive(Debug, Subcommand)]
enum IdentityCommand {
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

fn split_device(s: &str) -> anyhow::Result<(String, String)> {
    match s.rsplit_once('/') {
        Some((vm, dev)) if !vm.is_empty() && !dev.is_empty() => Ok((vm.into(), dev.into())),
        _ => bail!("{s:?} is not VM/DEVICE (see `ringcast list`)"),
    }
}

fn main() {
    // Errors for people: the message and its causes, no debug dump or backtrace.
    if let Err(e) = real_main() {
        eprintln!("ringcast: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .init();
    let id_dir = cli
        .identity_dir
        .clone()
        .unwrap_or_else(transport_quic::tls::config_dir);
    if let Command::Identity(cmd) = &cli.command {
        return identity(cmd, &id_dir);
    }
    // Say it before connecting: nothing the server says changes it.
    #[cfg(not(feature = "sound-card"))]
    if let Command::Play {
        wav: None,
        raw: false,
        ..
    } = &cli.command
    {
        bail!("{NO_SOUND_CARD}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let code = rt.block_on(run(cli, id_dir))?;
    rt.shutdown_timeout(Duration::from_millis(200));
    std::process::exit(code);
}

fn identity(cmd: &IdentityCommand, dir: &Path) -> anyhow::Result<()> {
    let (crt, key) = (dir.join("client.crt"), dir.join("client.key"));
    match cmd {
        IdentityCommand::New { name, force } => {
            if crt.exists() && !force {
                bail!(
                    "{} already exists; pass --force to replace it (servers that know the old \
                     fingerprint will then refuse you)",
                    crt.display()
                );
            }
            let name = name.clone().unwrap_or_else(|| {
                let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "host".into());
                format!("{user}@{host}")
            });
            let id = Identity::create(dir, "client", &name, std::slice::from_ref(&name))?;
            println!("created {} ({name})", crt.display());
            println!("{}", id.fingerprint());
        }
        IdentityCommand::Show => {
            if !crt.exists() {
                bail!(
                    "no identity in {}; create one with `ringcast identity new`",
                    dir.display()
                );
            }
            let id = Identity::load(&crt, &key)?;
            println!("{}", id.fingerprint());
            println!(
                "\nFor the server's authorized_clients (adjust devices and rights):\n{}  */*  read,write,spy",
                id.fingerprint()
            );
        }
    }
    Ok(())
}

async fn run(cli: Cli, id_dir: PathBuf) -> anyhow::Result<i32> {
    let trust = match &cli.ca {
        Some(ca) => Trust::Ca(ca.clone()),
        None => Trust::KnownHosts(
            cli.known_hosts
                .clone()
                .unwrap_or_else(client::default_known_hosts),
        ),
    };
    let (crt, key) = (id_dir.join("client.crt"), id_dir.join("client.key"));
    let identity = if crt.exists() && key.exists() {
        Some(Identity::load(&crt, &key)?)
    } else {
        None
    };
    let session = Session::connect(&cli.server, identity, trust)
        .await
        .with_context(|| format!("cannot connect to {}", cli.server))?;
    let code = match cli.command {
        Command::List { json } => list(&session, json).await?,
        Command::Stats { json } => stats(&session, json).await?,
        Command::Console {
            device,
            wait,
            spy,
            resume,
            tail,
        } => console(&session, &cli.server, &device, &wait, spy, resume, tail).await?,
        Command::Capture {
            device,
            wait,
            output,
            follow,
            resume,
        } => capture(&session, &device, &wait, &output, follow, resume).await?,
        Command::Play {
            device,
            wav,
            raw,
            jitter_ms,
            seconds,
            datagrams,
        } => play(&session, &device, wav, raw, jitter_ms, seconds, datagrams).await?,
        Command::Qmp {
            device,
            command,
            timeout,
        } => qmp(&session, &device, &command, Duration::from_secs(timeout)).await?,
        Command::Identity(_) => unreachable!("handled before connecting"),
    };
    session.close().await;
    Ok(code)
}

async fn list(s: &Session, json: bool) -> anyhow::Result<i32> {
    let devices = s.list().await?;
    if json {
        let v: Vec<serde_json::Value> = devices
            .iter()
            .map(|d| serde_json::Value::Object(device_json(d)))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", transport_quic::table::list_table(&devices));
    }
    Ok(0)
}

async fn stats(s: &Session, json: bool) -> anyhow::Result<i32> {
    let entries = s.stats().await?;
    if json {
        let v: Vec<serde_json::Value> = entries.iter().map(stats_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", transport_quic::table::stats_table(&entries));
    }
    Ok(0)
}

/// A device as `list --json` prints it (the field names are documented in `list --help`).
fn device_json(d: &client::DeviceEntry) -> serde_json::Map<String, serde_json::Value> {
    let audio = d.audio.map(|f| {
        let sample = match f.sample_format {
            0 => "u8".to_string(),
            1 => "s8".to_string(),
            2 => "u16".to_string(),
            3 => "s16".to_string(),
            4 => "u32".to_string(),
            5 => "s32".to_string(),
            6 => "f32".to_string(),
            n => format!("unknown-{n}"),
        };
        serde_json::json!({
            "rate": f.rate,
            "channels": f.channels,
            "sample_format": sample,
            "big_endian": f.big_endian,
        })
    });
    let serde_json::Value::Object(map) = serde_json::json!({
        "vm": d.vm,
        "device": d.device,
        "kind": d.kind.name(),
        "state": d.state.name(),
        "audio": audio,
        "bytes": d.bytes,
        "periods": d.periods,
        "journal_start": d.journal_start,
        "journal_end": d.journal_end,
        "subscribers": d.subscribers,
    }) else {
        unreachable!("json! of an object literal is an object")
    };
    map
}

/// A device's counters as `stats --json` prints them (documented in `stats --help`).
fn stats_json(e: &client::StatsEntry) -> serde_json::Value {
    let mut m = device_json(&e.device);
    let counters = [
        ("dropped_flight_recorder", e.dropped_flight_recorder),
        ("dropped_audio_overflow", e.dropped_audio_overflow),
        ("subscriber_gap_bytes", e.subscriber_gap_bytes),
        ("subscriber_dropped_periods", e.subscriber_dropped_periods),
        ("spool_errors", e.spool_errors),
        ("dropped_no_spool", e.dropped_no_spool),
        ("ring_fill", e.ring_fill),
        ("ring_capacity", e.ring_capacity),
        ("input_bytes", e.input_bytes),
        ("registrations", e.registrations),
    ];
    for (k, v) in counters {
        m.insert(k.into(), v.into());
    }
    m.insert("poisoned".into(), e.poisoned.clone().into());
    serde_json::Value::Object(m)
}

/// Polls the server's device list until `vm/dev` is in it. Says once on stderr that it
/// waits; `None` when `timeout` passed first.
async fn wait_for_device(
    s: &Session,
    device: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<Option<client::DeviceEntry>> {
    let (vm, dev) = split_device(device)?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut told = false;
    loop {
        if let Some(d) = s
            .list()
            .await?
            .into_iter()
            .find(|d| d.vm == vm && d.device == dev)
        {
            if told {
                eprintln!("ringcast: {device} appeared");
            }
            return Ok(Some(d));
        }
        if !told {
            eprintln!("ringcast: waiting for {device} to appear...");
            told = true;
        }
        let pause = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                left.min(WAIT_POLL)
            }
            None => WAIT_POLL,
        };
        tokio::time::sleep(pause).await;
    }
}

/// Tells the user that waiting for `device` gave up; the exit status for it.
fn wait_gave_up(device: &str, timeout: Option<Duration>) -> i32 {
    eprintln!(
        "ringcast: {device} did not appear within {}; giving up (`ringcast list` shows the \
         devices you may use: a device you are not authorized for looks missing too)",
        timeout.map(show_duration).unwrap_or_default()
    );
    EXIT_WAIT_TIMEOUT
}

fn show_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

fn offset_file(server: &str, device: &str) -> PathBuf {
    let name: String = format!("{server}_{device}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    transport_quic::tls::state_dir().join("offsets").join(name)
}

/// Puts the terminal in raw mode and restores it when dropped (also on panic).
struct RawTerminal;

impl RawTerminal {
    fn enable() -> anyhow::Result<Self> {
        crossterm::terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        Ok(RawTerminal)
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

const ESCAPE: u8 = 0x1d; // Ctrl-]

async fn console(
    s: &Session,
    server: &str,
    device: &str,
    wait: &WaitArgs,
    spy: bool,
    resume: bool,
    tail: u64,
) -> anyhow::Result<i32> {
    let (vm, dev) = split_device(device)?;
    if wait.enabled()
        && wait_for_device(s, device, wait.wait_timeout)
            .await?
            .is_none()
    {
        return Ok(wait_gave_up(device, wait.wait_timeout));
    }
    let saved = offset_file(server, device);
    let start = if resume {
        match std::fs::read_to_string(&saved)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            Some(o) => StartAt::Offset(o),
            None => StartAt::TailBytes(tail),
        }
    } else {
        StartAt::TailBytes(tail)
    };
    let mode = if spy { Mode::Spy } else { Mode::Write };
    let mut con = s.attach_console(&vm, &dev, mode, start).await?;
    eprint!(
        "ringcast: {device} ({}). Leave with Ctrl-]\r\n",
        if spy { "spy, read-only" } else { "read-write" }
    );
    let interactive = std::io::stdin().is_terminal();
    let _raw = if interactive {
        Some(RawTerminal::enable()?)
    } else {
        None
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut stdout = std::io::stdout();
    let mut stdin_open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut link = client::LinkMonitor::new(s, client::LINK_QUIET);
    let result: anyhow::Result<()> = loop {
        tokio::select! {
            _ = tick.tick() => report_link(link.check(), con.offset()),
            keys = rx.recv(), if stdin_open => match keys {
                Some(k) => {
                    let (keys, leave) = match k.iter().position(|&b| b == ESCAPE) {
                        Some(i) => (&k[..i], true),
                        None => (&k[..], false),
                    };
                    if !keys.is_empty() && !spy {
                        if let Err(e) = con.write(keys).await {
                            break Err(e.into());
                        }
                    }
                    if leave {
                        break Ok(());
                    }
                }
                None => stdin_open = false,
            },
            item = con.next() => match item {
                Ok(Some(ConsoleItem::Chunk { bytes, .. })) => {
                    stdout.write_all(&bytes)?;
                    stdout.flush()?;
                }
                Ok(Some(ConsoleItem::Gap { len, reason, .. })) => {
                    eprint!("\r\n[ringcast: {len} bytes missing: {}]\r\n", reason.name());
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.into()),
            }
        }
    };
    if let Some(dir) = saved.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&saved, con.offset().to_string());
    drop(_raw);
    eprintln!("\r\nringcast: left {device} at offset {}", con.offset());
    con.detach().await;
    result.map(|()| 0)
}

async fn capture(
    s: &Session,
    device: &str,
    wait: &WaitArgs,
    output: &Path,
    follow: bool,
    resume: bool,
) -> anyhow::Result<i32> {
    let (vm, dev) = split_device(device)?;
    // The file first: a path that cannot be written fails now, not after a --wait.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(!resume)
        .open(output)
        .with_context(|| format!("cannot open {}", output.display()))?;
    let from = if resume { file.metadata()?.len() } else { 0 };
    let entry = if wait.enabled() {
        match wait_for_device(s, device, wait.wait_timeout).await? {
            Some(d) => d,
            None => return Ok(wait_gave_up(device, wait.wait_timeout)),
        }
    } else {
        s.list()
            .await?
            .into_iter()
            .find(|d| d.vm == vm && d.device == dev)
            .with_context(|| {
                format!("no device {device} (see `ringcast list`; --wait waits for it to appear)")
            })?
    };
    let end = entry.journal_end;
    let mut con = s
        .attach_console(&vm, &dev, Mode::Read, StartAt::Offset(from))
        .await?;
    file.seek(SeekFrom::Start(from))?;
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_shown = Instant::now();
    let (mut written, mut gaps, mut gap_bytes) = (0u64, 0u64, 0u64);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // Buffered bytes reach the file at least this often, so `tail -f` of a slow console and
    // a reader of a followed capture see them.
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut link = client::LinkMonitor::new(s, client::LINK_QUIET);
    loop {
        if !follow && con.offset() >= end {
            break;
        }
        let item = tokio::select! {
            item = con.next() => item?,
            _ = tick.tick() => {
                if !out.buffer().is_empty() {
                    out.flush()?;
                }
                report_link(link.check(), con.offset());
                continue;
            }
            _ = &mut interrupted => break,
        };
        match item {
            Some(ConsoleItem::Chunk { bytes, .. }) => {
                out.write_all(&bytes)?;
                written += bytes.len() as u64;
            }
            Some(ConsoleItem::Gap {
                offset,
                len,
                reason,
            }) => {
                gaps += 1;
                gap_bytes += len;
                eprintln!(
                    "ringcast: gap at offset {offset}: {len} bytes missing ({}); left as a hole",
                    reason.name()
                );
                out.seek(SeekFrom::Start(offset + len))?;
            }
            None => break,
        }
        if progress && last_shown.elapsed() > Duration::from_millis(500) {
            last_shown = Instant::now();
            let rate = written as f64 / started.elapsed().as_secs_f64() / 1e6;
            eprint!("\r{written} bytes, {rate:.1} MB/s, {gaps} gaps   ");
        }
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    // A trailing gap leaves the file short of its last hole: extend it.
    if file.metadata()?.len() < con.offset() {
        file.set_len(con.offset())?;
    }
    file.sync_data()?;
    let secs = started.elapsed().as_secs_f64();
    if progress {
        eprintln!();
    }
    eprintln!(
        "ringcast: captured {written} bytes of {device} to {} (offsets {from}..{}) in {secs:.1} s, {:.1} MB/s; {gaps} gaps, {gap_bytes} bytes missing",
        output.display(),
        con.offset(),
        written as f64 / secs.max(1e-9) / 1e6
    );
    con.detach().await;
    Ok(if gaps > 0 { 3 } else { 0 })
}

/// Tells the user on stderr that the link went silent or came back.
fn report_link(event: Option<client::LinkEvent>, offset: u64) {
    match event {
        Some(client::LinkEvent::Down { silent }) => eprint!(
            "ringcast: nothing from the server for {:.0} s; the link may be down. Waiting \
             (the connection is given up after 30 s of silence)\r\n",
            silent.as_secs_f64()
        ),
        Some(client::LinkEvent::Up { after }) => eprint!(
            "ringcast: the server is heard again after {:.1} s; continuing at offset {offset}\r\n",
            after.as_secs_f64()
        ),
        None => {}
    }
}

/// Where played PCM goes: a WAV file, stdout, or the sound card.
type PcmSink = Box<dyn FnMut(&[u8]) -> anyhow::Result<()>>;

#[derive(Default, Debug)]
struct PlayCounts {
    periods: u64,
    late: u64,
    underruns: u64,
    skipped: u64,
}

#[allow(clippy::too_many_arguments)]
async fn play(
    s: &Session,
    device: &str,
    wav: Option<PathBuf>,
    raw: bool,
    jitter_ms: u64,
    seconds: Option<f64>,
    datagrams: bool,
) -> anyhow::Result<i32> {
    let (vm, dev) = split_device(device)?;
    let mut audio = s.attach_audio(&vm, &dev, datagrams).await?;
    let format = audio
        .format()
        .context("the device has not announced its audio format yet (is its VM running?)")?;
    let bytes_per_sample = format.sample_bytes().context("unknown sample format")?;
    let frame_bytes = u64::from(bytes_per_sample) * u64::from(format.channels.max(1));
    let limit_frames = seconds.map(|s| (s * f64::from(format.rate)) as u64);
    let jitter = Duration::from_millis(jitter_ms);
    let mut sink: PcmSink = if let Some(path) = &wav {
        let spec = hound::WavSpec {
            channels: format.channels,
            sample_rate: format.rate,
            bits_per_sample: (bytes_per_sample * 8) as u16,
            sample_format: if format.sample_format == 6 {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let mut w = hound::WavWriter::create(path, spec)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let fmt = format;
        // The writer completes the WAV header when the sink is dropped.
        Box::new(move |pcm: &[u8]| write_wav_samples(&mut w, &fmt, pcm))
    } else if raw {
        let mut out = std::io::stdout();
        Box::new(move |pcm: &[u8]| {
            out.write_all(pcm)?;
            Ok(())
        })
    } else {
        output::device_sink(format, jitter)?
    };
    let mut counts = PlayCounts::default();
    // Stamps are the server host's CLOCK_MONOTONIC: comparable only when it is this host.
    let same_host = s.connection().remote_address().ip().is_loopback();
    let mut latencies_us: Vec<u64> = Vec::new();
    let mut frames_done = 0u64;
    let mut clock: Option<(Instant, u64)> = None;
    let mut last_seq: Option<u64> = None;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let p = tokio::select! {
            p = audio.next() => p?,
            _ = &mut interrupted => break,
        };
        let Some(p) = p else { break };
        counts.periods += 1;
        counts.skipped += p.skipped_before;
        if let Some(l) = last_seq {
            counts.skipped += p.seq.saturating_sub(l + 1);
        }
        last_seq = Some(p.seq);
        // Play-out time: the first period's arrival plus the jitter target, then the
        // backend's own timestamps.
        let now = Instant::now();
        if same_host {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let arrival_ns = t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
            latencies_us.push(arrival_ns.saturating_sub(p.timestamp_ns) / 1000);
        }
        let (t0, ts0) = *clock.get_or_insert((now, p.timestamp_ns));
        let due = t0 + jitter + Duration::from_nanos(p.timestamp_ns.saturating_sub(ts0));
        if now > due {
            counts.late += 1;
        }
        let mut pcm = &p.pcm[..];
        if let Some(limit) = limit_frames {
            let left = limit.saturating_sub(frames_done) * frame_bytes;
            pcm = &pcm[..pcm.len().min(left as usize)];
        }
        sink(pcm)?;
        frames_done += pcm.len() as u64 / frame_bytes.max(1);
        if limit_frames.is_some_and(|l| frames_done >= l) {
            break;
        }
    }
    drop(sink);
    counts.underruns += output::underruns();
    let latency = if latencies_us.is_empty() {
        String::new()
    } else {
        latencies_us.sort_unstable();
        let pct = |q: f64| {
            let i = ((latencies_us.len() - 1) as f64 * q).round() as usize;
            latencies_us[i] as f64 / 1000.0
        };
        format!(
            "; latency from QEMU to here p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        )
    };
    eprintln!(
        "ringcast: {} periods ({:.2} s), late {}, underruns {}, skipped {}{latency}",
        counts.periods,
        frames_done as f64 / f64::from(format.rate.max(1)),
        counts.late,
        counts.underruns,
        counts.skipped
    );
    Ok(0)
}

fn write_wav_samples<W: Write + Seek>(
    w: &mut hound::WavWriter<W>,
    f: &client::AudioFormat,
    pcm: &[u8],
) -> anyhow::Result<()> {
    let be = f.big_endian;
    match f.sample_format {
        0 => pcm
            .iter()
            .try_for_each(|&b| w.write_sample((b as i16 - 128) as i8)),
        1 => pcm.iter().try_for_each(|&b| w.write_sample(b as i8)),
        2 | 3 => pcm.chunks_exact(2).try_for_each(|c| {
            let v = if be {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            };
            let v = if f.sample_format == 2 {
                (v ^ 0x8000) as i16
            } else {
                v as i16
            };
            w.write_sample(v)
        }),
        4 | 5 => pcm.chunks_exact(4).try_for_each(|c| {
            let a = [c[0], c[1], c[2], c[3]];
            let v = if be {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            };
            let v = if f.sample_format == 4 {
                (v ^ 0x8000_0000) as i32
            } else {
                v as i32
            };
            w.write_sample(v)
        }),
        _ => pcm.chunks_exact(4).try_for_each(|c| {
            let a = [c[0], c[1], c[2], c[3]];
            w.write_sample(if be {
                f32::from_be_bytes(a)
            } else {
                f32::from_le_bytes(a)
            })
        }),
    }
    .context("cannot write the WAV file")
}

async fn qmp(s: &Session, device: &str, command: &str, timeout: Duration) -> anyhow::Result<i32> {
    let (vm, dev) = split_device(device)?;
    let cmd: serde_json::Value =
        serde_json::from_str(command).context("the command is not valid JSON")?;
    let mut con = s
        .attach_console(&vm, &dev, Mode::Write, StartAt::Now)
        .await?;
    let mut lines = LineReader::default();
    let result = tokio::time::timeout(timeout, async {
        // The greeting was sent when the monitor opened, possibly long ago; negotiate
        // capabilities either way. A monitor already out of negotiation mode answers
        // with an error, which is fine.
        con.write(b"{\"execute\":\"qmp_capabilities\"}\r\n").await?;
        loop {
            let v = lines.next_json(&mut con).await?;
            if v.get("return").is_some() || v.get("error").is_some() {
                break;
            }
        }
        let mut out = serde_json::to_vec(&cmd)?;
        out.extend_from_slice(b"\r\n");
        con.write(&out).await?;
        loop {
            let v = lines.next_json(&mut con).await?;
            if v.get("return").is_some() || v.get("error").is_some() {
                return anyhow::Ok(v);
            }
        }
    })
    .await
    .with_context(|| format!("no QMP reply from {device} within {} s", timeout.as_secs()))??;
    println!("{result}");
    con.detach().await;
    Ok(if result.get("error").is_some() { 1 } else { 0 })
}

/// Splits console output into JSON lines, skipping QMP events and greetings.
#[derive(Default)]
struct LineReader {
    buf: Vec<u8>,
}

impl LineReader {
    async fn next_json(
        &mut self,
        con: &mut client::ConsoleStream,
    ) -> anyhow::Result<serde_json::Value> {
        loop {
            while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line);
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(v) if v.get("event").is_some() || v.get("QMP").is_some() => continue,
                    Ok(v) => return Ok(v),
                    Err(_) => tracing::debug!(line = %text, "non-JSON line skipped"),
                }
            }
            if self.buf.len() > 16 << 20 {
                bail!("QMP reply longer than 16 MiB");
            }
            match con.next().await? {
                Some(ConsoleItem::Chunk { bytes, .. }) => self.buf.extend_from_slice(&bytes),
                Some(ConsoleItem::Gap { .. }) => {}
                None => bail!("the monitor's console closed"),
            }
        }
    }
}

/// What `ringcast play` says when this build cannot play to a sound card.
#[cfg(not(feature = "sound-card"))]
const NO_SOUND_CARD: &str = "this ringcast was built without sound-card support (cargo \
    feature `sound-card`), so `ringcast play` needs --wav FILE or --raw (e.g. `--raw | aplay -f \
    S16_LE -r 44100 -c 2`); to play to the sound card, rebuild with the default features \
    (Debian: apt-get install libasound2-dev pkg-config; cargo build -p client)";

/// Without the `sound-card` feature: no playback to a device, said plainly.
#[cfg(not(feature = "sound-card"))]
mod output {
    use std::time::Duration;

    /// No output callback, no underruns.
    pub fn underruns() -> u64 {
        0
    }

    pub fn device_sink(
        _f: client::AudioFormat,
        _jitter: Duration,
    ) -> anyhow::Result<super::PcmSink> {
        anyhow::bail!("{}", super::NO_SOUND_CARD)
    }
}

/// Playback through the default output device (cpal), with a jitter buffer.
#[cfg(feature = "sound-card")]
mod output {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use anyhow::Context;
    use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

    static UNDERRUNS: AtomicU64 = AtomicU64::new(0);

    /// Underruns counted by the output callback.
    pub fn underruns() -> u64 {
        UNDERRUNS.load(Relaxed)
    }

    /// A sink that queues PCM (converted to f32) for the default output device; playback
    /// starts once the jitter target is buffered, and restarts buffering after an underrun.
    pub fn device_sink(f: client::AudioFormat, jitter: Duration) -> anyhow::Result<super::PcmSink> {
        let host = cpal::default_host();
        let dev = host
            .default_output_device()
            .context("no default audio output device (use --wav FILE or --raw)")?;
        let config = cpal::StreamConfig {
            channels: f.channels,
            sample_rate: cpal::SampleRate(f.rate),
            buffer_size: cpal::BufferSize::Default,
        };
        let target = (jitter.as_secs_f64() * f64::from(f.rate) * f64::from(f.channels)) as usize;
        let queue = Arc::new(Mutex::new((VecDeque::<f32>::new(), false)));
        let q = queue.clone();
        let stream = dev
            .build_output_stream(
                &config,
                move |out: &mut [f32], _| {
                    let mut g = q.lock().unwrap_or_else(|e| e.into_inner());
                    let (buf, playing) = &mut *g;
                    if !*playing && buf.len() >= target {
                        *playing = true;
                    }
                    for s in out.iter_mut() {
                        *s = if *playing {
                            buf.pop_front().unwrap_or(0.0)
                        } else {
                            0.0
                        };
                    }
                    if *playing && buf.is_empty() {
                        *playing = false;
                        UNDERRUNS.fetch_add(1, Relaxed);
                    }
                },
                |e| tracing::warn!(error = %e, "audio output error"),
                None,
            )
            .context("cannot open the audio output (use --wav FILE or --raw)")?;
        stream.play().context("cannot start the audio output")?;
        let max = target.max(1) * 8;
        Ok(Box::new(move |pcm: &[u8]| {
            let _keep = &stream;
            let samples = to_f32(&f, pcm);
            let mut g = queue.lock().unwrap_or_else(|e| e.into_inner());
            g.0.extend(samples);
            // Far behind (the device is slower than the guest): drop the oldest.
            while g.0.len() > max {
                g.0.pop_front();
            }
            Ok(())
        }))
    }

    fn to_f32(f: &client::AudioFormat, pcm: &[u8]) -> Vec<f32> {
        let be = f.big_endian;
        match f.sample_format {
            0 => pcm.iter().map(|&b| (b as f32 - 128.0) / 128.0).collect(),
            1 => pcm.iter().map(|&b| b as i8 as f32 / 128.0).collect(),
            2 | 3 => pcm
                .chunks_exact(2)
                .map(|c| {
                    let v = if be {
                        u16::from_be_bytes([c[0], c[1]])
                    } else {
                        u16::from_le_bytes([c[0], c[1]])
                    };
                    let v = if f.sample_format == 2 {
                        (v ^ 0x8000) as i16
                    } else {
                        v as i16
                    };
                    f32::from(v) / 32768.0
                })
                .collect(),
            4 | 5 => pcm
                .chunks_exact(4)
                .map(|c| {
                    let a = [c[0], c[1], c[2], c[3]];
                    let v = if be {
                        u32::from_be_bytes(a)
                    } else {
                        u32::from_le_bytes(a)
                    };
                    let v = if f.sample_format == 4 {
                        (v ^ 0x8000_0000) as i32
                    } else {
                        v as i32
                    };
                    v as f32 / 2_147_483_648.0
                })
                .collect(),
            _ => pcm
                .chunks_exact(4)
                .map(|c| {
                    let a = [c[0], c[1], c[2], c[3]];
                    if be {
                        f32::from_be_bytes(a)
                    } else {
                        f32::from_le_bytes(a)
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units_and_refuse_the_rest_without_panicking() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("90s"), Duration::from_secs(90));
        assert_eq!(ok("90"), Duration::from_secs(90));
        assert_eq!(ok("1.5m"), Duration::from_secs(90));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok(" 3 s "), Duration::from_secs(3));
        for bad in [
            "",
            "soon",
            "-1s",
            "5 parsecs",
            "1e400",
            "9999999999999999999999h",
            ".",
            "1..2s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(show_duration(Duration::from_secs(5)), "5s");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1.500s");
    }
}
