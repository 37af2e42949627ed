//! `regferry version`.
use crate::args::Format;

/// `0.1.0 (commit abc123def456, x86_64-unknown-linux-gnu)`, also used by `--version`.
pub(crate) const SHORT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("REGFERRY_GIT_COMMIT"),
    ", ",
    env!("REGFERRY_TARGET"),
    ")"
);

pub(crate) fn render(format: Format) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let commit = env!("REGFERRY_GIT_COMMIT");
    let target = env!("REGFERRY_TARGET");
    match format {
        Format::Text => format!("regferry {version}\ncommit:   {commit}\ntarget:   {target}\n"),
        Format::Json => {
            let v = serde_json::json!({ "version": version, "commit": commit, "target": target });
            format!("{v}\n")
        }
    }
}
