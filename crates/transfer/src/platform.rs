//! Platform selection in indexes, compatible with regclient's `types/platform` matching:
//! os and architecture must be equal; a wanted variant must match (arm64's `v8` is the
//! default and may be left out); a wanted OS version must match.
use regferry_registry::{Descriptor, Platform};

fn norm_variant(p: &Platform) -> &str {
    match (p.architecture.as_str(), p.variant.as_str()) {
        ("arm64", "v8") => "",
        ("arm", "") => "v7",
        (_, v) => v,
    }
}

/// Whether an index entry's platform satisfies `wanted`.
pub fn matches_platform(have: &Platform, wanted: &Platform) -> bool {
    have.os == wanted.os
        && have.architecture == wanted.architecture
        && (wanted.variant.is_empty() || norm_variant(have) == norm_variant(wanted))
        && (wanted.os_version.is_empty() || have.os_version == wanted.os_version)
}

/// The best entry of an index for `wanted`: an exact variant match first, then any compatible one.
pub fn select_platform<'a>(entries: &'a [Descriptor], wanted: &Platform) -> Option<&'a Descriptor> {
    let compatible = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| matches_platform(p, wanted))
    };
    entries
        .iter()
        .filter(compatible)
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| norm_variant(p) == norm_variant(wanted))
        })
        .or_else(|| entries.iter().find(compatible))
}

/// Whether an index entry is selected by a `platforms` list (`None` selects entries
/// without a platform). An empty list selects everything.
pub(crate) fn selected(d: &Descriptor, wanted: &[Option<Platform>]) -> bool {
    wanted.is_empty()
        || wanted.iter().any(|w| match (w, &d.platform) {
            (None, None) => true,
            (Some(w), Some(p)) => matches_platform(p, w),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use regferry_registry::Digest;
    use std::collections::BTreeMap;

    fn desc(p: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap(),
            size: 1,
            urls: vec![],
            platform: p.map(|p| {
                let parts: Vec<&str> = p.split('/').collect();
                Platform {
                    os: parts[0].into(),
                    architecture: parts[1].into(),
                    variant: parts.get(2).unwrap_or(&"").to_string(),
                    os_version: String::new(),
                }
            }),
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn selection_prefers_exact_variants() {
        let entries = vec![
            desc(Some("linux/amd64"), 1),
            desc(Some("linux/arm/v6"), 2),
            desc(Some("linux/arm/v7"), 3),
            desc(Some("linux/arm64/v8"), 4),
            desc(None, 5),
        ];
        let p = |s: &str| Platform::parse(s).unwrap();
        assert_eq!(
            select_platform(&entries, &p("linux/arm64")).unwrap().size,
            1
        );
        assert_eq!(
            select_platform(&entries, &p("linux/arm64")).unwrap().digest,
            entries[3].digest
        );
        assert_eq!(
            select_platform(&entries, &p("linux/arm/v7"))
                .unwrap()
                .digest,
            entries[2].digest
        );
        assert_eq!(
            select_platform(&entries, &p("linux/arm/v6"))
                .unwrap()
                .digest,
            entries[1].digest
        );
        assert!(select_platform(&entries, &p("linux/s390x")).is_none());
        assert!(select_platform(&entries, &p("windows/amd64")).is_none());
        assert!(selected(&entries[4], &[None]));
        assert!(!selected(&entries[0], &[None, Some(p("linux/arm64"))]));
        assert!(selected(&entries[3], &[None, Some(p("linux/arm64"))]));
        assert!(selected(&entries[0], &[]));
    }
}
