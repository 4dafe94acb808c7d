//! `ringcast capture`: a console's output to a file, byte N of the file at offset N, gaps
//! left as holes of zeros.

use std::io::{IsTerminal, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use client::{ChunkWriter, ConsoleItem, Mode, Session, StartAt};

use crate::args::{split_device, WaitArgs};
use crate::exit::Exit;
use crate::link::report_link;
use crate::wait::{wait_for_device, wait_gave_up};

/// `ringcast capture`: copies the console to `output` until its end as of now (or, with
/// `follow`, until interrupted).
pub async fn capture(
    s: &Session,
    device: &str,
    wait: &WaitArgs,
    output: &Path,
    follow: bool,
    resume: bool,
) -> anyhow::Result<Exit> {
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
    // The end of the journal as the server last reported it: a gap must end within it.
    let mut reported_end = end;
    let mut con = s
        .attach_console(&vm, &dev, Mode::Read, StartAt::Offset(from))
        .await?;
    file.seek(SeekFrom::Start(from))?;
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last_shown = Instant::now();
    let (mut written, mut gaps, mut gap_bytes) = (0u64, 0u64, 0u64);
    // The received chunks are written as they came, in 1 MiB vectored writes (no copy).
    let mut out = ChunkWriter::new(file);
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
                if out.queued() > 0 {
                    out.flush()?;
                }
                report_link(link.check(), con.offset());
                continue;
            }
            _ = &mut interrupted => break,
        };
        match item {
            Some(ConsoleItem::Chunk { bytes, .. }) => {
                written += bytes.len() as u64;
                out.push(bytes)?;
            }
            Some(ConsoleItem::Gap {
                offset,
                len,
                reason,
            }) => {
                // Checked before the hole is made: a gap the server cannot account for would
                // otherwise become a sparse file of any size.
                let gap_end = offset + len;
                if gap_end > reported_end {
                    reported_end = s
                        .list()
                        .await?
                        .into_iter()
                        .find(|d| d.vm == vm && d.device == dev)
                        .map_or(0, |d| d.journal_end);
                }
                if gap_end > reported_end {
                    anyhow::bail!(
                        "the server sent a gap of {len} bytes at offset {offset}, beyond the end \
                         of {device}'s journal it reports ({reported_end}); the capture stops \
                         at offset {offset}"
                    );
                }
                gaps += 1;
                gap_bytes += len;
                eprintln!(
                    "ringcast: gap at offset {offset}: {len} bytes missing ({}); left as a hole",
                    reason.name()
                );
                out.seek_to(offset + len)?;
            }
            None => break,
        }
        if progress && last_shown.elapsed() > Duration::from_millis(500) {
            last_shown = Instant::now();
            let rate = written as f64 / started.elapsed().as_secs_f64() / 1e6;
            eprint!("\r{written} bytes, {rate:.1} MB/s, {gaps} gaps   ");
        }
    }
    let file = out.into_inner()?;
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
    Ok(if gaps > 0 {
        Exit::CaptureHadGaps
    } else {
        Exit::Success
    })
}
