//! `ringcast`: the command-line client of ringcastd. One module per subcommand; `args` holds
//! the command line and its `--help` text.

mod access;
mod args;
mod capture;
mod console;
mod duration;
mod exit;
mod identity;
mod link;
mod listing;
mod mic;
mod mic_capture;
mod mic_opus;
mod mic_source;
mod play;
mod qmp;
mod sound_card;
mod terminal;
mod wait;
mod wav;
mod web_link;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use client::Trust;

use crate::args::{Cli, Command};
use crate::exit::Exit;

fn main() -> ExitCode {
    match real_main() {
        Ok(exit) => exit.into(),
        Err(e) => {
            // Errors for people: the message and its causes, no debug dump or backtrace.
            // A server's message may carry anything: nothing in it reaches the terminal raw.
            eprintln!(
                "ringcast: {}",
                protocol::names::escape_lines(&format!("{e:#}"))
            );
            Exit::Error.into()
        }
    }
}

fn real_main() -> anyhow::Result<Exit> {
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
        return identity::identity(cmd, &id_dir).map(|()| Exit::Success);
    }
    if let Command::WebLink { .. } = &cli.command {
        return web_link::web_link(&cli, &id_dir).map(|()| Exit::Success);
    }
    // Say it before connecting: nothing the server says changes it.
    #[cfg(not(feature = "sound-card"))]
    if let Command::Play {
        wav: None,
        raw: false,
        ..
    } = &cli.command
    {
        anyhow::bail!("{}", sound_card::NO_SOUND_CARD);
    }
    if let Command::Play { raw: true, .. } = &cli.command {
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            anyhow::bail!(
                "--raw writes PCM samples to stdout, which is a terminal; redirect it to a file \
                 or a program (ringcast play --raw DEVICE > sound.pcm, or | aplay ...)"
            );
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let exit = rt.block_on(run(cli, id_dir))?;
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(exit)
}

/// Connects to the server and runs the subcommand; how it ended.
async fn run(cli: Cli, id_dir: PathBuf) -> anyhow::Result<Exit> {
    let trust = match &cli.ca {
        Some(ca) => Trust::Ca(ca.clone()),
        None => {
            let file = cli
                .known_hosts
                .clone()
                .unwrap_or_else(client::default_known_hosts);
            // A person at a terminal is asked before a new server is pinned; a script
            // pins on first use (and it is said on stderr).
            if std::io::IsTerminal::is_terminal(&std::io::stdin())
                && std::io::IsTerminal::is_terminal(&std::io::stderr())
            {
                Trust::KnownHostsAsk(file)
            } else {
                Trust::KnownHosts(file)
            }
        }
    };
    let session = access::connect(&cli.server, &id_dir, trust, &cli.control_socket).await?;
    let exit = match cli.command {
        Command::List { json } => listing::list(&session, json).await?,
        Command::Stats { json } => listing::stats(&session, json).await?,
        Command::Console {
            device,
            wait,
            spy,
            resume,
            tail,
        } => console::console(&session, &cli.server, &device, &wait, spy, resume, tail).await?,
        Command::Capture {
            device,
            wait,
            output,
            follow,
            resume,
        } => capture::capture(&session, &device, &wait, &output, follow, resume).await?,
        Command::Play {
            device,
            wav,
            raw,
            jitter_ms,
            fixed_jitter,
            seconds,
            datagrams,
            codec,
        } => {
            let opts = play::PlayOptions {
                wav,
                raw,
                jitter_ms,
                fixed_jitter,
                seconds,
                datagrams,
                codec,
            };
            play::play(&session, &device, opts).await?
        }
        Command::Mic {
            device,
            tone,
            wav,
            raw,
            seconds,
            codec,
            input,
        } => {
            let opts = mic::MicOptions {
                tone,
                wav,
                raw,
                seconds,
                codec,
                device: input,
            };
            mic::mic(&session, &device, opts).await?
        }
        Command::Qmp {
            device,
            command,
            timeout,
        } => qmp::qmp(&session, &device, &command, Duration::from_secs(timeout)).await?,
        Command::Identity(_) | Command::WebLink { .. } => {
            unreachable!("handled before connecting")
        }
    };
    session.close().await;
    Ok(exit)
}
