//! Errors and warnings that point at the place in the file they are about.
use std::fmt;

use regferry_registry::{PlatformError, ReferenceError};

use crate::duration::DurationError;
use crate::schedule::ScheduleError;
use crate::semver::RangeError;
use crate::template;

/// Which list an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `sync[i]`.
    Sync,
    /// `creds[i]`.
    Creds,
}

impl Section {
    /// The list's key in the file.
    pub fn key(self) -> &'static str {
        match self {
            Section::Sync => "sync",
            Section::Creds => "creds",
        }
    }
}

/// An entry of `sync` or `creds`, with what identifies it to a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRef {
    /// The list.
    pub section: Section,
    /// The index in the list, from 0 as in regsync's messages.
    pub index: usize,
    /// The entry's `source` (sync) or `registry` (creds), when known.
    pub label: Option<String>,
}

/// Where something in a config file is: file, line and column, entry, field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// The file as the user named it (`-` is shown as `<stdin>`).
    pub file: String,
    /// 1-based line, when the parser knows it.
    pub line: Option<u64>,
    /// 1-based column, when the parser knows it.
    pub column: Option<u64>,
    /// The entry the problem is in.
    pub entry: Option<EntryRef>,
    /// The field path inside the entry or document, e.g. `tags.allow[0]`.
    pub field: Option<String>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line.filter(|l| *l > 0) {
            write!(f, ":{line}")?;
            if let Some(col) = self.column.filter(|c| *c > 0) {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(e) = &self.entry {
            let (list, key) = match e.section {
                Section::Sync => ("sync", "source"),
                Section::Creds => ("creds", "registry"),
            };
            write!(f, "{list}[{}]", e.index)?;
            if let Some(label) = &e.label {
                write!(f, " ({key} {label:?})")?;
            }
            f.write_str(": ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        Ok(())
    }
}

/// A configuration that cannot be used, and where the problem is; with the file's other
/// problems, when loading found several (each entry is checked, whatever the others hold).
#[derive(Debug)]
pub struct ConfigError {
    /// Where.
    pub at: Box<Position>,
    /// What.
    pub kind: Box<ErrorKind>,
    /// The file's further errors, in file order, at most [`MAX_ERRORS`] in all.
    pub more: Vec<ConfigError>,
    /// Errors found beyond [`MAX_ERRORS`], not kept.
    pub omitted: usize,
}

/// Errors reported from one file, at most.
pub(crate) const MAX_ERRORS: usize = 20;

impl ConfigError {
    pub(crate) fn new(at: Position, kind: ErrorKind) -> Self {
        ConfigError {
            at: Box::new(at),
            kind: Box::new(kind),
            more: Vec::new(),
            omitted: 0,
        }
    }

    /// One error for all of `errors` (in file order, the same error once), or `None`.
    pub(crate) fn all(mut errors: Vec<ConfigError>) -> Option<ConfigError> {
        // Stable: errors without a place keep their order, after the placed ones.
        errors.sort_by_key(|e| (e.at.line.is_none(), e.at.line, e.at.column));
        let mut seen = std::collections::HashSet::new();
        let mut kept: Vec<ConfigError> = Vec::new();
        let mut omitted = 0;
        for e in errors {
            if !seen.insert(e.to_string()) {
                continue;
            }
            if kept.len() < MAX_ERRORS {
                kept.push(e);
            } else {
                omitted += 1;
            }
        }
        if kept.is_empty() {
            return None;
        }
        let mut first = kept.remove(0);
        first.more = kept;
        first.omitted = omitted;
        Some(first)
    }

    /// How many errors were found.
    pub fn count(&self) -> usize {
        1 + self.more.len() + self.omitted
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.at, self.kind)?;
        for e in &self.more {
            write!(f, "\n{}{}", e.at, e.kind)?;
        }
        if self.omitted > 0 {
            write!(f, "\n… and {} more errors", self.omitted)?;
        }
        Ok(())
    }
}

// No `source`: the message already says what the kind's cause says.
impl std::error::Error for ConfigError {}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file cannot be read.
    #[error("cannot read: {source}")]
    Read {
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid YAML, or a value of the wrong type.
    #[error("{message}")]
    Yaml {
        /// The parser's message.
        message: String,
    },
    /// `version` above 1.
    #[error("unsupported config version {version} (regferry reads version 1, as regsync does)")]
    UnsupportedVersion {
        /// The version given.
        version: i64,
    },
    /// A required field is absent or empty.
    #[error("is required")]
    Missing,
    /// `type` is none of image, repository, registry.
    #[error("unknown type {value:?} (expected image, repository or registry)")]
    UnknownType {
        /// The value given.
        value: String,
    },
    /// `tls` is none of enabled, insecure, disabled.
    #[error("unknown tls mode {value:?} (expected enabled, insecure or disabled)")]
    Tls {
        /// The value given.
        value: String,
    },
    /// A tag or repository pattern that does not compile.
    #[error("invalid regular expression {pattern:?}: {}", regex_reason(source))]
    Regex {
        /// The pattern.
        pattern: String,
        /// The compiler's error.
        source: Box<regex::Error>,
    },
    /// A `semverRange` entry that does not parse.
    #[error("{source}")]
    SemverRange {
        /// The range error.
        source: RangeError,
    },
    /// A bad `schedule`.
    #[error("{source}")]
    Schedule {
        /// The schedule error.
        source: ScheduleError,
    },
    /// A bad duration.
    #[error("{source}")]
    Duration {
        /// The duration error.
        source: DurationError,
    },
    /// An invalid image reference.
    #[error("{source}")]
    Reference {
        /// The reference error.
        source: ReferenceError,
    },
    /// A reference that does not fit where it is used.
    #[error("{value:?}: {reason}")]
    Endpoint {
        /// The value given (after template expansion).
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// An invalid platform.
    #[error("{source}")]
    Platform {
        /// The platform error.
        source: PlatformError,
    },
    /// A template that does not parse or cannot be expanded.
    #[error("template: {source}")]
    Template {
        /// The template error.
        source: template::Error,
    },
    /// A number out of its range.
    #[error("{value} is out of range: {expected}")]
    OutOfRange {
        /// The value given.
        value: String,
        /// The allowed range.
        expected: &'static str,
    },
    /// A value that does not parse as what the field takes.
    #[error("{value:?} is not {expected}")]
    Invalid {
        /// The value given.
        value: String,
        /// What the field takes.
        expected: &'static str,
    },
    /// A key in a place where it has no meaning.
    #[error("{reason}")]
    Misplaced {
        /// Where it belongs.
        reason: &'static str,
    },
    /// One field needs another.
    #[error("needs {other} as well")]
    Incomplete {
        /// The field that is missing.
        other: &'static str,
    },
}

/// A problem that does not stop regferry, reported once at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where.
    pub at: Position,
    /// What.
    pub kind: WarningKind,
}

/// What a warning is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// A key regsync would ignore silently; often a typo.
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A key regsync deprecated.
    Deprecated {
        /// What to use instead.
        instead: &'static str,
    },
    /// A key that is read but has no effect, and why.
    Ignored {
        /// Why.
        reason: &'static str,
    },
    /// `fastCopy` is read as `fastCheck` (regsync's parser ignores `fastCopy`).
    FastCopyAlias,
    /// A later `creds` entry for the same registry replaces an earlier one.
    DuplicateCreds,
    /// A `creds` registry written with a path after its host.
    RegistryPath {
        /// The host the creds are for.
        host: String,
        /// The path, which scopes nothing.
        path: String,
    },
    /// A tag or repository pattern that loads, but likely does not mean what it says.
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// What it does, and what to write instead.
        reason: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.at, self.kind)
    }
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WarningKind::UnknownKey { key } if key.rsplit('.').next().is_some_and(|k| k.starts_with("x-")) => {
                write!(f, "key `{key}` is ignored, as by regsync (an x- key is silent only at the top of the file)")
            }
            WarningKind::UnknownKey { key } => {
                write!(f, "unknown key `{key}` is ignored (regsync ignores it too; is it a typo?)")
            }
            WarningKind::Deprecated { instead } => write!(f, "deprecated, use {instead}"),
            WarningKind::Ignored { reason } => write!(f, "ignored: {reason}"),
            WarningKind::FastCopyAlias => f.write_str(
                "`fastCopy` is read as `fastCheck` (regsync's parser ignores `fastCopy`, regferry honours it)",
            ),
            WarningKind::DuplicateCreds => f.write_str("replaces an earlier creds entry for the same registry"),
            WarningKind::Pattern { pattern, reason } => write!(f, "pattern {pattern:?}: {reason}"),
            WarningKind::RegistryPath { host, path } => write!(
                f,
                "the path `/{path}` after the host scopes nothing: these creds are for every \
                 repository on {host}, as in regsync; only a credential helper is asked for the \
                 whole name (credHost)"
            ),
        }
    }
}

/// The regex crate's syntax errors span several lines (the pattern, a caret, the reason);
/// a config error is one line, and already quotes the pattern.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(
            || text.lines().next().unwrap_or_default().to_owned(),
            str::to_owned,
        )
}
