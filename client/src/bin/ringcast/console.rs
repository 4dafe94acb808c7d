//! `ringcast console`: an interactive (or `--spy` read-only) console in a raw terminal,
//! resumable from the offset saved when the user last left it.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use client::{ConsoleItem, Mode, Session, StartAt};

use crate::args::{split_device, WaitArgs};
use crate::exit::Exit;
use crate::link::report_link;
use crate::terminal::ConsoleTerminal;
use crate::wait::{wait_for_device, wait_gave_up};

/// Where the offset at which the user left `device` on `server` is saved.
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

const ESCAPE: u8 = 0x1d; // Ctrl-]

/// `ringcast console`: attaches, copies keys to the console and its output to stdout until
/// Ctrl-], the end of the console or an error.
pub async fn console(
    s: &Session,
    server: &str,
    device: &str,
    wait: &WaitArgs,
    spy: bool,
    resume: bool,
    tail: u64,
) -> anyhow::Result<Exit> {
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
    // SIGTERM and SIGHUP (a closed terminal window) end the loop like Ctrl-], so that the
    // offset is saved and the terminal restored: the default action would kill the process
    // with the terminal still raw.
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let terminal = ConsoleTerminal::enter(std::io::stdin().is_terminal())?;
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
            _ = sigterm.recv() => break Err(anyhow::anyhow!("left {device} on SIGTERM")),
            _ = sighup.recv() => break Err(anyhow::anyhow!("left {device} on SIGHUP")),
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
    drop(terminal);
    eprintln!("\r\nringcast: left {device} at offset {}", con.offset());
    con.detach().await;
    result.map(|()| Exit::Success)
}
