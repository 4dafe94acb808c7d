//! The local terminal for `ringcast console`: raw mode while attached, and on leaving the
//! terminal put back as it was, whatever the guest did to it.

use std::io::{IsTerminal, Write};

use anyhow::Context;

/// Turns off what a guest may have turned on through its output and would otherwise stay
/// on in the user's terminal after `ringcast` exits: the alternate screen (1049, 1047,
/// 47), mouse reporting (9, 1000, 1002, 1003) and its encodings (1005, 1006, 1015), focus
/// events (1004), bracketed paste (2004), application cursor keys (1) and keypad (`ESC >`),
/// a hidden cursor (25), colours and attributes (`ESC [0m`).
pub const RESET_GUEST_MODES: &str = "\x1b[?1049l\x1b[?1047l\x1b[?47l\
\x1b[?9l\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1005l\x1b[?1006l\x1b[?1015l\x1b[?1004l\
\x1b[?2004l\x1b[?1l\x1b>\x1b[?25h\x1b[0m";

/// While it lives: the terminal in raw mode (when `raw`). When dropped (also on panic, and
/// on SIGTERM or SIGHUP, which end the console loop normally): raw mode off and the guest's
/// terminal modes reset (when stdout is a terminal).
pub struct ConsoleTerminal {
    raw: bool,
}

impl ConsoleTerminal {
    pub fn enter(raw: bool) -> anyhow::Result<Self> {
        if raw {
            crossterm::terminal::enable_raw_mode()
                .context("cannot put the terminal in raw mode")?;
        }
        Ok(ConsoleTerminal { raw })
    }
}

impl Drop for ConsoleTerminal {
    fn drop(&mut self) {
        let mut out = std::io::stdout();
        if out.is_terminal() {
            let _ = out.write_all(RESET_GUEST_MODES.as_bytes());
            let _ = out.flush();
        }
        if self.raw {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}
