//! A minimal QMP client for the real-QEMU tests: connects to QEMU's `-qmp unix:PATH`
//! socket, negotiates capabilities and runs commands, skipping asynchronous events.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A connected, negotiated QMP session.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to `path`, waiting up to `timeout` for QEMU to create the socket, reads the
    /// greeting and enters command mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, String> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(format!("QMP socket {}: {e}", path.display())),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.line()?;
        if !greeting.contains("\"QMP\"") {
            return Err(format!("no QMP greeting: {greeting}"));
        }
        qmp.execute("qmp_capabilities", "{}")?;
        Ok(qmp)
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QEMU closed the QMP connection".into()),
            Ok(_) => Ok(line),
            Err(e) => Err(format!("reading QMP: {e}")),
        }
    }

    /// Runs `command` with the JSON object `arguments`; returns the reply line (a `return`
    /// or an `error`), skipping events.
    pub fn call(&mut self, command: &str, arguments: &str) -> Result<String, String> {
        let msg = format!("{{\"execute\":\"{command}\",\"arguments\":{arguments}}}\n");
        self.writer
            .write_all(msg.as_bytes())
            .map_err(|e| format!("writing QMP: {e}"))?;
        loop {
            let line = self.line()?;
            if line.contains("\"return\"") || line.contains("\"error\"") {
                return Ok(line);
            }
        }
    }

    /// Runs `command` and fails on an `error` reply.
    pub fn execute(&mut self, command: &str, arguments: &str) -> Result<String, String> {
        let reply = self.call(command, arguments)?;
        if reply.contains("\"error\"") {
            return Err(format!("{command} failed: {reply}"));
        }
        Ok(reply)
    }
}
