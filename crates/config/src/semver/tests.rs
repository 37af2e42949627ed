//! regsync's semver dialect, case by case and by property.
use super::*;
use proptest::prelude::*;

fn v(s: &str) -> Version {
    Version::parse(s).unwrap_or_else(|| panic!("{s:?} should parse"))
}

fn r(s: &str) -> Range {
    Range::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

// regclient `NewVersion` (TestNewVersion, plus reading the code): strip
// one `v`, split at the first `+`, then at the first `-`, then `Atoi` each
// dot-separated part. Any part count is fine; an empty or non-digit part fails.
#[test]
fn parses_versions_like_regsync() {
    // (tag, parts, prerelease, metadata)
    let cases: &[(&str, &[u64], &str, &str)] = &[
        ("v5", &[5], "", ""),
        ("5", &[5], "", ""),
        ("1.2", &[1, 2], "", ""),
        ("1.2.3", &[1, 2, 3], "", ""),
        ("1.2.3.4", &[1, 2, 3, 4], "", ""),
        ("10.0.17763.2114", &[10, 0, 17763, 2114], "", ""),
        ("1.2.3-rc.1+build", &[1, 2, 3], "rc.1", "build"),
        ("v1.2.3-beta.1", &[1, 2, 3], "beta.1", ""),
        ("2.0.0-alpine3.21", &[2, 0, 0], "alpine3.21", ""),
        // `+` is split off before `-`, so this `-` belongs to the metadata.
        ("1.2.3+build-1", &[1, 2, 3], "", "build-1"),
        // Only the first `-` splits; the rest is prerelease text.
        ("1.2.3-rc-1", &[1, 2, 3], "rc-1", ""),
        ("1.2-rc+x.y+z.q-", &[1, 2], "rc", "x.y+z.q-"),
        // An empty prerelease is parsed and then behaves like a release.
        ("1.2.3-", &[1, 2, 3], "", ""),
        ("1.2.3+", &[1, 2, 3], "", ""),
        // Atoi accepts leading zeros.
        ("01.002.0003", &[1, 2, 3], "", ""),
        ("9223372036854775807", &[9_223_372_036_854_775_807], "", ""),
        ("00000000000000000000000001", &[1], "", ""),
        // Prerelease text is not validated.
        ("1-a b/ü", &[1], "a b/ü", ""),
    ];
    for (tag, parts, pre, meta) in cases {
        let got = v(tag);
        assert_eq!(got.parts, *parts, "parts of {tag:?}");
        assert_eq!(
            got.prerelease().unwrap_or(""),
            *pre,
            "prerelease of {tag:?}"
        );
        assert_eq!(got.metadata().unwrap_or(""), *meta, "metadata of {tag:?}");
        assert_eq!(got.as_str(), *tag);
        assert_eq!(got.to_string(), *tag);
    }
}

// regclient `NewVersion` rejections ("abc", "" in its tests). Also: no
// wildcards, only lowercase and single `v`, no spaces, no signs, ASCII
// digits only, and Atoi's range limit (i64::MAX on 64-bit).
#[test]
fn rejects_non_versions_like_regsync() {
    for tag in [
        "latest",
        "abc",
        "1.2.x",
        "v",
        "",
        "1..2",
        "1.2.",
        ".1",
        "V1.2",
        "vv1",
        "-rc1",
        "+1",
        " 1.2",
        "1.2 ",
        "1_000",
        "*",
        "x",
        "٣", // Arabic-Indic digit three: not ASCII
        "9223372036854775808",
        "1.99999999999999999999",
        "sha256-abcdef.sig",
    ] {
        assert!(Version::parse(tag).is_none(), "{tag:?} should not parse");
    }
}

// regclient `Compare` (TestVersionCompare, plus the post-34ca447
// `comparePrereleases`/`splitNumeric`): zero-padded numeric parts,
// release above prerelease, prerelease text runs bytewise and digit runs
// numerically, fewer identifiers first, metadata ignored.
#[test]
fn orders_like_regsync() {
    use Ordering::{Equal, Greater, Less};
    let cases = [
        ("1.2.3", "1.2.3", Equal),
        ("1.2.3", "2.2.3", Less),
        ("1.3.3", "1.2.3", Greater),
        ("1.2.3", "1.2.4", Less),
        ("v1.2.3", "1.2.3", Equal),
        ("v5", "5.0.0", Equal),
        ("1.2", "1.2.0", Equal),
        ("10.0.17763", "10.0.17763.0", Equal),
        ("10.0.17763.2114", "10.0.17763.2115", Less),
        ("1.2.3", "1.2.3.1", Less),
        ("1.2.3.1", "1.2.3", Greater),
        ("1.10", "1.9", Greater),
        ("1.0.0+a", "1.0.0+b", Equal),
        // Prerelease below its release, above the previous release.
        ("1.2.3-rc1", "1.2.3", Less),
        ("2.0.0-alpine3.21", "2.0.0", Less),
        ("2.0.0-alpine3.21", "1.99.99", Greater),
        ("1.2.3-", "1.2.3", Equal),
        ("1.2.3-alpha", "1.2.3-beta", Less),
        ("1.2.3-rc2", "1.2.3-rc11", Less),
        ("1.2.3-rc01", "1.2.3-rc1", Equal),
        ("1.2.3-rc", "1.2.3-rc1", Less),
        ("1.2.3-rc1", "1.2.3-rc1a", Less),
        ("1.2.3-rc1", "1.2.3-rc1.1", Less),
        ("1.2.3-2", "1.2.3-10", Less),
        ("1.2.3-9", "1.2.3-alpha", Less),
        ("1.2.3-1.", "1.2.3-1.a", Less),
        ("1.2.3-1", "1.2.3-1.", Less),
        ("2.0.0-alpine3.21", "2.0.0-alpine3.9", Greater),
        ("2.0.0-alpine3.21", "2.0.0-bookworm", Less),
        ("2.0.0-Z", "2.0.0-a", Less),
        // Quirk: once both sides reach the same digit-free text, regsync
        // returns "equal" and ignores the rest.
        ("1.0.0-alpha.1", "1.0.0-alpha.2", Equal),
        ("1.0.0-beta", "1.0.0-beta.2", Equal),
        ("1.0.0-rc1-alpine", "1.0.0-rc1-alpine.3", Equal),
        // Quirk: a digit run beyond i64::MAX counts as no number, so it
        // sorts below any number, and two of them compare equal.
        ("1.0.0-rc99999999999999999999", "1.0.0-rc1", Less),
        (
            "1.0.0-rc99999999999999999999.1",
            "1.0.0-rc88888888888888888888.2",
            Equal,
        ),
    ];
    for (a, b, want) in cases {
        assert_eq!(v(a).cmp(&v(b)), want, "{a} vs {b}");
        assert_eq!(v(b).cmp(&v(a)), want.reverse(), "{b} vs {a}");
        assert_eq!(v(a) == v(b), want == Equal, "{a} == {b}");
    }
}

// regclient `NewConstraint` + `Check` (TestConstraintCheck): each
// operator, bare equality, `v` on either side.
#[test]
fn operators_match_like_regsync() {
    let cases = [
        (">=1.0.0", "1.0.0", true),
        (">=1.0.0", "1.5.0", true),
        (">=1.0.0", "0.9.0", false),
        ("<=2.0.0", "2.0.0", true),
        ("<=2.0.0", "1.5.0", true),
        ("<=2.0.0", "2.1.0", false),
        (">1.0.0", "1.0.1", true),
        (">1.0.0", "1.0.0", false),
        (">1.0.0", "1.0.0.0", false),
        ("<2.0.0", "1.9.9", true),
        ("<2.0.0", "2.0.0", false),
        ("<2.0.0", "2.0.0-rc1", true),
        ("=1.0.0", "1.0.0", true),
        ("=1.0.0", "1.0.1", false),
        ("=1.0.0", "1.0.0+meta", true),
        ("=1.0.0", "1.0.0-rc1", false),
        ("=1.2", "v1.2.0.0", true),
        ("1.2", "1.2.0", true),
        ("1.2", "1.2.1", false),
        ("v1.2.3", "1.2.3", true),
        (">=v1.0.0", "1.5.0", true),
        (">=1.0.0", "v1.5.0", true),
        (">=1.0.0-rc1", "1.0.0-rc2", true),
        (">=1.0.0-rc1", "1.0.0", true),
        (">=1.0.0", "1.0.0-rc1", false),
        (">=1.0.0-alpha.1", "1.0.0-alpha.0", true), // the quirk: equal
    ];
    for (range, version, want) in cases {
        assert_eq!(r(range).matches(&v(version)), want, "{range} on {version}");
    }
}

// regclient `^`/`~` expansion: `^` bumps the first non-zero of
// major/minor/patch, `~` always bumps the minor (even `~1`), and the
// upper bound is a bare release, so its prereleases match.
#[test]
fn caret_and_tilde_like_regsync() {
    let cases = [
        ("^1.2.3", "1.2.3", true),
        ("^1.2.3", "1.5.0", true),
        ("^1.2.3", "1.2.5", true),
        ("^1.2.3", "2.0.0", false),
        ("^1.2.3", "2.0.0-rc1", true),
        ("^1.2.3", "1.2.2", false),
        ("^0.2.3", "0.2.3", true),
        ("^0.2.3", "0.2.5", true),
        ("^0.2.3", "0.3.0", false),
        ("^0.2.3", "0.2.2", false),
        ("^0.0.3", "0.0.3", true),
        ("^0.0.3", "0.0.3.9", true),
        ("^0.0.3", "0.0.4", false),
        ("^0", "0.0.0", true),
        ("^0", "0.0.1", false), // npm would allow every 0.x
        ("^0", "0.1.0", false),
        ("^1", "1.99", true),
        ("^1", "2", false),
        ("^v1.2.3-rc1", "1.2.3-rc2", true),
        ("~1.2.3", "1.2.3", true),
        ("~1.2.3", "1.2.5", true),
        ("~1.2.3", "1.3.0", false),
        ("~1.2.3", "1.2.2", false),
        ("~1.2", "1.2.0", true),
        ("~1.2", "1.2.99.1", true),
        ("~1.2", "1.3.0-rc1", true),
        ("~1.2", "1.3.0", false),
        ("~1.2", "1.1.9", false),
        ("~1", "1.0.9", true),
        ("~1", "1.1.0", false), // npm would allow every 1.x
        ("~0", "0.0.5", true),
        // Go's int would wrap past i64::MAX, so the bound is below every version.
        ("^9223372036854775807", "9223372036854775807", false),
        ("^0.9223372036854775807", "0.9223372036854775807", false),
        (
            "^0.0.9223372036854775807",
            "0.0.9223372036854775807.1",
            false,
        ),
        ("~1.9223372036854775807", "1.9223372036854775807", false),
        ("^9223372036854775806", "9223372036854775806.5", true),
    ];
    for (range, version, want) in cases {
        assert_eq!(r(range).matches(&v(version)), want, "{range} on {version}");
    }
}

// regclient `NewConstraint`: `strings.Fields` splitting (any Unicode
// whitespace) with every comparator required (`Check` returns false on
// the first failure).
#[test]
fn comparators_in_one_range_are_anded() {
    let range = r("  >=1.0.0 \t<2.0.0\u{a0} ");
    assert_eq!(range.to_string(), "  >=1.0.0 \t<2.0.0\u{a0} ");
    for (version, want) in [
        ("1.0.0", true),
        ("1.5.0", true),
        ("v2.0.0-alpine3.21", true), // prerelease of 2.0.0 sorts below it
        ("2.0.0-alpine", true),
        ("2.0.0", false),
        ("2.1.0", false),
        ("0.9.0", false),
        ("1.0.0-rc1", false),
    ] {
        assert_eq!(range.matches(&v(version)), want, "{version}");
    }
    let narrow = r(">1.0 <=1.2 ~1.1");
    assert!(narrow.matches(&v("1.1.7")));
    assert!(!narrow.matches(&v("1.2.0")));
    assert!(!narrow.matches(&v("1.0.5")));
}

// regsync `filterTagList`: skip `""` entries, OR across entries, drop tags
// that are not versions, and filter nothing if no entries remain.
#[test]
fn range_set_is_ored_and_drops_non_versions() {
    let set = RangeSet::parse(&[">=1.0.0 <2.0.0", "", ">=4.0.0"]).expect("valid");
    assert!(!set.is_empty());
    assert_eq!(set.ranges().len(), 2);
    assert_eq!(set.to_string(), r#"[">=1.0.0 <2.0.0", ">=4.0.0"]"#);
    for (tag, want) in [
        ("1.5.0", true),
        ("v2.0.0-alpine3.21", true),
        ("3.0.0", false),
        ("4.0.0", true),
        ("v4.1", true),
        ("0.9", false),
        ("latest", false),
        ("stable-alpine", false),
    ] {
        assert_eq!(set.matches_tag(tag), want, "{tag}");
    }

    let none: [&str; 0] = [];
    for empty in [RangeSet::parse(&none), RangeSet::parse(&[""])] {
        let empty = empty.expect("valid");
        assert!(empty.is_empty());
        assert_eq!(empty.to_string(), "[]");
        assert!(empty.matches_tag("latest"));
        assert!(empty.matches_tag("1.0.0"));
    }
    let owned = vec![String::from("^1")];
    assert!(RangeSet::parse(&owned).expect("valid").matches_tag("1.4"));
}

// regclient `NewConstraint` rejections: empty after trimming, and any
// comparator whose version fails `NewVersion` (which covers a space after
// an operator, unknown operators, wildcards, `||` and hyphen ranges).
#[test]
fn rejects_bad_ranges_like_regsync() {
    // (range, variant, the operator / comparator / version it names)
    let cases = [
        ("", "Empty", ""),
        (" \t ", "Empty", ""),
        (">= 1.0.0", "MissingVersion", ">="),
        ("^", "MissingVersion", "^"),
        ("~ 1.2", "MissingVersion", "~"),
        ("=>1.0", "BadOperator", "=>1.0"),
        ("==1.0", "BadOperator", "==1.0"),
        ("~>1.2", "BadOperator", "~>1.2"),
        ("^~1", "BadOperator", "^~1"),
        ("!=1", "BadOperator", "!=1"),
        ("<>1", "BadOperator", "<>1"),
        ("1.0 || 2.0", "BadOperator", "||"),
        ("1.0 - 2.0", "BadOperator", "-"),
        ("1.x", "BadVersion", "1.x"),
        ("*", "BadVersion", "*"),
        (">=abc", "BadVersion", "abc"),
        ("invalid range", "BadVersion", "invalid"),
        (
            ">=1.0 <9223372036854775808",
            "BadVersion",
            "9223372036854775808",
        ),
    ];
    let cases = cases.map(|(text, variant, detail)| {
        let (range, detail) = (text.to_owned(), detail.to_owned());
        let want = match variant {
            "Empty" => RangeError::Empty { range },
            "MissingVersion" => RangeError::MissingVersion {
                range,
                operator: detail,
            },
            "BadOperator" => RangeError::BadOperator { range, at: detail },
            _ => RangeError::BadVersion {
                range,
                version: detail,
            },
        };
        (text, want)
    });
    for (text, want) in cases {
        let got = Range::parse(text).expect_err(text);
        assert_eq!(got, want, "{text:?}");
        assert_eq!(got.range(), text);
        assert!(got.to_string().contains(&format!("{text:?}")), "{got}");
    }
    // A bad entry fails the whole set and is named in the error.
    let err = RangeSet::parse(&[">=1", "1.x"]).expect_err("bad entry");
    assert_eq!(err.range(), "1.x");
    assert_eq!(
        RangeSet::parse(&[">=1", "   "]).expect_err("blank entry"),
        RangeError::Empty {
            range: "   ".into()
        }
    );
}

/// A direct, step-by-step rendering of regclient's `Compare`, used as the
/// oracle for the key-based `Ord`.
fn reference_cmp(a: &Version, b: &Version) -> Ordering {
    fn atoi(s: &str) -> Option<i64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse::<i64>().ok()
    }
    fn split_numeric(s: &str) -> (&str, &str, &str) {
        let head_end = s
            .bytes()
            .position(|c| c.is_ascii_digit())
            .unwrap_or(s.len());
        let num_end = s[head_end..]
            .bytes()
            .position(|c| !c.is_ascii_digit())
            .map_or(s.len(), |i| head_end + i);
        (&s[..head_end], &s[head_end..num_end], &s[num_end..])
    }
    for i in 0..a.parts.len().max(b.parts.len()) {
        let (x, y) = (a.parts.get(i).unwrap_or(&0), b.parts.get(i).unwrap_or(&0));
        if x != y {
            return x.cmp(y);
        }
    }
    match (a.prerelease.is_empty(), b.prerelease.is_empty()) {
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ if a.prerelease == b.prerelease => return Ordering::Equal,
        _ => {}
    }
    let ap: Vec<&str> = a.prerelease.split('.').collect();
    let bp: Vec<&str> = b.prerelease.split('.').collect();
    for (mut ac, mut bc) in ap.iter().copied().zip(bp.iter().copied()) {
        while !ac.is_empty() && !bc.is_empty() {
            let (ah, an, at) = split_numeric(ac);
            let (bh, bn, bt) = split_numeric(bc);
            if ah != bh {
                return ah.cmp(bh);
            }
            match (atoi(an), atoi(bn)) {
                (None, None) => return Ordering::Equal,
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
                (Some(x), Some(y)) if x != y => return x.cmp(&y),
                _ => {}
            }
            (ac, bc) = (at, bt);
        }
        if !ac.is_empty() {
            return Ordering::Greater;
        }
        if !bc.is_empty() {
            return Ordering::Less;
        }
    }
    ap.len().cmp(&bp.len())
}

/// Prerelease text from a few identifiers, so shared prefixes, digit-free
/// text, empty identifiers and over-long digit runs are common.
fn prerelease_text() -> impl Strategy<Value = String> {
    "(a|b|1|9|10|01|a1|1a|a9|a-1|-|99999999999999999999)\
     (\\.(a|b|1|9|10|a1|a10|1a||99999999999999999999)){0,3}"
}

/// Version strings with few distinct values, so equal and near-equal pairs are common.
fn version_text() -> impl Strategy<Value = String> {
    (
        "v?(0|1|2|01|9223372036854775807)(\\.(0|1|2|00)){0,3}",
        proptest::option::of(prerelease_text()),
        "(\\+[0-9a-z.-]{0,3})?",
    )
        .prop_map(|(numbers, pre, meta)| match pre {
            Some(pre) => format!("{numbers}-{pre}{meta}"),
            None => format!("{numbers}{meta}"),
        })
}

/// Two versions that often share their numeric part, so the prerelease rules decide.
fn version_pair() -> impl Strategy<Value = (Version, Version)> {
    prop_oneof![
        (version(), version()),
        ("v?1(\\.0)?", prerelease_text(), prerelease_text())
            .prop_map(|(n, p, q)| (v(&format!("{n}-{p}")), v(&format!("1-{q}")))),
    ]
}

fn version() -> impl Strategy<Value = Version> {
    version_text().prop_map(|s| v(&s))
}

/// Release versions without `v`, prerelease or metadata, and small parts.
fn release_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(0u64..4, 1..5).prop_map(|parts| {
        parts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    })
}

proptest! {
    #[test]
    fn parsers_never_panic(s in "\\PC{0,40}") {
        let _ = Version::parse(&s);
        if let Ok(range) = Range::parse(&s) {
            let _ = range.to_string();
            let _ = RangeSet::parse(&[s.as_str()]).map(|set| set.matches_tag(&s));
        }
    }

    #[test]
    fn range_like_input_never_panics(
        s in "((\\^|~|>=|<=|>|<|=|=>)?v?[0-9]{1,21}(\\.[0-9]{1,21}){0,3}(-[a-z0-9.]{0,4})? ?){1,3}",
        tag in "v?[0-9]{1,21}(\\.[0-9]{1,21}){0,3}(-[a-z0-9.]{0,4})?",
    ) {
        let _ = Version::parse(&tag);
        if let Ok(set) = RangeSet::parse(&[s.as_str()]) {
            let _ = set.matches_tag(&tag);
        }
    }

    #[test]
    fn order_matches_regclient((a, b) in version_pair()) {
        prop_assert_eq!(a.cmp(&b), reference_cmp(&a, &b), "{} vs {}", a, b);
    }

    #[test]
    fn order_is_total_and_consistent_with_eq(a in version(), b in version(), c in version()) {
        prop_assert_eq!(a.cmp(&a), Ordering::Equal);
        prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
        prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
        prop_assert_eq!(a.partial_cmp(&b), Some(a.cmp(&b)));
        if a <= b && b <= c {
            prop_assert!(a <= c, "{} <= {} <= {} but not {} <= {}", a, b, c, a, c);
        }
        if a == b && b == c {
            prop_assert!(a == c);
        }
    }

    #[test]
    fn v_prefix_and_trailing_zeros_do_not_change_order(s in release_text(), zeros in 0usize..3, other in version()) {
        let base = v(&s);
        let padded = v(&format!("v{s}{}", ".0".repeat(zeros)));
        prop_assert_eq!(&base, &padded);
        prop_assert_eq!(base.cmp(&other), padded.cmp(&other));
    }

    #[test]
    fn bounds_include_or_exclude_themselves(x in version_text()) {
        let version = v(&x);
        for op in [">=", "<=", "=", ""] {
            let range = r(&format!("{op}{x}"));
            prop_assert!(range.matches(&version), "{} should match {}", range, x);
        }
        for op in ["<", ">"] {
            let range = r(&format!("{op}{x}"));
            prop_assert!(!range.matches(&version), "{} should not match {}", range, x);
        }
    }

    #[test]
    fn range_is_the_and_of_its_comparators(a in version_text(), b in version_text(), c in version()) {
        let both = r(&format!(">={a} <{b}")).matches(&c);
        let each = r(&format!(">={a}")).matches(&c) && r(&format!("<{b}")).matches(&c);
        prop_assert_eq!(both, each);
        prop_assert_eq!(both, c >= v(&a) && c < v(&b));
    }

    #[test]
    fn caret_is_lower_bound_and_next_breaking_release(
        major in 0u64..3, minor in 0u64..3, patch in 0u64..3, c in version(),
    ) {
        let lower = format!("{major}.{minor}.{patch}");
        let upper = if major > 0 {
            format!("{}.0.0", major + 1)
        } else if minor > 0 {
            format!("0.{}.0", minor + 1)
        } else {
            format!("0.0.{}", patch + 1)
        };
        prop_assert_eq!(
            r(&format!("^{lower}")).matches(&c),
            r(&format!(">={lower} <{upper}")).matches(&c)
        );
        prop_assert_eq!(
            r(&format!("~{lower}")).matches(&c),
            r(&format!(">={lower} <{major}.{}.0", minor + 1)).matches(&c)
        );
    }

    #[test]
    fn range_set_is_the_or_of_its_ranges(a in version_text(), b in version_text(), tag in version_text()) {
        let texts = [format!(">={a}"), format!("<{b}")];
        let set = RangeSet::parse(&texts).expect("valid");
        let version = v(&tag);
        let any = texts.iter().any(|t| r(t).matches(&version));
        prop_assert_eq!(set.matches_tag(&tag), any);
        prop_assert_eq!(set.matches(&version), any);
    }
}
