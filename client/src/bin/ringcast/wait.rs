//! `--wait`: waiting for a device that does not exist yet (its VM has not started).

use std::time::{Duration, Instant};

use client::Session;

use crate::args::split_device;
use crate::duration::show_duration;
use crate::exit::Exit;

/// How often --wait asks the server for its device list.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// Polls the server's device list until `vm/dev` is in it. Says once on stderr that it
/// waits; `None` when `timeout` passed first.
pub async fn wait_for_device(
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
pub fn wait_gave_up(device: &str, timeout: Option<Duration>) -> Exit {
    eprintln!(
        "ringcast: {device} did not appear within {}; giving up (`ringcast list` shows the \
         devices you may use: a device you are not authorized for looks missing too)",
        timeout.map(show_duration).unwrap_or_default()
    );
    Exit::WaitTimedOut
}
