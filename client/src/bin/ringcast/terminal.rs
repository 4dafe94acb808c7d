//! The local terminal in raw mode for `ringcast console`.

use anyhow::Context;

/// Puts the terminal in raw mode and restores it when dropped (also on panic).
pub struct RawTerminal;

impl RawTerminal {
    pub fn enable() -> anyhow::Result<Self> {
        crossterm::terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        Ok(RawTerminal)
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}
