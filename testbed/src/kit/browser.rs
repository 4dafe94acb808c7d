//! A real browser for the web client's tests: Debian's Chromium, headless, driven over the
//! DevTools protocol (a WebSocket speaking JSON; only the few commands the tests need).
//!
//! Chromium runs with a fresh profile in a temporary directory, QUIC left on (WebTransport
//! needs it), nothing in the background (no updates, sync or first-run pages), audio
//! allowed without a gesture, and `--no-sandbox` when run as root (Chromium refuses root
//! otherwise). It is killed when the [`Browser`] is dropped.
//!
//! `scripts/install-build-deps.sh chromium` installs it (scripts/test.sh does).

use std::io::BufRead;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// The Chromium binary: `$RINGCAST_CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium() -> Result<PathBuf, String> {
    let p = std::env::var_os("RINGCAST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "the web client's tests need Chromium at {} (set RINGCAST_CHROMIUM, or install it: \
             scripts/install-build-deps.sh chromium)",
            p.display()
        ))
    }
}

/// A headless Chromium and its DevTools connection.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Where downloads go.
    pub downloads: PathBuf,
    _profile: tempfile::TempDir,
}

/// A tab (a DevTools session attached to a page).
#[derive(Debug, Clone)]
pub struct Tab {
    session: String,
    target: String,
}

impl Browser {
    /// Starts Chromium; `extra` are more command-line switches.
    pub fn launch(extra: &[&str]) -> Result<Browser, String> {
        let bin = chromium()?;
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&bin);
        cmd.args([
            "--headless",
            "--remote-debugging-port=0",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if rustix::process::geteuid().is_root() {
            cmd.arg("--no-sandbox");
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr.
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !sent {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        let _ = tx.send(url.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                return Err("Chromium did not open its DevTools port within 30 s".into());
            }
        };
        let hostport = url
            .strip_prefix("ws://")
            .and_then(|r| r.split('/').next())
            .ok_or_else(|| format!("unexpected DevTools address {url}"))?
            .to_owned();
        let tcp = TcpStream::connect(&hostport).map_err(|e| format!("{hostport}: {e}"))?;
        let (ws, _) = tungstenite::client(url.as_str(), tcp)
            .map_err(|e| format!("DevTools handshake with {url}: {e}"))?;
        let mut b = Browser {
            child,
            ws,
            next_id: 1,
            downloads,
            _profile: profile,
        };
        let dl = b.downloads.display().to_string();
        b.call(
            None,
            "Browser.setDownloadBehavior",
            json!({ "behavior": "allow", "downloadPath": dl }),
        )?;
        Ok(b)
    }

    /// Sends a command and waits for its answer (events in between are dropped).
    pub fn call(
        &mut self,
        tab: Option<&Tab>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(t) = tab {
            msg["sessionId"] = json!(t.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .map_err(|e| format!("DevTools {method}: {e}"))?;
        loop {
            let m = self
                .ws
                .read()
                .map_err(|e| format!("DevTools {method}: {e}"))?;
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    return Err(format!("DevTools {method}: {e}"));
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// Opens `url` in a new tab.
    pub fn open(&mut self, url: &str) -> Result<Tab, String> {
        let t = self.call(None, "Target.createTarget", json!({ "url": url }))?;
        let target = t["targetId"].as_str().ok_or("no targetId")?.to_owned();
        let a = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": &target, "flatten": true }),
        )?;
        let session = a["sessionId"].as_str().ok_or("no sessionId")?.to_owned();
        let tab = Tab { session, target };
        self.call(Some(&tab), "Runtime.enable", json!({}))?;
        Ok(tab)
    }

    /// Closes the tab (its page, and the connections it had open).
    pub fn close(&mut self, tab: Tab) -> Result<(), String> {
        self.call(
            None,
            "Target.closeTarget",
            json!({ "targetId": tab.target }),
        )
        .map(drop)
    }

    /// Evaluates `expr` in the tab (awaiting a promise); its value as JSON, or the
    /// exception's text.
    pub fn eval(&mut self, tab: &Tab, expr: &str) -> Result<Value, String> {
        let r = self.call(
            Some(tab),
            "Runtime.evaluate",
            json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!(
                "{expr}: {}",
                e["exception"]["description"]
                    .as_str()
                    .unwrap_or(&e.to_string())
            ));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Evaluates `expr` until it is truthy; its last value on timeout is in the error.
    pub fn wait_for(
        &mut self,
        tab: &Tab,
        what: &str,
        expr: &str,
        timeout: Duration,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(tab, expr);
            if let Ok(v) = &v {
                if !(v.is_null() || v == &json!(false) || v == &json!("") || v == &json!(0)) {
                    return Ok(v.clone());
                }
            }
            if Instant::now() > deadline {
                let status = self
                    .eval(tab, "window.ringcast && ringcast.status()")
                    .unwrap_or_default();
                return Err(format!(
                    "{what}: not within {timeout:?}; last {v:?}; page status {status}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Opens the page at `url` and waits until it has connected to ringcastd.
    pub fn open_connected(&mut self, url: &str, timeout: Duration) -> Result<Tab, String> {
        let tab = self.open(url)?;
        self.wait_for(
            &tab,
            "the page connected",
            "window.ringcast && ringcast.connected()",
            timeout,
        )?;
        Ok(tab)
    }

    /// Waits until the page's device list shows `name` (`VM/DEVICE`).
    pub fn wait_listed(&mut self, tab: &Tab, name: &str, timeout: Duration) -> Result<(), String> {
        let expr = format!(
            "ringcast.refresh().then(() => ringcast.devices().some(d => d.vm + '/' + d.device === {name:?}))"
        );
        self.wait_for(tab, &format!("{name} listed"), &expr, timeout)
            .map(drop)
    }

    /// Types `text` into the focused element, as a keyboard's text input does.
    pub fn type_text(&mut self, tab: &Tab, text: &str) -> Result<(), String> {
        self.call(Some(tab), "Input.insertText", json!({ "text": text }))
            .map(|_| ())
    }

    /// Types `text` and then a line feed (Ctrl+J: a terminal's Enter sends a carriage
    /// return, and the test guest's lines end with a line feed).
    pub fn type_line(&mut self, tab: &Tab, text: &str) -> Result<(), String> {
        self.type_text(tab, text)?;
        for ty in ["rawKeyDown", "keyUp"] {
            self.call(
                Some(tab),
                "Input.dispatchKeyEvent",
                json!({ "type": ty, "key": "j", "code": "KeyJ", "modifiers": 2,
                        "windowsVirtualKeyCode": 74, "nativeVirtualKeyCode": 74 }),
            )?;
        }
        Ok(())
    }

    /// A PNG of the tab's page.
    pub fn screenshot(&mut self, tab: &Tab, path: &Path) -> Result<(), String> {
        self.call(
            Some(tab),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 1100, "height": 760, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        let r = self.call(
            Some(tab),
            "Page.captureScreenshot",
            json!({ "format": "png" }),
        )?;
        let b64 = r["data"].as_str().ok_or("no screenshot data")?;
        let png = base64_decode(b64).ok_or("bad screenshot data")?;
        std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | u32::from(val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}
