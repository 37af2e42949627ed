use std::fmt;
use std::str::FromStr;

/// A content digest, `algorithm:encoded`, as the OCI image spec defines it.
///
/// Registered algorithms are checked strictly (`sha256` needs 64 lower-case hex digits,
/// `sha512` 128); other algorithms follow the spec's general grammar so that a newer
/// registry's digests still parse (image-spec `descriptor.md`, "Digests").
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: String,
    encoded: String,
}

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// No `:` between algorithm and encoded part.
    #[error("digest {digest:?} has no algorithm (expected e.g. sha256:<64 hex digits>)")]
    MissingAlgorithm {
        /// The rejected text.
        digest: String,
    },
    /// The algorithm part breaks the grammar.
    #[error("digest {digest:?} has an invalid algorithm")]
    InvalidAlgorithm {
        /// The rejected text.
        digest: String,
    },
    /// The encoded part has the wrong length or characters for its algorithm.
    #[error("digest {digest:?} is not a valid {algorithm} digest")]
    InvalidEncoded {
        /// The rejected text.
        digest: String,
        /// The algorithm it claimed.
        algorithm: String,
    },
}

impl Digest {
    /// Parses `algorithm:encoded`.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, encoded)) = s.split_once(':') else {
            return Err(DigestError::MissingAlgorithm {
                digest: s.to_owned(),
            });
        };
        if !valid_algorithm(algorithm) {
            return Err(DigestError::InvalidAlgorithm {
                digest: s.to_owned(),
            });
        }
        let bad = || DigestError::InvalidEncoded {
            digest: s.to_owned(),
            algorithm: algorithm.to_owned(),
        };
        let lower_hex = |len: usize| {
            encoded.len() == len
                && encoded
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let ok = match algorithm {
            "sha256" => lower_hex(64),
            "sha512" => lower_hex(128),
            _ => {
                !encoded.is_empty()
                    && encoded
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
            }
        };
        if !ok {
            return Err(bad());
        }
        Ok(Digest {
            algorithm: algorithm.to_owned(),
            encoded: encoded.to_owned(),
        })
    }

    /// A digest just computed by a hasher: lower-case hex of the right length by construction.
    pub(crate) fn from_hash(algorithm: &str, encoded: String) -> Digest {
        Digest {
            algorithm: algorithm.to_owned(),
            encoded,
        }
    }

    /// The algorithm, e.g. `sha256`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// The encoded (hex) part.
    pub fn encoded(&self) -> &str {
        &self.encoded
    }

    /// The referrers tag schema tag of this digest (distribution-spec v1.1): the algorithm
    /// cut to 32 characters, `-`, the encoded part cut to 64, and any character a tag may
    /// not hold replaced with `-`. For sha256, `sha256-<hex>`.
    pub fn referrers_tag(&self) -> String {
        let cut = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        format!("{}-{}", cut(&self.algorithm, 32), cut(&self.encoded, 64))
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }

    /// Whether `tag` is a referrers tag schema tag, `sha256-<64 hex>` or `sha512-<64 hex>`
    /// (the encoded part cut to 64 characters), where a registry without the referrers API
    /// keeps the referrers index of that digest (distribution-spec v1.1, "Referrers Tag
    /// Schema"). Cosign's `sha256-<hex>.sig` is not one.
    pub fn is_referrers_tag(tag: &str) -> bool {
        let hex = |e: &str| e.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match tag.split_once('-') {
            Some(("sha256" | "sha512", e)) => e.len() == 64 && hex(e),
            _ => false,
        }
    }
}

// algorithm-component (algorithm-separator algorithm-component)*,
// component [a-z0-9]+, separator [+._-]
fn valid_algorithm(a: &str) -> bool {
    !a.is_empty()
        && a.split(['+', '.', '_', '-']).all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.encoded)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_sha256_and_rejects_bad_ones() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.encoded(), HEX);
        assert_eq!(d.referrers_tag(), format!("sha256-{HEX}"));
        assert!(Digest::parse(HEX).is_err());
        assert!(Digest::parse(&format!("sha256:{}", &HEX[1..])).is_err());
        assert!(Digest::parse(&format!("sha256:{}", HEX.to_uppercase())).is_err());
        assert!(Digest::parse("SHA256:abc").is_err());
        assert!(Digest::parse("sha256:").is_err());
        assert!(
            Digest::parse("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8")
                .is_ok()
        );
    }

    #[test]
    fn referrers_tags_are_cut_as_the_spec_says() {
        // The distribution-spec's own examples.
        let sha512 = Digest::parse(&format!("sha512:{}", "a".repeat(128))).unwrap();
        assert_eq!(sha512.referrers_tag(), format!("sha512-{}", "a".repeat(64)));
        assert!(Digest::is_referrers_tag(&sha512.referrers_tag()));
        let odd = Digest::parse(
            "test+algorithm+using+algorithm+separators+and+lots+of+characters+to+excercise+overall+truncation:alsoSome=InTheEncodedSectionToShowHyphenReplacementAndLotsAndLotsOfCharactersToExcerciseEncodedTruncation",
        )
        .unwrap();
        assert_eq!(
            odd.referrers_tag(),
            "test-algorithm-using-algorithm-s-alsoSome-InTheEncodedSectionToShowHyphenReplacementAndLotsAndLot"
        );
        assert!(!Digest::is_referrers_tag(&format!("sha256-{HEX}.sig")));
        assert!(!Digest::is_referrers_tag(&format!(
            "sha512-{}",
            "a".repeat(128)
        )));
    }

    proptest! {
        #[test]
        fn never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(d) = Digest::parse(&s) {
                prop_assert_eq!(d.to_string(), s);
            }
        }
    }
}
