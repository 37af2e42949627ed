//! The `regferry` binary: parses flags, loads the configuration, runs the command, and maps
//! the outcome to a documented exit code. All logic lives in the library crates.
#![forbid(unsafe_code)]

mod args;
mod artifact;
mod logging;
mod server;
mod signals;
mod sync;
mod version;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use regferry_config::{Config, ConfigError, template::SystemHost};
use regferry_scheduler::Mode;

use args::{ArtifactCommand, Cli, Command};

/// Documented exit codes (README, docs/operations.md).
mod exit {
    /// A sync, or a part of it, failed; or the command cannot do its job.
    pub(crate) const FAILURE: u8 = 1;
    /// The command line or the configuration is invalid; nothing was contacted.
    pub(crate) const INVALID: u8 = 2;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbosity, &cli.logopt);
    match run(cli) {
        Ok(code) => code,
        // Whoever read the output has gone (`| head -1`): the command is done, quietly.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<ConfigFileError>().is_some()
            {
                exit::INVALID
            } else {
                exit::FAILURE
            };
            let _ = writeln!(std::io::stderr(), "regferry: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// Whether `e` is a write to a pipe whose reader has gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A file named on the command line that cannot be read (exit 2, like a bad config).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigFileError(String);

/// A command line that parsed but cannot be run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(&'static str);

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let path = cli.config.as_deref().ok_or(UsageError(
        "--config FILE is required (use - for standard input)",
    ))?;
    let loaded = regferry_config::load_file(path, &SystemHost)?;
    for w in loaded.warning_lines() {
        tracing::warn!("{w}");
    }
    Ok(loaded.config)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match &cli.command {
        Command::Version { format, .. } => {
            stdout.write_all(version::render(*format).as_bytes())?;
        }
        Command::Completion { shell, .. } => {
            // Generated in memory: clap_complete panics when its writer fails.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "regferry", &mut script);
            stdout.write_all(&script)?;
        }
        Command::Config => {
            let config = load(&cli)?;
            stdout
                .write_all(regferry_config::to_yaml(&config).as_bytes())
                .context("writing to stdout")?;
        }
        Command::Artifact {
            command:
                ArtifactCommand::List {
                    reference,
                    platform,
                    format,
                    plain_http,
                },
        } => {
            let config = if cli.config.is_some() {
                Some(load(&cli)?)
            } else {
                None
            };
            artifact::list(config, reference, platform.as_deref(), *format, *plain_http)?;
        }
        Command::Check { run, format } => {
            let config = load(&cli)?;
            let code = sync::run(config, Mode::Check, run.abort_on_error, *format)?;
            return Ok(ExitCode::from(code));
        }
        Command::Once {
            run,
            missing,
            format,
        } => {
            let config = load(&cli)?;
            let mode = Mode::Copy {
                missing_only: *missing,
            };
            let code = sync::run(config, mode, run.abort_on_error, *format)?;
            return Ok(ExitCode::from(code));
        }
        Command::Server {
            run,
            listen,
            webhook_token,
            webhook_token_file,
            grace,
            shard,
        } => {
            let config = load(&cli)?;
            let grace = regferry_config::duration::parse_go_duration(grace)
                .map_err(|_| UsageError("--grace takes a Go duration such as 30s"))?;
            let shard = *shard;
            let settings = server::Settings {
                listen: *listen,
                token: match webhook_token_file {
                    Some(path) => Some(
                        std::fs::read_to_string(path)
                            .map(|t| t.trim().to_owned())
                            .map_err(|e| {
                                ConfigFileError(format!(
                                    "--webhook-token-file {}: {e}",
                                    path.display()
                                ))
                            })?,
                    ),
                    None => webhook_token.clone(),
                },
                grace,
                shard,
                abort_on_error: run.abort_on_error,
                config_path: cli.config.clone().filter(|p| p.as_os_str() != "-"),
            };
            return Ok(ExitCode::from(server::run(config, settings)?));
        }
    }
    Ok(ExitCode::SUCCESS)
}
