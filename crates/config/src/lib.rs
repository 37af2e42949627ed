//! regferry's configuration: a regsync YAML file, read as regsync reads it, compiled into a
//! validated [`Config`].
//!
//! Two phases, as in ripgrep's lowargs → hiargs: [`raw`](self) serde structs with regsync's
//! camelCase keys and tri-state options, then [`Config`] with defaults applied, templates
//! expanded, regexes, semver ranges, schedules and references parsed. Nothing later parses
//! again, so `regferry check` and startup fail on a bad config, never a sync in progress.
//!
//! ```
//! use regferry_config::{load_str, template::SystemHost};
//! let yaml = "sync:\n- source: busybox:1.36\n  target: localhost:5000/library/busybox:1.36\n  type: image\n";
//! let loaded = load_str(yaml, "example.yaml", &SystemHost).unwrap();
//! assert_eq!(loaded.config.sync[0].source.to_string(), "docker.io/library/busybox:1.36");
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod duration;
mod error;
mod filter;
mod model;
mod parse;
mod raw;
mod resolve;
pub mod schedule;
pub mod semver;
/// The Go `text/template` engine regsync's fields are written in (its own crate).
pub use regferry_gotemplate as template;
mod view;

use std::io::Read;
use std::path::Path;

pub use error::{ConfigError, EntryRef, ErrorKind, Position, Section, Warning, WarningKind};
pub use filter::{Pattern, ReferrerFilter, RepoFilter, TagFilter, TagSet};
pub use model::{
    ADAPTIVE_REQ_CONCURRENT, BackupTemplate, Config, DEFAULT_BLOB_CHUNK, DEFAULT_CRED_EXPIRE,
    DEFAULT_MEDIA_TYPES, DEFAULT_PARALLEL, DEFAULT_TARGET_RECHECK, Endpoint, Globals, Host,
    LimitSettings, Limits, MIN_RATELIMIT_RETRY, MaxDelete, Prune, RateLimit, RefFields, Require,
    SignatureKey, SyncEntry, SyncKind, TlsMode, Trigger, default_entry_name,
};
pub use resolve::Loaded;
pub use view::to_yaml;

/// Loads a config file; `-` reads standard input.
pub fn load_file(path: &Path, host: &dyn template::Host) -> Result<Loaded, ConfigError> {
    let (label, text) = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| read_error("<stdin>", source))?;
        ("<stdin>".to_owned(), text)
    } else {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| read_error(&label, source))?;
        (label, text)
    };
    load_str(&text, &label, host)
}

/// Loads a config from text; `file` names it in errors.
pub fn load_str(text: &str, file: &str, host: &dyn template::Host) -> Result<Loaded, ConfigError> {
    let parsed = parse::parse(text, file)?;
    resolve::resolve(parsed, text, file, host)
}

fn read_error(file: &str, source: std::io::Error) -> ConfigError {
    ConfigError::new(
        Position {
            file: file.to_owned(),
            ..Position::default()
        },
        ErrorKind::Read { source },
    )
}
