//! `ringcastd`: the ringcast sidecar daemon.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sidecar::{Config, Daemon};

/// ringcastd drains the shared-memory rings of QEMU's ringcast backend into per-device
/// journals and serves them to subscribers.
///
/// It needs no configuration file. By default it keeps journals under
/// $XDG_STATE_HOME/ringcast (or /var/lib/ringcast), listens for QEMU on
/// $XDG_RUNTIME_DIR/ringcast/ringcastd.sock (or /run/ringcast/ringcastd.sock, directory
/// 0700, socket 0600; only its own user or root may register devices), and answers
/// `ringcastd stats` on ringcastd.ctl beside that socket.
///
/// Each console device gets <state-dir>/<vm>/<device>/ with numbered segments and a
/// current.log symlink (directories 0700, files 0600; a state or socket directory that
/// another user owns or others can write is refused):
///
///   tail -F /var/lib/ringcast/vm1/serial0/current.log
///
/// Network: ringcast clients connect over QUIC (TLS 1.3) to --listen, 127.0.0.1:7878 by
/// default. The server identity is created on first start as <state-dir>/server.crt and
/// server.key; clients pin its fingerprint (printed in the log) on first use. No network
/// client may do anything that no rule grants, whatever address it comes from. Rules come
/// from the authorization file (one line per client certificate; rights read, spy, write,
/// monitor, audio, or all):
///
///   SHA256:<fingerprint from `ringcast identity show`>  vm1/*,vm2/serial0  read,write,spy
///
/// and from the host's admin through the control socket (`ringcastd authorize`; `ringcast`
/// run as root or as ringcastd's user on this host does it by itself on first use).
///
/// Logs go to stderr at level info; RUST_LOG=debug changes the level, NO_COLOR=1 removes
/// colour codes (for journald). Operator documentation: docs/ringcastd.md.
///
/// Once QEMU can register and clients can connect, ringcastd prints one line to stdout,
/// for scripts and supervisors (`quic=-` with --no-network; with `--listen 127.0.0.1:0`
/// the port is the one the kernel picked):
///
///   ready quic=127.0.0.1:7878 socket=/run/ringcast/ringcastd.sock
///
/// Examples:
///
///   ringcastd
///   ringcastd --state-dir /srv/ringcast --journal-window 8MiB --segment-size 64MiB
///   ringcastd --listen 0.0.0.0:7878 --authorized-clients /etc/ringcast/authorized_clients
///   ringcastd --web        (then: ringcast web-link SHA256:3f1c... prints a link to open)
///   ringcastd stats
///   ringcastd authorize SHA256:3f1c... --devices 'vm1/*' --rights read,spy
#[derive(Debug, Parser)]
#[command(name = "ringcastd", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Registration socket QEMU connects to [default: $XDG_RUNTIME_DIR/ringcast/ringcastd.sock
    /// or /run/ringcast/ringcastd.sock]
    #[arg(long, global = true)]
    socket: Option<PathBuf>,

    /// Control socket for `ringcastd stats` [default: ringcastd.ctl beside --socket]
    #[arg(long, global = true)]
    control_socket: Option<PathBuf>,

    /// Journal directory [default: $XDG_STATE_HOME/ringcast or /var/lib/ringcast]
    #[arg(long)]
    state_dir: Option<PathBuf>,

    /// RAM kept per console device for fast replay (K, M, G, KiB, MiB suffixes)
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    journal_window: u64,

    /// A disk segment is closed when it reaches this size
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    segment_size: u64,

    /// A disk segment is closed when it is this old (s, m, h, d suffixes), checked when
    /// bytes arrive
    #[arg(long, default_value = "1d", value_parser = parse_duration)]
    segment_age: Duration,

    /// Disk bytes kept per console device; older segments are deleted
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    retention: u64,

    /// Audio periods queued per subscriber before the oldest are dropped
    #[arg(long, default_value_t = 64)]
    audio_queue: usize,

    /// Opus frame duration for clients that ask for Opus, in milliseconds: 2.5, 5, 10, 20,
    /// 40 or 60. Shorter frames cut delay but cost bitrate; in-band FEC needs 10 or more
    #[arg(long, default_value_t = 10.0)]
    opus_frame_ms: f64,

    /// Opus target bitrate in bits per second (K suffix: 64K); one encoder per audio
    /// device serves every Opus client
    #[arg(long, default_value = "64K", value_parser = parse_bitrate)]
    opus_bitrate: u32,

    /// Packet loss the Opus in-band FEC is planned for, percent: more protects more of
    /// each frame in the next one, at the cost of bitrate for the audio itself
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(0..=100))]
    opus_loss_percent: u8,

    /// UDP address of the QUIC server for ringcast clients [default: 127.0.0.1:7878]; if it
    /// cannot be bound (the port is taken), ringcastd does not start
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,

    /// Do not start the QUIC server (local journals and `ringcastd stats` only)
    #[arg(long)]
    no_network: bool,

    /// Who may use which devices [default: $XDG_CONFIG_HOME/ringcast/authorized_clients or
    /// /etc/ringcast/authorized_clients]; required to listen beyond loopback
    #[arg(long)]
    authorized_clients: Option<PathBuf>,

    /// A client connection that hears nothing from its client for this long is closed and
    /// its subscriptions are dropped (a killed client or a cut link; live clients send a
    /// keep-alive every second). Shortest 1s
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    idle_timeout: Duration,

    /// PEM CA bundle; client certificates it signed may be named by `cn:NAME` in the
    /// authorization file
    #[arg(long)]
    client_ca: Option<PathBuf>,

    /// QUIC congestion controller for what ringcastd sends: bbr (the default: it keeps its
    /// rate under random loss, reading only heavy or persistent loss as congestion), cubic
    /// or newreno (both slow down at every loss; see docs/benchmarks.md, B2)
    #[arg(long, default_value_t = transport_quic::proto::Congestion::default())]
    congestion: transport_quic::proto::Congestion,

    /// Threads of the network runtime (QUIC connections, streams to clients); the io_uring
    /// ingest and the control socket have their own
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    net_threads: u16,

    /// Also serve browsers: the page over HTTPS on the TCP port of --listen's number, and
    /// WebTransport sessions on the QUIC endpoint (ALPN h3). Browsers get in with a link
    /// the host's operator mints (`ringcast web-link IDENTITY`); see docs/web.md
    #[arg(long)]
    web: bool,

    /// PEM certificate chain browsers see (one a CA they trust signed, for the host's
    /// name) [default: a self-signed ECDSA certificate valid 13 days, replaced after 6,
    /// which WebTransport accepts by the hash the link carries; the page itself then
    /// shows the browser's certificate warning]
    #[arg(long, requires_all = ["web", "web_key"])]
    web_cert: Option<PathBuf>,

    /// PEM private key of --web-cert
    #[arg(long, requires_all = ["web", "web_cert"])]
    web_key: Option<PathBuf>,

    /// Directory of the page's files [default: web/dist of the source tree, which
    /// web/build.sh makes]
    #[arg(long, requires = "web")]
    web_assets: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a table of devices: bytes, drops by cause, ring fill, subscribers, poison
    ///
    /// Asks the running ringcastd over its control socket (ringcastd.ctl beside the
    /// registration socket, by default $XDG_RUNTIME_DIR/ringcast/ringcastd.ctl or
    /// /run/ringcast/ringcastd.ctl), so it must run as ringcastd's user or root.
    ///
    /// Columns: BYTES received from QEMU (audio: and periods); JOURNAL offsets still
    /// available; LOST:FLIGHT console bytes the flight recorder dropped while no ringcastd
    /// was attached; LOST:AUDIO periods the backend dropped; SUB-GAPS bytes (audio:
    /// periods) that slow clients missed; SPOOL-ERR failed disk writes; LOST:NO-SPOOL
    /// console bytes that left RAM while disk writes failed; RING FILL now/capacity; INPUT
    /// console input bytes; REGS registrations; SUBS clients attached. `ringcast stats`
    /// prints the same table to a client (and `ringcast stats --json` for scripts).
    ///
    /// Examples:
    ///   ringcastd stats
    ///   ringcastd stats --socket /run/ringcast/ringcastd.sock
    ///   ringcastd stats --socket-dir /run/ringcast
    #[command(verbatim_doc_comment)]
    Stats {
        /// Directory holding ringcastd.ctl (instead of --socket / --control-socket)
        /// [default: --control-socket, i.e. ringcastd.ctl beside --socket]
        #[arg(long)]
        socket_dir: Option<PathBuf>,
    },
    /// Grant a client certificate rights on this host's ringcastd
    ///
    /// Asks the running ringcastd over its control socket, which only root and ringcastd's
    /// user may use (ringcastd checks the asker's uid). The rule is kept in
    /// <state-dir>/local_clients and adds to the authorization file; it applies to new
    /// connections at once. The client prints its fingerprint with `ringcast identity show`.
    ///
    /// Rights: read (history and live output), spy (live output only), write (input),
    /// monitor (a QEMU monitor: QMP/HMP; never implied by write), audio; all is every one.
    ///
    /// Examples:
    ///   ringcastd authorize SHA256:3f1c...e9
    ///   ringcastd authorize SHA256:3f1c...e9 --devices 'vm1/*,build-*/serial0' --rights read,spy
    #[command(verbatim_doc_comment)]
    Authorize {
        /// The client's certificate fingerprint (SHA256:...), or cn:NAME with --client-ca
        client: String,
        /// Devices, as vm/device patterns separated by commas (* matches any run of characters)
        #[arg(long, default_value = "*/*")]
        devices: String,
        /// Rights, separated by commas
        #[arg(long, default_value = "all")]
        rights: String,
    },
}

/// Where ringcastd listens for clients unless told otherwise: loopback only.
const DEFAULT_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7878);

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        u => return Err(format!("unknown size unit {u:?} (use K, M or G)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A bitrate in bits per second: `64000`, `64K` or `1M` (decimal, as bitrates are).
fn parse_bitrate(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1000),
        Some((i, 'm' | 'M')) => (&t[..i], 1_000_000),
        _ => (t, 1),
    };
    let n: u32 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a bitrate (e.g. 64000 or 64K)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        u => return Err(format!("unknown duration unit {u:?} (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() {
    // Errors for people: the message and its causes, no debug dump or backtrace.
    if let Err(e) = real_main() {
        eprintln!("ringcastd: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(sidecar::web::redact_secrets(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        ))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut cfg = Config::default();
    if let Some(s) = cli.socket {
        cfg.control_socket = sidecar::control_socket_for(&s);
        cfg.socket = s;
    }
    if let Some(c) = cli.control_socket {
        cfg.control_socket = c;
    }
    match cli.command {
        Some(Command::Stats { socket_dir }) => {
            let path = match socket_dir {
                Some(d) => d.join("ringcastd.ctl"),
                None => cfg.control_socket,
            };
            print!("{}", sidecar::query_stats(&path)?);
            return Ok(());
        }
        Some(Command::Authorize {
            client,
            devices,
            rights,
        }) => {
            let line = format!("{client} {devices} {rights}");
            let rule = transport_quic::authz::Rule::parse(&line)
                .map_err(|e| anyhow::anyhow!("{e} in {line:?}"))?;
            transport_quic::local::authorize(&cfg.control_socket, &rule)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("authorized: {}", rule.to_line());
            return Ok(());
        }
        None => {}
    }
    if let Some(d) = cli.state_dir {
        cfg.state_dir = d;
    }
    cfg.journal.window = usize::try_from(cli.journal_window).context("--journal-window")?;
    cfg.journal.segment_size = cli.segment_size.max(1);
    cfg.journal.segment_age = cli.segment_age;
    cfg.journal.retention = cli.retention;
    cfg.audio_queue = cli.audio_queue.max(1);
    cfg.opus = sidecar::transcode::OpusConfig {
        frame_us: (cli.opus_frame_ms * 1000.0).round() as u32,
        bitrate: cli.opus_bitrate,
        loss_percent: cli.opus_loss_percent,
    };
    cfg.opus
        .check()
        .map_err(|e| anyhow::anyhow!("{e} (--opus-frame-ms, --opus-bitrate)"))?;
    sidecar::raise_fd_limit();
    // A file named on the command line must be there: without it ringcastd would fall
    // back to the default rules, not the ones the operator asked for.
    if let Some(path) = &cli.authorized_clients {
        if let Err(e) = std::fs::symlink_metadata(path) {
            anyhow::bail!(
                "cannot use the authorization file {} named by --authorized-clients: {e}; \
                 create it or leave the option out",
                path.display()
            );
        }
    }
    let net_cfg = sidecar::net::NetConfig {
        listen: cli.listen.unwrap_or(DEFAULT_LISTEN),
        identity_dir: cfg.state_dir.clone(),
        authorized_clients: cli
            .authorized_clients
            .unwrap_or_else(sidecar::net::default_authorized_clients),
        client_ca: cli.client_ca,
        limits: transport_quic::proto::Limits {
            idle_timeout: cli
                .idle_timeout
                .max(transport_quic::proto::MIN_IDLE_TIMEOUT),
            congestion: cli.congestion,
            ..Default::default()
        },
    };
    // The network comes first: an identity that cannot be written (a full disk) or an
    // address that cannot be bound stops ringcastd before QEMU can register with it.
    let network = if cli.no_network {
        None
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(cli.net_threads))
            .thread_name("ringcastd-net")
            .enable_all()
            .build()
            .context("cannot start the network runtime")?;
        let web = if cli.web {
            let certs = match (&cli.web_cert, &cli.web_key) {
                (Some(c), Some(k)) => transport_quic::tls::web::WebCerts::load(c, k)
                    .with_context(|| format!("cannot use --web-cert {}", c.display()))?,
                _ => transport_quic::tls::web::WebCerts::ephemeral(&web_names())
                    .context("cannot make the browser certificate")?,
            };
            let web = sidecar::web::WebConfig::new(
                std::sync::Arc::new(certs),
                cli.web_assets.unwrap_or_else(sidecar::web::default_assets),
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            Some(web)
        } else {
            None
        };
        let bound = {
            let _guard = rt.enter();
            sidecar::net::BoundServer::bind_with_web(net_cfg, web)
        };
        // A port that is taken stops ringcastd: whoever holds it would otherwise be the
        // server new clients reach and pin.
        let bound = bound.map_err(|e| match e {
            sidecar::net::NetError::Bind { addr, source } => anyhow::anyhow!(
                "cannot listen on {addr}: {source}; if another program holds the port, stop                  it or pass --listen ADDR:PORT (port 0 picks a free one), or --no-network to                  run without the QUIC server"
            ),
            e => e.into(),
        })?;
        Some((rt, bound))
    };
    let socket = cfg.socket.clone();
    let daemon = Daemon::start(cfg).context("cannot start ringcastd")?;
    let network = network.map(|(rt, bound)| {
        let server = {
            let _guard = rt.enter();
            bound.serve(daemon.handle())
        };
        (rt, server)
    });
    announce_ready(
        network.as_ref().map(|(_, server)| server.local_addr()),
        &socket,
    );
    daemon.wait();
    Ok(())
}

/// Names in the self-signed browser certificate: this host's and loopback's.
fn web_names() -> Vec<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if !host.is_empty() {
        names.insert(0, host);
    }
    names
}

/// The readiness line on stdout (see the help text): printed after the registration socket,
/// the control socket and the QUIC server are all up, so whoever waits for it can connect.
fn announce_ready(quic: Option<std::net::SocketAddr>, socket: &std::path::Path) {
    use std::io::Write;
    let quic = quic.map_or_else(|| "-".to_owned(), |a| a.to_string());
    tracing::info!(%quic, socket = %socket.display(), "ready");
    let mut out = std::io::stdout().lock();
    // A closed stdout (a supervisor that does not read it) is not an error.
    let _ = writeln!(out, "ready quic={quic} socket={}", socket.display());
    let _ = out.flush();
}
