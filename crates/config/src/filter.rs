//! Tag, repository and referrer filters, compiled once at load.
//!
//! regsync anchors a pattern by string concatenation, `"^" + p + "$"`, so `a|b` becomes
//! `^a|b$`, which matches any tag starting with `a` or ending with `b`. regferry anchors the
//! whole pattern, `^(?:a|b)$`, which is what such a pattern is meant to say; see
//! docs/configuration.md ("Differences from regsync").
use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

use crate::semver::{RangeSet, Version};

/// A tag or repository pattern, anchored at both ends.
#[derive(Clone)]
pub struct Pattern {
    text: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `text` as `^(?:text)$`. A leading repetition operator means what it does
    /// in regsync's `^` + text + `$` (Go applies it to the `^`): `*` and `?` leave the start
    /// unanchored (`*-alpine` is any tag ending in `-alpine`, `*` alone is every tag), `+`
    /// changes nothing.
    pub fn new(text: &str) -> Result<Pattern, regex::Error> {
        let (start, rest) = go_start(text);
        // Compiled alone first, so that `a)|(b` cannot close the group and escape the anchors.
        regex::RegexBuilder::new(rest).size_limit(1 << 20).build()?;
        let regex = regex::RegexBuilder::new(&format!("^{start}(?:{rest})$"))
            .size_limit(1 << 20)
            .build()?;
        Ok(Pattern {
            text: text.to_owned(),
            regex,
        })
    }

    /// Whether the pattern starts with `*` or `?`, which regsync's regex reads as "any
    /// start" where a glob was likely meant.
    pub(crate) fn unanchored_start(&self) -> bool {
        !go_start(&self.text).0.is_empty()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.regex.is_match(s)
    }
}

/// Splits a leading repetition operator off `text`, as Go reads it after regsync's `^`: the
/// regex to put after our `^` (`.*` when the start is optional), and the rest.
fn go_start(text: &str) -> (&'static str, &str) {
    fn lazy(r: &str) -> &str {
        r.strip_prefix('?').unwrap_or(r)
    }
    if let Some(rest) = text.strip_prefix('*').or_else(|| text.strip_prefix('?')) {
        return (".*", lazy(rest));
    }
    if let Some(rest) = text.strip_prefix('+') {
        return ("", lazy(rest));
    }
    ("", text)
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// One `tags` block: semverRange, then allow, then deny, each narrowing the result, then
/// `latest` keeping the highest versions of what is left.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagSet {
    /// Version ranges (ORed); empty means no version constraint.
    pub semver_range: Option<RangeSet>,
    /// Patterns of which one must match; empty means all.
    pub allow: Vec<Pattern>,
    /// Patterns of which none may match.
    pub deny: Vec<Pattern>,
    /// regferry extension: keep only this many of the highest versions (never 0).
    pub latest: Option<usize>,
}

impl TagSet {
    /// Whether `tag` passes semverRange, allow and deny, and could be among the `latest`
    /// (it is a version); whether it is, depends on the other tags: see [`TagFilter::select`].
    pub fn matches(&self, tag: &str) -> bool {
        if self.latest.is_some() && Version::parse(tag).is_none() {
            return false;
        }
        self.matches_patterns(tag)
    }

    fn matches_patterns(&self, tag: &str) -> bool {
        if let Some(range) = &self.semver_range
            && !range.matches_tag(tag)
        {
            return false;
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|p| p.is_match(tag)) {
            return false;
        }
        !self.deny.iter().any(|p| p.is_match(tag))
    }

    /// True when the set constrains nothing.
    pub fn is_empty(&self) -> bool {
        self.semver_range.is_none()
            && self.allow.is_empty()
            && self.deny.is_empty()
            && self.latest.is_none()
    }

    /// Marks in `keep` the tags of `tags` this set selects, `latest` applied.
    fn select_into(&self, tags: &[&str], keep: &mut [bool]) {
        let Some(n) = self.latest else {
            for (k, t) in keep.iter_mut().zip(tags) {
                *k |= self.matches_patterns(t);
            }
            return;
        };
        let mut versions: Vec<(Version, usize)> = tags
            .iter()
            .enumerate()
            .filter(|(_, t)| self.matches_patterns(t))
            .filter_map(|(i, t)| Version::parse(t).map(|v| (v, i)))
            .collect();
        // Highest first; versions that are equal in regsync's order (`1.2`, `v1.2.0`,
        // `1.2.0+b1`) are ordered by their text, so that the choice does not depend on the
        // order the registry listed them in.
        versions
            .sort_unstable_by(|(a, _), (b, _)| b.cmp(a).then_with(|| b.as_str().cmp(a.as_str())));
        for (_, i) in versions.into_iter().take(n) {
            keep[i] = true;
        }
    }
}

impl PartialEq for RangeSet {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// The tag filter of an entry: `tagSets` plus a non-empty `tags`, unioned. No sets: every tag.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagFilter {
    /// The sets; a tag is selected when any set selects it.
    pub sets: Vec<TagSet>,
}

impl TagFilter {
    /// Whether `tag` may be selected. Exact unless a set has `latest`, whose choice
    /// depends on the whole tag list: then a tag that passes here may still be left out by
    /// [`TagFilter::select`], never the other way round.
    pub fn matches(&self, tag: &str) -> bool {
        self.sets.is_empty() || self.sets.iter().any(|s| s.matches(tag))
    }

    /// Whether a set keeps only the `latest` versions, so that selecting needs the whole list.
    pub fn has_latest(&self) -> bool {
        self.sets.iter().any(|s| s.latest.is_some())
    }

    /// The selected tags, in their original order.
    pub fn select<'a, I: IntoIterator<Item = &'a str>>(&self, tags: I) -> Vec<&'a str> {
        let tags: Vec<&str> = tags.into_iter().collect();
        if self.sets.is_empty() {
            return tags;
        }
        let mut keep = vec![false; tags.len()];
        for set in &self.sets {
            set.select_into(&tags, &mut keep);
        }
        tags.into_iter()
            .zip(keep)
            .filter_map(|(t, k)| k.then_some(t))
            .collect()
    }

    /// Splits `tags` into the selected ones and those that pass every other rule of a set
    /// with `latest` but were left out by its count (as `check` shows them), each in the
    /// original order.
    pub fn select_explained<'a>(&self, tags: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
        let selected = self.select(tags.iter().copied());
        if !self.has_latest() {
            return (selected, Vec::new());
        }
        let chosen: std::collections::HashSet<&str> = selected.iter().copied().collect();
        let left_out = tags
            .iter()
            .copied()
            .filter(|t| !chosen.contains(t) && self.matches(t))
            .collect();
        (selected, left_out)
    }
}

/// The `repos` filter of a `type: registry` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepoFilter {
    /// Patterns of which one must match; empty means all.
    pub allow: Vec<Pattern>,
    /// Patterns of which none may match.
    pub deny: Vec<Pattern>,
}

impl RepoFilter {
    /// Whether repository `name` (as `_catalog` lists it) is selected.
    pub fn matches(&self, name: &str) -> bool {
        (self.allow.is_empty() || self.allow.iter().any(|p| p.is_match(name)))
            && !self.deny.iter().any(|p| p.is_match(name))
    }
}

/// One `referrerFilters` item: the artifact type and every listed annotation must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferrerFilter {
    /// Required artifact type; `None` accepts any.
    pub artifact_type: Option<String>,
    /// Required annotations; an empty value only requires the key to be present.
    pub annotations: BTreeMap<String, String>,
}

impl ReferrerFilter {
    /// Whether a referrer with this artifact type and these annotations is selected.
    pub fn matches(&self, artifact_type: &str, annotations: &BTreeMap<String, String>) -> bool {
        if let Some(t) = &self.artifact_type
            && t != artifact_type
        {
            return false;
        }
        self.annotations
            .iter()
            .all(|(k, v)| match annotations.get(k) {
                Some(actual) => v.is_empty() || v == actual,
                None => false,
            })
    }

    /// Whether any filter of a list selects the referrer; an empty list selects all.
    pub fn any_matches(
        filters: &[ReferrerFilter],
        artifact_type: &str,
        annotations: &BTreeMap<String, String>,
    ) -> bool {
        filters.is_empty()
            || filters
                .iter()
                .any(|f| f.matches(artifact_type, annotations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pats(list: &[&str]) -> Vec<Pattern> {
        list.iter().map(|p| Pattern::new(p).unwrap()).collect()
    }

    fn set(semver: &[&str], allow: &[&str], deny: &[&str]) -> TagSet {
        TagSet {
            semver_range: (!semver.is_empty()).then(|| RangeSet::parse(semver).unwrap()),
            allow: pats(allow),
            deny: pats(deny),
            latest: None,
        }
    }

    fn latest(n: usize, semver: &[&str], allow: &[&str], deny: &[&str]) -> TagSet {
        TagSet {
            latest: Some(n),
            ..set(semver, allow, deny)
        }
    }

    const TAGS: &[&str] = &[
        "latest",
        "1.0.0",
        "1.2.3",
        "v1.3.0",
        "2.0.0",
        "2.0.0-alpine",
        "1.2.3-alpine",
        "edge",
        "abc",
        "xyzb",
    ];

    #[test]
    fn anchoring_wraps_the_whole_pattern() {
        let p = Pattern::new("a|b").unwrap();
        assert!(p.is_match("a") && p.is_match("b"));
        // regsync's "^a|b$" would accept these; regferry does not.
        assert!(!p.is_match("abc") && !p.is_match("xyzb"));
        assert!(Pattern::new("1\\.2.*").unwrap().is_match("1.2.3-alpine"));
        assert!(!Pattern::new("1\\.2").unwrap().is_match("1.2.3"));
        assert!(Pattern::new("(").is_err());
        assert!(
            Pattern::new("a)|(b").is_err(),
            "a pattern may not break out of the anchors"
        );
    }

    #[test]
    fn semver_then_allow_then_deny() {
        let f = TagFilter {
            sets: vec![set(&[">=1.0.0 <2.0.0"], &[], &[".*-alpine"])],
        };
        assert_eq!(
            f.select(TAGS.iter().copied()),
            vec!["1.0.0", "1.2.3", "v1.3.0"]
        );
        // semverRange drops non-versions before allow can select them.
        let f = TagFilter {
            sets: vec![set(&[">=1.0.0"], &["latest"], &[])],
        };
        assert!(f.select(TAGS.iter().copied()).is_empty());
        // Two tagSets are unioned.
        let f = TagFilter {
            sets: vec![set(&[">=2.0.0"], &[], &[]), set(&[], &["latest"], &[])],
        };
        assert_eq!(f.select(TAGS.iter().copied()), vec!["latest", "2.0.0"]);
        // No sets: everything.
        assert_eq!(
            TagFilter::default().select(TAGS.iter().copied()).len(),
            TAGS.len()
        );
        // Deny wins over allow.
        let f = TagFilter {
            sets: vec![set(&[], &["1\\..*"], &["1\\.2\\..*"])],
        };
        assert_eq!(f.select(TAGS.iter().copied()), vec!["1.0.0"]);
    }

    #[test]
    fn latest_keeps_the_highest_versions_after_the_other_rules() {
        let tags = [
            "latest",
            "1.9.0",
            "1.10.0",
            "v1.10.1",
            "1.11.0-rc.1",
            "1.2",
            "2.0.0-alpine",
            "2.0.0",
            "edge",
            "0.9",
        ];
        // Numeric, not text order: 1.10 is above 1.9; a prerelease is below its release;
        // tags that are not versions are never among the latest.
        let f = TagFilter {
            sets: vec![latest(3, &[], &[], &[])],
        };
        assert_eq!(f.select(tags), vec!["1.11.0-rc.1", "2.0.0-alpine", "2.0.0"]);
        let f = TagFilter {
            sets: vec![latest(1, &[], &[], &[])],
        };
        assert_eq!(f.select(tags), vec!["2.0.0"]);
        // allow/deny/semverRange apply first, then the count.
        let f = TagFilter {
            sets: vec![latest(2, &["<2.0.0"], &[], &[".*-.*"])],
        };
        assert_eq!(f.select(tags), vec!["1.10.0", "v1.10.1"]);
        // A second set adds `latest` and `edge` back; the rest is left out, in list order.
        let f = TagFilter {
            sets: vec![
                latest(2, &[], &[], &[".*-.*"]),
                set(&[], &["latest|edge"], &[]),
            ],
        };
        let (selected, left_out) = f.select_explained(&tags);
        assert_eq!(selected, vec!["latest", "v1.10.1", "2.0.0", "edge"]);
        assert_eq!(left_out, vec!["1.9.0", "1.10.0", "1.2", "0.9"]);
        // Fewer versions than the count: all of them.
        let f = TagFilter {
            sets: vec![latest(50, &[], &["1\\..*"], &[])],
        };
        assert_eq!(f.select(tags).len(), 4);
        assert!(f.select_explained(&tags).1.is_empty());
        // Versions equal in regsync's order are ranked by their text, whatever the listing order.
        let f = TagFilter {
            sets: vec![latest(1, &[], &[], &[])],
        };
        assert_eq!(f.select(["1.2.0", "v1.2", "1.2"]), vec!["v1.2"]);
        assert_eq!(f.select(["v1.2", "1.2", "1.2.0"]), vec!["v1.2"]);
        // `matches` is the upper bound that webhooks use before the list is read.
        assert!(f.matches("0.1") && !f.matches("latest") && f.has_latest());
    }

    #[test]
    fn repo_and_referrer_filters() {
        let r = RepoFilter {
            allow: pats(&["team-x/.*"]),
            deny: pats(&["team-x/tmp-.*"]),
        };
        assert!(r.matches("team-x/app"));
        assert!(!r.matches("team-x/tmp-1"));
        assert!(!r.matches("team-y/app"));
        assert!(RepoFilter::default().matches("anything"));

        let ann = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let sbom = ReferrerFilter {
            artifact_type: Some("application/spdx+json".into()),
            annotations: BTreeMap::new(),
        };
        let signed_by = ReferrerFilter {
            artifact_type: None,
            annotations: ann(&[("org.example.signer", ""), ("env", "prod")]),
        };
        let filters = [sbom, signed_by];
        assert!(ReferrerFilter::any_matches(
            &filters,
            "application/spdx+json",
            &ann(&[])
        ));
        assert!(ReferrerFilter::any_matches(
            &filters,
            "x",
            &ann(&[("org.example.signer", "a"), ("env", "prod")])
        ));
        assert!(!ReferrerFilter::any_matches(
            &filters,
            "x",
            &ann(&[("org.example.signer", "a"), ("env", "dev")])
        ));
        assert!(!ReferrerFilter::any_matches(
            &filters,
            "x",
            &ann(&[("env", "prod")])
        ));
        assert!(ReferrerFilter::any_matches(&[], "x", &ann(&[])));
    }

    proptest! {
        #[test]
        fn deny_always_wins(tag in "[a-z0-9.-]{1,12}") {
            let s = TagSet { allow: pats(&[".*"]), deny: vec![Pattern::new(&regex::escape(&tag)).unwrap()], ..TagSet::default() };
            prop_assert!(!s.matches(&tag));
        }

        #[test]
        fn literal_allow_matches_only_itself(tag in "[a-z0-9._-]{1,12}", other in "[a-z0-9._-]{1,12}") {
            let p = Pattern::new(&regex::escape(&tag)).unwrap();
            prop_assert!(p.is_match(&tag));
            prop_assert_eq!(p.is_match(&other), tag == other);
        }

        #[test]
        fn any_pattern_text_is_safe(text in "\\PC{0,30}", tag in "\\PC{0,20}") {
            if let Ok(p) = Pattern::new(&text) {
                let _ = p.is_match(&tag);
            }
        }
    }
}
