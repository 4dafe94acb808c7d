//! `ringcast qmp`: one QMP command to a QEMU monitor on a console device, its reply on
//! stdout.

use std::time::Duration;

use anyhow::{bail, Context};
use client::{ConsoleItem, Mode, Session, StartAt};

use crate::args::split_device;
use crate::exit::Exit;

/// `ringcast qmp`: negotiates capabilities, sends `command`, prints the reply.
pub async fn qmp(
    s: &Session,
    device: &str,
    command: &str,
    timeout: Duration,
) -> anyhow::Result<Exit> {
    let (vm, dev) = split_device(device)?;
    let mut cmd: serde_json::Value =
        serde_json::from_str(command).context("the command is not valid JSON")?;
    let Some(fields) = cmd.as_object_mut() else {
        bail!("the command must be a JSON object, like {{\"execute\":\"query-status\"}}");
    };
    // Replies are matched by `id`: a monitor shared with others (or a reply left over from
    // an earlier client) may have other replies in flight. The command's own id is kept;
    // one added here is taken off the printed reply.
    let tag = format!(
        "ringcast-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let caps_id = serde_json::Value::String(format!("{tag}-caps"));
    let added_id = !fields.contains_key("id");
    if added_id {
        fields.insert("id".into(), serde_json::Value::String(format!("{tag}-cmd")));
    }
    let cmd_id = fields["id"].clone();
    let mut con = s
        .attach_console(&vm, &dev, Mode::Write, StartAt::Now)
        .await?;
    let mut lines = LineReader::default();
    let result = tokio::time::timeout(timeout, async {
        // The greeting was sent when the monitor opened, possibly long ago; negotiate
        // capabilities either way. A monitor already out of negotiation mode answers
        // with an error, which is fine.
        let caps = serde_json::json!({"execute": "qmp_capabilities", "id": caps_id});
        let mut out = serde_json::to_vec(&caps)?;
        out.extend_from_slice(b"\r\n");
        con.write(&out).await?;
        lines.reply_to(&mut con, &caps_id).await?;
        let mut out = serde_json::to_vec(&cmd)?;
        out.extend_from_slice(b"\r\n");
        con.write(&out).await?;
        lines.reply_to(&mut con, &cmd_id).await
    })
    .await
    .with_context(|| format!("no QMP reply from {device} within {} s", timeout.as_secs()))??;
    let mut result = result;
    if added_id {
        if let Some(o) = result.as_object_mut() {
            o.remove("id");
        }
    }
    println!("{result}");
    con.detach().await;
    Ok(if result.get("error").is_some() {
        Exit::Error
    } else {
        Exit::Success
    })
}

/// Splits console output into JSON lines, skipping QMP events and greetings.
#[derive(Default)]
struct LineReader {
    buf: Vec<u8>,
}

impl LineReader {
    /// The reply (`return` or `error`) whose `id` is `id`; other replies are skipped.
    async fn reply_to(
        &mut self,
        con: &mut client::ConsoleStream,
        id: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        loop {
            let v = self.next_json(con).await?;
            let is_reply = v.get("return").is_some() || v.get("error").is_some();
            if is_reply && v.get("id") == Some(id) {
                return Ok(v);
            }
            tracing::debug!(reply = %v, "a QMP reply to another command skipped");
        }
    }

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
