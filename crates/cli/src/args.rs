//! Command-line flags. `-c/--config` is accepted before or after the subcommand, as regsync
//! accepted it before v0.8.3 (`regsync -c f once`) and after (`regsync once -c f`).
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Mirror container images and their OCI referrers between registries and OCI layouts.
/// Reads regsync's configuration format.
#[derive(Debug, Parser)]
#[command(name = "regferry", version = crate::version::SHORT, propagate_version = true, term_width = 100)]
#[command(
    after_help = "Exit codes: 0 success, 1 sync or runtime failure, 2 invalid command line or configuration, 3 check found drift.\n\
See docs/configuration.md for every configuration key."
)]
pub(crate) struct Cli {
    /// Configuration file (regsync format); `-` reads standard input.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        value_name = "FILE",
        env = "REGFERRY_CONFIG"
    )]
    pub(crate) config: Option<PathBuf>,

    /// Log level: trace, debug, info, warn or error.
    #[arg(
        short = 'v',
        long = "verbosity",
        global = true,
        value_name = "LEVEL",
        default_value = "info"
    )]
    pub(crate) verbosity: Level,

    /// Log option; `json` writes one JSON object per line (other values are ignored, as in regsync).
    #[arg(long = "logopt", global = true, value_name = "OPT")]
    pub(crate) logopt: Vec<String>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Dry run: show what would be copied; nothing is written. Exit code 3 when the
    /// targets differ from the sources.
    Check {
        #[command(flatten)]
        run: RunArgs,
        /// Output: a table, or the full report as JSON.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Run every sync entry once, then exit.
    Once {
        #[command(flatten)]
        run: RunArgs,
        /// Only copy tags that are missing on the target; leave existing tags alone.
        #[arg(long)]
        missing: bool,
        /// Output: a table, or the full report as JSON.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Run as a daemon, syncing each entry on its interval or schedule.
    Server {
        #[command(flatten)]
        run: RunArgs,
        /// Serve /healthz, /readyz, /metrics, webhooks and triggers on this address
        /// (e.g. 127.0.0.1:8080 or 0.0.0.0:8080); off when not given.
        #[arg(long, value_name = "ADDR", env = "REGFERRY_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Secret in webhook URLs (/v1/webhooks/dockerhub/<token>) and the bearer token for
        /// POST /v1/sync/<entry>; without it those endpoints are off.
        #[arg(
            long,
            value_name = "TOKEN",
            env = "REGFERRY_WEBHOOK_TOKEN",
            hide_env_values = true
        )]
        webhook_token: Option<String>,
        /// Read the webhook token from this file (e.g. a systemd credential or a mounted
        /// Secret), so that it appears in no process listing or environment.
        #[arg(
            long,
            value_name = "FILE",
            env = "REGFERRY_WEBHOOK_TOKEN_FILE",
            conflicts_with = "webhook_token"
        )]
        webhook_token_file: Option<std::path::PathBuf>,
        /// How long copies in flight may finish after SIGTERM (Go duration).
        #[arg(long, value_name = "DURATION", default_value = "30s")]
        grace: String,
        /// Run only this replica's share of the entries: I/N, from 0 (e.g. from a
        /// StatefulSet ordinal).
        #[arg(long, value_name = "I/N", env = "REGFERRY_SHARD", value_parser = parse_shard)]
        shard: Option<(u32, u32)>,
    },
    /// Print the resolved configuration (defaults applied, secrets masked).
    Config,
    /// Inspect OCI artifacts (referrers: SBOMs, signatures, provenance).
    Artifact {
        #[command(subcommand)]
        command: ArtifactCommand,
    },
    /// Print version, git commit and target.
    Version {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        unused: Unused,
    },
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
        #[command(flatten)]
        unused: Unused,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ArtifactCommand {
    /// List the referrers of an image: of the index and each platform manifest.
    List {
        /// The image: `registry/repo:tag`, `…@sha256:…`, or `ocidir://path[:tag]`.
        reference: String,
        /// Only this platform's manifest, e.g. `linux/arm64`.
        #[arg(long)]
        platform: Option<String>,
        /// Output: a table, or JSON.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// Speak plain HTTP to the registry (with no `creds` entry saying `tls: disabled`).
        #[arg(long)]
        plain_http: bool,
    },
}

/// `--shard I/N`: this replica's number from 0, and the count.
fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let number = |part: &str, what: &str| {
        part.trim().parse::<u32>().map_err(|_| {
            format!("expected I/N such as 0/3, where {what} is a whole number (got {part:?}; is the pod-index label missing?)")
        })
    };
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| "expected I/N such as 0/3".to_owned())?;
    let (i, n) = (number(i, "I")?, number(n, "N")?);
    if n == 0 || i >= n {
        return Err(format!("I must be below N, and N above 0 (got {i}/{n})"));
    }
    Ok((i, n))
}

/// The global flags, accepted but hidden where they mean nothing (`version`, `completion`):
/// a subcommand that has an argument of the same name does not get the global one.
#[derive(Debug, Args)]
pub(crate) struct Unused {
    #[arg(short = 'c', long = "config", hide = true)]
    config: Option<PathBuf>,
    #[arg(short = 'v', long = "verbosity", hide = true)]
    verbosity: Option<Level>,
    #[arg(long = "logopt", hide = true)]
    logopt: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Stop at the first error instead of continuing with the other images.
    #[arg(long)]
    pub(crate) abort_on_error: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub(crate) fn as_filter(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}
