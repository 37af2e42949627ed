//! Errors of the registry layer. Decide by type, not text: retries and exit codes use
//! [`Error::is_retryable`], [`Error::is_not_found`] and [`Error::is_rate_limited`] only.
use std::path::PathBuf;
use std::time::Duration;

use crate::digest::Digest;

/// What went wrong talking to a registry or an OCI layout.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry answered with an unexpected HTTP status.
    #[error("{method} {url}: HTTP {status}{}", fmt_detail(.code, .message))]
    Status {
        /// Request method.
        method: String,
        /// Request URL (without credentials or query secrets).
        url: String,
        /// HTTP status code.
        status: u16,
        /// The registry's error code (`MANIFEST_UNKNOWN`, `DENIED`, …), when it sent one.
        code: Option<String>,
        /// The registry's error message, when it sent one.
        message: Option<String>,
        /// `Retry-After`, when the registry sent one.
        retry_after: Option<Duration>,
    },
    /// The connection failed (refused, reset, timed out, TLS).
    #[error("{method} {url}: {reason}")]
    Transport {
        /// Request method.
        method: String,
        /// Request URL.
        url: String,
        /// The transport error, with its causes.
        reason: String,
        /// Whether trying again may help (connection errors) or not (a bad certificate).
        retryable: bool,
    },
    /// Logging in failed.
    #[error("authentication to {registry} failed: {reason}")]
    Auth {
        /// The registry.
        registry: String,
        /// Why.
        reason: String,
    },
    /// A manifest, blob or tag does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked up (`ghcr.io/o/app:1.0`, `blob sha256:…`).
        what: String,
    },
    /// Content did not hash to its digest.
    #[error("content of {expected} hashes to {actual}: corrupt or truncated transfer")]
    DigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// Content had the wrong length.
    #[error("content of {digest} is {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// The content's digest.
        digest: Digest,
        /// The size the descriptor gave.
        expected: u64,
        /// The size that arrived (so far).
        actual: u64,
    },
    /// A manifest that cannot be understood.
    #[error("{reference}: invalid manifest: {reason}")]
    InvalidManifest {
        /// The manifest's reference.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// The registry broke the distribution protocol (a missing `Location`, a bad `Link`).
    #[error("{what}: {reason}")]
    Protocol {
        /// The request or object.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// A digest algorithm this build cannot verify.
    #[error("digest algorithm {algorithm} is not supported")]
    UnsupportedDigest {
        /// The algorithm.
        algorithm: String,
    },
    /// A file in an OCI layout could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TLS settings that cannot be used (a bad CA or client certificate).
    #[error("TLS settings for {registry}: {reason}")]
    Tls {
        /// The registry.
        registry: String,
        /// What is wrong.
        reason: String,
    },
    /// A name (tag, repository, manifest reference) that breaks the distribution grammar,
    /// refused before it reaches a URL or a file. Registries never need such names, so one
    /// is hostile or broken.
    #[error("refusing {kind} {name:?}: not a valid {kind} (distribution grammar)")]
    InvalidName {
        /// `tag`, `repository` or `manifest reference`.
        kind: &'static str,
        /// The name, cut to 200 characters.
        name: String,
    },
    /// The operation was cancelled (shutdown).
    #[error("cancelled")]
    Cancelled,
    /// One error shared by every caller that waited on the same work (a blob copied once
    /// for several images). It answers every `is_*` question as the original does.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
}

/// Text a registry chose (an error's code or message), made safe to print: control
/// characters (escape sequences that drive a terminal, newlines that forge log lines) and
/// bidirectional overrides are shown as `\u{..}` escapes, and it is cut to `max` characters
/// (counted before escaping).
pub(crate) fn printable(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        // Bidirectional marks and overrides reorder what is shown; line and paragraph
        // separators break lines in some viewers.
        let bidi = matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        );
        if c.is_control() || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

fn fmt_detail(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" {c}: {m}"),
        (Some(c), None) => format!(" {c}"),
        (None, Some(m)) => format!(": {m}"),
        (None, None) => String::new(),
    }
}

impl Error {
    /// Whether the same request may succeed if tried again: connection errors, 408, 429,
    /// 500, 502, 503, 504, and content that arrived corrupt or short.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Shared(e) => e.is_retryable(),
            Error::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            Error::Transport { retryable, .. } => *retryable,
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => true,
            _ => false,
        }
    }

    /// Whether the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.original(),
            Error::NotFound { .. } | Error::Status { status: 404, .. }
        )
    }

    /// Whether the registry said "too many requests".
    pub fn is_rate_limited(&self) -> bool {
        matches!(self.original(), Error::Status { status: 429, .. })
    }

    /// Whether credentials were refused.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self.original(),
            Error::Auth { .. }
                | Error::Status {
                    status: 401 | 403,
                    ..
                }
        )
    }

    /// Whether the work was cancelled (a shutdown), not failed.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.original(), Error::Cancelled)
    }

    /// How long the registry asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.original() {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// This error once for each of `n` places (the targets of one shared read or copy),
    /// shared, so that each keeps its kind.
    pub fn for_each<T>(self, n: usize) -> Vec<Result<T>> {
        let e = std::sync::Arc::new(self);
        (0..n).map(|_| Err(Error::Shared(e.clone()))).collect()
    }

    /// The error itself, or the one a [`Error::Shared`] holds.
    pub fn original(&self) -> &Error {
        match self {
            Error::Shared(e) => e.original(),
            e => e,
        }
    }

    pub(crate) fn invalid_name(kind: &'static str, name: &str) -> Error {
        Error::InvalidName {
            kind,
            name: name.chars().take(200).collect(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Results of the registry layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_text_is_escaped_and_cut() {
        assert_eq!(printable("denied", 10), "denied");
        assert_eq!(
            printable("a\u{1b}[2J\r\nb\u{202e}c", 100),
            "a\\u{1b}[2J\\u{d}\\u{a}b\\u{202e}c"
        );
        assert_eq!(printable("unicode ✓ stays", 100), "unicode ✓ stays");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("a\u{2028}b\u{61c}", 10), "a\\u{2028}b\\u{61c}");
    }

    #[test]
    fn a_shared_error_keeps_its_kind() {
        let status = |status| Error::Status {
            method: "GET".into(),
            url: "http://r/v2/".into(),
            status,
            code: None,
            message: None,
            retry_after: Some(Duration::from_secs(3)),
        };
        let shared = |e| Error::Shared(std::sync::Arc::new(e));
        assert!(shared(status(503)).is_retryable());
        assert!(shared(status(404)).is_not_found());
        assert!(shared(status(429)).is_rate_limited());
        assert!(shared(status(403)).is_unauthorized());
        assert!(shared(Error::Cancelled).is_cancelled());
        assert!(!shared(status(400)).is_retryable() && !shared(status(400)).is_cancelled());
        assert_eq!(
            shared(status(429)).retry_after(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(shared(status(503)).to_string(), status(503).to_string());
    }
}
