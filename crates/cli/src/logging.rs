//! Logs go to stderr: human-readable by default, one JSON object per line with `--logopt json`.
//! Colour only on a terminal, and never with `NO_COLOR` set. A log line that cannot be
//! written (a closed pipe, a journald or log shipper that went away) is dropped: logging
//! never stops the work.
use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;

use crate::args::Level;

pub(crate) fn init(level: Level, logopt: &[String]) {
    // REGFERRY_LOG (EnvFilter syntax) refines -v, e.g. REGFERRY_LOG=regferry_registry=trace.
    let filter = EnvFilter::try_from_env("REGFERRY_LOG")
        .unwrap_or_else(|_| EnvFilter::new(level.as_filter()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .with_ansi(colour())
        .with_target(false);
    if logopt.iter().any(|o| o == "json") {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Whether logs are coloured: stderr is a terminal, and `NO_COLOR` (no-color.org) is unset
/// or empty.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Standard error, where a failed write is a dropped line, not an error (tracing-subscriber
/// reports a failed write with `eprintln!`, which panics on a closed stderr).
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}
