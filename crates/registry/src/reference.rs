//! Image references, normalised as the Docker CLI and regclient do.
//!
//! Grammar (distribution `reference/regexp.go`, OCI distribution-spec "Pulling manifests"):
//! `[registry/]path[:tag][@digest]`, where the first component is a registry when it contains
//! `.` or `:`, or is `localhost`. Docker Hub's aliases collapse to `docker.io`, and its
//! single-component names gain `library/`.
use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The canonical name of Docker Hub in references.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const MAX_NAME_LEN: usize = 255;

/// A parsed, normalised image reference: registry, repository, and an optional tag and digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// Nothing was given.
    #[error("reference is empty")]
    Empty,
    /// The registry part is not a host name with an optional port.
    #[error("{reference:?}: registry {registry:?} is not a valid host[:port]")]
    InvalidRegistry {
        /// The whole reference.
        reference: String,
        /// The rejected registry part.
        registry: String,
    },
    /// The repository path contains upper-case letters (registries reject them).
    #[error("{reference:?}: repository {repository:?} must be lower case")]
    UppercaseRepository {
        /// The whole reference.
        reference: String,
        /// The rejected repository.
        repository: String,
    },
    /// The repository path breaks the grammar.
    #[error(
        "{reference:?}: repository {repository:?} is invalid (components of a-z, 0-9 separated by '.', '_', '__' or '-')"
    )]
    InvalidRepository {
        /// The whole reference.
        reference: String,
        /// The rejected repository.
        repository: String,
    },
    /// The tag breaks the grammar (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`).
    #[error(
        "{reference:?}: tag {tag:?} is invalid (1-128 of A-Z, a-z, 0-9, '_', '.', '-', not starting with '.' or '-')"
    )]
    InvalidTag {
        /// The whole reference.
        reference: String,
        /// The rejected tag.
        tag: String,
    },
    /// The digest is malformed.
    #[error("{reference:?}: {source}")]
    InvalidDigest {
        /// The whole reference.
        reference: String,
        /// What is wrong with the digest.
        source: DigestError,
    },
    /// The name is longer than registries accept.
    #[error("{reference:?}: name is longer than {MAX_NAME_LEN} characters")]
    TooLong {
        /// The whole reference.
        reference: String,
    },
}

impl Reference {
    /// Parses and normalises a reference such as `busybox`, `ghcr.io/org/app:1.2` or
    /// `localhost:5000/a/b@sha256:…`.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = Digest::parse(d).map_err(|source| ReferenceError::InvalidDigest {
                    reference: s.to_owned(),
                    source,
                })?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        // A ':' after the last '/' separates the tag; one before it is a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        let (registry, repository) = split_registry(name);
        let registry = normalise_registry(registry);
        if !is_valid_registry(&registry) {
            return Err(ReferenceError::InvalidRegistry {
                reference: s.to_owned(),
                registry,
            });
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        validate_repository(s, &repository)?;
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(ReferenceError::TooLong {
                reference: s.to_owned(),
            });
        }
        if let Some(tag) = tag {
            validate_tag(s, tag)?;
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The registry as written in references (`docker.io`, `ghcr.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if one was given.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if one was given.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest when pinned, else the tag, else `latest`.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        validate_tag(&self.to_string(), tag)?;
        Ok(Reference {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to a digest (the tag is dropped).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository with neither tag nor digest.
    pub fn repository_only(&self) -> Reference {
        Reference {
            tag: None,
            digest: None,
            ..self.clone()
        }
    }
}

/// The host to connect to for a registry name: Docker Hub's API lives on `registry-1.docker.io`.
pub fn api_hostname(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.starts_with('[') =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

fn normalise_registry(registry: &str) -> String {
    match registry {
        "" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
        r => r.to_owned(),
    }
}

/// Whether `registry` is a DNS name or IP (IPv6 in brackets) with an optional port.
pub fn is_valid_registry(registry: &str) -> bool {
    check_registry(registry).is_some()
}

fn check_registry(registry: &str) -> Option<()> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        match after {
            "" => return Some(()),
            p => (None, Some(p.strip_prefix(':')?)),
        }
    } else {
        match registry.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if host.is_empty() || !host.split('.').all(label_ok) {
            return None;
        }
    }
    Some(())
}

/// Whether `tag` is a tag in the distribution grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
/// A name a registry sends (a tag list, a webhook) is used only if it passes.
pub fn is_valid_tag(tag: &str) -> bool {
    validate_tag("", tag).is_ok()
}

/// Whether `name` is a repository path in the distribution grammar: lower-case components
/// of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`, at most 255 characters.
pub fn is_valid_repository(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN && validate_repository("", name).is_ok()
}

fn validate_repository(reference: &str, repository: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::InvalidRepository {
        reference: reference.to_owned(),
        repository: repository.to_owned(),
    };
    if repository.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReferenceError::UppercaseRepository {
            reference: reference.to_owned(),
            repository: repository.to_owned(),
        });
    }
    if repository.is_empty() {
        return Err(bad());
    }
    for component in repository.split('/') {
        if !valid_path_component(component) {
            return Err(bad());
        }
    }
    Ok(())
}

// [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn validate_tag(reference: &str, tag: &str) -> Result<(), ReferenceError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && word(tag.as_bytes()[0])
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::InvalidTag {
            reference: reference.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(s).unwrap();
        (
            r.registry().to_owned(),
            r.repository().to_owned(),
            r.tag().map(str::to_owned),
            r.digest().map(ToString::to_string),
        )
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        let hub = |repo: &str, tag: Option<&str>| {
            (
                "docker.io".to_owned(),
                repo.to_owned(),
                tag.map(str::to_owned),
                None,
            )
        };
        assert_eq!(parts("busybox"), hub("library/busybox", None));
        assert_eq!(parts("busybox:1.36"), hub("library/busybox", Some("1.36")));
        assert_eq!(parts("docker.io/busybox"), hub("library/busybox", None));
        assert_eq!(
            parts("index.docker.io/library/busybox"),
            hub("library/busybox", None)
        );
        assert_eq!(
            parts("registry-1.docker.io/regclient/regsync:latest"),
            hub("regclient/regsync", Some("latest"))
        );
        assert_eq!(
            Reference::parse("busybox").unwrap().to_string(),
            "docker.io/library/busybox"
        );
        assert_eq!(api_hostname("docker.io"), "registry-1.docker.io");
        assert_eq!(api_hostname("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn registries_ports_tags_and_digests() {
        assert_eq!(
            parts("localhost:5000/a/b:v1"),
            (
                "localhost:5000".into(),
                "a/b".into(),
                Some("v1".into()),
                None
            )
        );
        assert_eq!(
            parts("localhost/app"),
            ("localhost".into(), "app".into(), None, None)
        );
        let d = format!("sha256:{HEX}");
        assert_eq!(
            parts(&format!("ghcr.io/o/app:1.0@{d}")),
            (
                "ghcr.io".into(),
                "o/app".into(),
                Some("1.0".into()),
                Some(d.clone())
            )
        );
        let r = Reference::parse(&format!("127.0.0.1:5001/x@{d}")).unwrap();
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(
            Reference::parse("a/b").unwrap().manifest_reference(),
            "latest"
        );
        assert_eq!(
            parts("[::1]:5000/x"),
            ("[::1]:5000".into(), "x".into(), None, None)
        );
    }

    #[test]
    fn rejects_what_registries_reject() {
        assert!(matches!(
            Reference::parse("ghcr.io/Org/App"),
            Err(ReferenceError::UppercaseRepository { .. })
        ));
        assert!(matches!(Reference::parse(""), Err(ReferenceError::Empty)));
        assert!(matches!(
            Reference::parse("a//b"),
            Err(ReferenceError::InvalidRepository { .. })
        ));
        assert!(matches!(
            Reference::parse("a/b-"),
            Err(ReferenceError::InvalidRepository { .. })
        ));
        assert!(matches!(
            Reference::parse("a/b:.x"),
            Err(ReferenceError::InvalidTag { .. })
        ));
        assert!(matches!(
            Reference::parse("a/b:"),
            Err(ReferenceError::InvalidTag { .. })
        ));
        assert!(matches!(
            Reference::parse("a/b@sha256:xyz"),
            Err(ReferenceError::InvalidDigest { .. })
        ));
        assert!(matches!(
            Reference::parse("bad_host.io:x/a"),
            Err(ReferenceError::InvalidRegistry { .. })
        ));
        assert!(Reference::parse("a/b__c/d-e/f..g").is_err());
        assert!(Reference::parse("a/b__c/d---e/f.g").is_ok());
    }

    #[test]
    fn with_tag_and_digest() {
        let r = Reference::parse("ghcr.io/o/app:1").unwrap();
        assert_eq!(r.with_tag("2").unwrap().to_string(), "ghcr.io/o/app:2");
        assert!(r.with_tag("-bad").is_err());
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(
            r.with_digest(d).to_string(),
            format!("ghcr.io/o/app@sha256:{HEX}")
        );
        assert_eq!(r.repository_only().to_string(), "ghcr.io/o/app");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,100}") {
            let _ = Reference::parse(&s);
        }

        #[test]
        fn canonical_form_is_a_fixed_point(
            host in "(localhost|[a-z]{1,8}\\.[a-z]{2,3})(:[0-9]{1,4})?",
            repo in "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,2}",
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"),
        ) {
            let s = match &tag { Some(t) => format!("{host}/{repo}:{t}"), None => format!("{host}/{repo}") };
            let r = Reference::parse(&s).unwrap();
            prop_assert_eq!(r.to_string(), s.clone());
            prop_assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
        }
    }
}
