//! Logs go to stderr: human-readable by default, one JSON object per line with `--logopt json`.
use tracing_subscriber::EnvFilter;

use crate::args::Level;

pub(crate) fn init(level: Level, logopt: &[String]) {
    // REGFERRY_LOG (EnvFilter syntax) refines -v, e.g. REGFERRY_LOG=regferry_registry=trace.
    let filter = EnvFilter::try_from_env("REGFERRY_LOG")
        .unwrap_or_else(|_| EnvFilter::new(level.as_filter()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if logopt.iter().any(|o| o == "json") {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
