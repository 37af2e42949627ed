//! regsync's `semverRange` tag filter: its version syntax, ordering and range dialect.
//!
//! regsync does not use a standard semver library; it has its own small parser
//! (regclient `internal/semver/semver.go`, unchanged in meaning since
//! `semverRange` arrived in v0.10.0). The `semver` crate rejects much of what
//! it accepts (`v5`, `1.2`, `10.0.17763.2114`), so this module reproduces it:
//!
//! - A version is an optional single lowercase `v`, dot-separated decimal
//!   numbers (any count, leading zeros allowed), then `-prerelease` and
//!   `+metadata`. `+` is split off first, then the first `-`, so `1.0+b-1` has
//!   metadata `b-1` and no prerelease. Prerelease and metadata text is not
//!   validated, and an empty prerelease (`1.0-`) is the same as none.
//! - Ordering pads missing numbers with 0 (`1.2` == `1.2.0` == `v1.2.0.0`),
//!   puts a prerelease below its release and ignores metadata. Prereleases
//!   compare by dot-separated identifiers, each split into text and digit runs
//!   (text bytewise, digits numerically), not by the semver 2.0 rules. One quirk
//!   is kept on purpose: once both sides reach the same digit-free text, the
//!   comparison stops as *equal*, so `1.0-alpha.1` == `1.0-alpha.2`.
//! - A range is whitespace-separated comparators that must all hold. Each is
//!   `>=`, `<=`, `>`, `<`, `=`, `^`, `~` or nothing (equality), written with
//!   **no** space before the version. There are no wildcards, `||` or hyphen
//!   ranges. `^1.2.3` is `>=1.2.3 <2.0.0`, `^0.2.3` is `>=0.2.3 <0.3.0`, and
//!   `^0.0.3` (also `^0`) bumps the patch. `~` always bumps the minor, so `~1` is
//!   `>=1 <1.1.0`, unlike npm.
//! - Ranges never exclude prereleases, so `>=1.0.0 <2.0.0` matches
//!   `v2.0.0-alpine3.21`, which sorts below `2.0.0`.
//! - Ranges in a list are alternatives (OR). `""` entries are skipped, and a list with none
//!   left filters nothing. Tags that are not versions never match a non-empty list.
//!
//! **Numeric limits.** Go parses each number with `strconv.Atoi`, so a number
//! above `i64::MAX` is not a number (on the 64-bit platforms regsync ships
//! for). We do the same, without panicking: a tag with such a version part is
//! not a version, and such a digit run in a prerelease counts as "no number",
//! as in Go. When `^`/`~` would bump a number past `i64::MAX`, Go's arithmetic
//! wraps and the range matches nothing. Here that comparator is simply "never".
//!
//! **When errors show up.** regsync reports a bad range only when it filters
//! tags, which happens on each sync. We parse at config load instead. The same
//! strings are rejected; they are just rejected sooner.

use std::cmp::Ordering;
use std::fmt;

/// The largest value Go's `strconv.Atoi` returns on a 64-bit platform (`i64::MAX`).
const GO_INT_MAX: u64 = u64::MAX >> 1;

/// Characters that start an operator, used only to word error messages.
const OPERATOR_CHARS: &[char] = &['<', '>', '=', '~', '^', '!', '|', '-'];

/// Parses a digit run the way Go's `strconv.Atoi` does, given that signs can
/// never reach it here: ASCII digits only, non-empty, at most `i64::MAX`.
fn parse_go_int(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    // `u64::MAX` has 20 digits and `i64::MAX` has 19, so any longer digit run
    // is out of range. Checking the length first means `parse` never overflows.
    if significant.len() > 19 {
        return None;
    }
    if significant.is_empty() {
        return Some(0);
    }
    significant.parse::<u64>().ok().filter(|n| *n <= GO_INT_MAX)
}

/// A version as regsync reads tags: optional leading `v`, any number of dot-separated numeric parts, optional `-prerelease` and `+metadata`.
///
/// Equality is regsync's: `1.2`, `v1.2.0` and `1.2.0+build` are equal. This
/// keeps `==` consistent with [`Ord`]. Use [`Version::as_str`] to tell the tags apart.
#[derive(Debug, Clone)]
pub struct Version {
    /// The text as given, including any `v`, prerelease and metadata.
    original: String,
    /// Numeric parts, each at most `i64::MAX`; never empty.
    parts: Vec<u64>,
    /// Text after the first `-` (before any `+`); empty when absent.
    prerelease: String,
    /// Text after the first `+`; parsed but never compared.
    metadata: String,
}

impl Version {
    /// Parses a tag; `None` when regsync would not treat it as a version.
    pub fn parse(tag: &str) -> Option<Version> {
        let rest = tag.strip_prefix('v').unwrap_or(tag);
        let (rest, metadata) = rest.split_once('+').unwrap_or((rest, ""));
        let (numbers, prerelease) = rest.split_once('-').unwrap_or((rest, ""));
        let parts = numbers
            .split('.')
            .map(parse_go_int)
            .collect::<Option<Vec<u64>>>()?;
        Some(Version {
            original: tag.to_owned(),
            parts,
            prerelease: prerelease.to_owned(),
            metadata: metadata.to_owned(),
        })
    }

    /// The tag text this version was parsed from.
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The prerelease text after the first `-`, or `None` for a release (including `1.0-`).
    pub fn prerelease(&self) -> Option<&str> {
        Some(self.prerelease.as_str()).filter(|p| !p.is_empty())
    }

    /// The build metadata after the first `+`, which never affects ordering; `None` when empty.
    pub fn metadata(&self) -> Option<&str> {
        Some(self.metadata.as_str()).filter(|m| !m.is_empty())
    }

    /// A release version built from numeric parts, for range bounds.
    fn from_parts(parts: Vec<u64>) -> Version {
        let original = parts
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".");
        Version {
            original,
            parts,
            prerelease: String::new(),
            metadata: String::new(),
        }
    }

    /// Numeric part `i`, 0 when the version has fewer parts.
    fn part(&self, i: usize) -> u64 {
        self.parts.get(i).copied().unwrap_or(0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let len = self.parts.len().max(other.parts.len());
        (0..len)
            .map(|i| self.part(i).cmp(&other.part(i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
            .then_with(|| compare_prereleases(&self.prerelease, &other.prerelease))
    }
}

/// Compares prerelease texts, where an empty one means "a release", which sorts above any prerelease.
fn compare_prereleases(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => prerelease_key(a).cmp(&prerelease_key(b)),
    }
}

/// One step of regsync's prerelease comparison. Variant order matters only for
/// `End` < `Text`: keys line up so that a `Number` is only ever compared with a
/// `Number`. `None` sorts below `Some`, which is the rule regsync uses.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Token<'a> {
    /// End of one dot-separated identifier. It sorts below more text, so `rc1` < `rc1a` and an empty identifier < `a`.
    End,
    /// A run of non-digits (empty when the identifier starts with a digit).
    Text(&'a str),
    /// The digit run after the text. `None` when there is none or it exceeds `i64::MAX`.
    Number(Option<u64>),
}

/// Turns regsync's prerelease comparison into a plain lexicographic key.
///
/// regsync walks the identifiers of both sides together, comparing text runs
/// as strings and digit runs as numbers. A shorter identifier or list of
/// identifiers is less. When both digit runs fail to parse it returns "equal"
/// at once and ignores the rest. Ending the key after the first unparsable
/// run does the same thing. Because this is an ordinary lexicographic key, the
/// result is a total order by construction.
fn prerelease_key(prerelease: &str) -> Vec<Token<'_>> {
    let mut key = Vec::new();
    for identifier in prerelease.split('.') {
        let mut rest = identifier;
        while !rest.is_empty() {
            let text_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (text, after) = rest.split_at(text_len);
            let digits_len = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            let (digits, tail) = after.split_at(digits_len);
            let number = parse_go_int(digits);
            key.push(Token::Text(text));
            key.push(Token::Number(number));
            if number.is_none() {
                return key;
            }
            rest = tail;
        }
        key.push(Token::End);
    }
    key
}

/// A comparison operator after `^` and `~` have been expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

/// Comparison operators in the order regsync tries them: two-character ones
/// first, so `>=1` is not read as `>` followed by the version `=1`.
const OPERATORS: [(&str, Op); 5] = [
    (">=", Op::Ge),
    ("<=", Op::Le),
    (">", Op::Gt),
    ("<", Op::Lt),
    ("=", Op::Eq),
];

impl Op {
    /// Whether `candidate.cmp(bound)` satisfies this operator.
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Op::Eq => ordering.is_eq(),
            Op::Gt => ordering.is_gt(),
            Op::Ge => ordering.is_ge(),
            Op::Lt => ordering.is_lt(),
            Op::Le => ordering.is_le(),
        }
    }
}

/// One condition of a range.
#[derive(Debug, Clone)]
enum Clause {
    /// `candidate <op> version`.
    Compare(Op, Version),
    /// The upper bound of a `^`/`~` that overflowed `i64::MAX`. In Go the
    /// number wraps negative and the bound lies below every version.
    Never,
}

impl Clause {
    fn holds(&self, candidate: &Version) -> bool {
        match self {
            Clause::Compare(op, bound) => op.holds(candidate.cmp(bound)),
            Clause::Never => false,
        }
    }
}

/// Adds one to a version number as Go would, giving `None` where Go's `int` would wrap.
fn bump(n: u64) -> Option<u64> {
    n.checked_add(1).filter(|n| *n <= GO_INT_MAX)
}

/// The exclusive upper bound of `^v`: bump the first non-zero of major, minor, patch.
fn caret_upper(v: &Version) -> Clause {
    let parts = if v.part(0) > 0 {
        bump(v.part(0)).map(|major| vec![major, 0, 0])
    } else if v.part(1) > 0 {
        bump(v.part(1)).map(|minor| vec![0, minor, 0])
    } else {
        bump(v.part(2)).map(|patch| vec![0, 0, patch])
    };
    parts.map_or(Clause::Never, |p| {
        Clause::Compare(Op::Lt, Version::from_parts(p))
    })
}

/// The exclusive upper bound of `~v`: always the next minor, even for `~1`.
fn tilde_upper(v: &Version) -> Clause {
    bump(v.part(1)).map_or(Clause::Never, |minor| {
        Clause::Compare(Op::Lt, Version::from_parts(vec![v.part(0), minor, 0]))
    })
}

/// Why a `semverRange` string was rejected; each variant names the range text.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeError {
    /// The range holds no comparators (only whitespace).
    #[error("semver range {range:?} is empty")]
    Empty {
        /// The range text as written.
        range: String,
    },
    /// An operator stands alone, as in `>= 1.0.0`; regsync allows no space before the version.
    #[error(
        "semver range {range:?}: operator {operator:?} has no version after it \
         (write it without a space, e.g. \">=1.0.0\")"
    )]
    MissingVersion {
        /// The range text as written.
        range: String,
        /// The operator with nothing after it.
        operator: String,
    },
    /// A comparator starts with an operator regsync does not support (`=>`, `~>`, `!=`, `||`, `-`, ...).
    #[error(
        "semver range {range:?}: unsupported operator in {at:?} \
         (supported: =, >, >=, <, <=, ^, ~, or none for equality)"
    )]
    BadOperator {
        /// The range text as written.
        range: String,
        /// The whitespace-separated comparator that holds the operator.
        at: String,
    },
    /// The text after the operator is not a version (wildcards such as `1.x` and `*` are not supported).
    #[error(
        "semver range {range:?}: {version:?} is not a version \
         (expected an optional v, dot-separated numbers, -prerelease, +metadata)"
    )]
    BadVersion {
        /// The range text as written.
        range: String,
        /// The text that failed to parse as a version.
        version: String,
    },
}

impl RangeError {
    /// The range text the error is about.
    pub fn range(&self) -> &str {
        match self {
            RangeError::Empty { range }
            | RangeError::MissingVersion { range, .. }
            | RangeError::BadOperator { range, .. }
            | RangeError::BadVersion { range, .. } => range,
        }
    }
}

/// One range string: space-separated comparators, all must hold (AND).
#[derive(Debug, Clone)]
pub struct Range {
    /// The text as written, for `Display` and error messages.
    text: String,
    /// Never empty.
    clauses: Vec<Clause>,
}

impl Range {
    /// Parses one range string, rejecting exactly what regsync rejects.
    pub fn parse(s: &str) -> Result<Range, RangeError> {
        let mut clauses = Vec::new();
        // Go's `strings.Fields` and Rust's `split_whitespace` both split on
        // the Unicode White_Space property.
        for comparator in s.split_whitespace() {
            parse_comparator(s, comparator, &mut clauses)?;
        }
        if clauses.is_empty() {
            return Err(RangeError::Empty {
                range: s.to_owned(),
            });
        }
        Ok(Range {
            text: s.to_owned(),
            clauses,
        })
    }

    /// Whether `v` satisfies every comparator.
    pub fn matches(&self, v: &Version) -> bool {
        self.clauses.iter().all(|c| c.holds(v))
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses one comparator of `range` and appends its clauses.
fn parse_comparator(
    range: &str,
    comparator: &str,
    clauses: &mut Vec<Clause>,
) -> Result<(), RangeError> {
    // `^` and `~` are checked before the comparison operators, as in regsync.
    if let Some(rest) = comparator.strip_prefix('^') {
        let lower = operand(range, comparator, "^", rest)?;
        clauses.push(caret_upper(&lower));
        clauses.push(Clause::Compare(Op::Ge, lower));
        return Ok(());
    }
    if let Some(rest) = comparator.strip_prefix('~') {
        let lower = operand(range, comparator, "~", rest)?;
        clauses.push(tilde_upper(&lower));
        clauses.push(Clause::Compare(Op::Ge, lower));
        return Ok(());
    }
    let (operator, op, rest) = OPERATORS
        .iter()
        .find_map(|(text, op)| comparator.strip_prefix(text).map(|rest| (*text, *op, rest)))
        .unwrap_or(("", Op::Eq, comparator));
    let version = operand(range, comparator, operator, rest)?;
    clauses.push(Clause::Compare(op, version));
    Ok(())
}

/// Parses the version after `operator` in `comparator`, classifying the failure.
fn operand(
    range: &str,
    comparator: &str,
    operator: &str,
    text: &str,
) -> Result<Version, RangeError> {
    if let Some(v) = Version::parse(text) {
        return Ok(v);
    }
    // Every branch below is a rejection in regsync too; they differ only in wording.
    Err(if text.is_empty() {
        RangeError::MissingVersion {
            range: range.to_owned(),
            operator: operator.to_owned(),
        }
    } else if text.starts_with(OPERATOR_CHARS) {
        RangeError::BadOperator {
            range: range.to_owned(),
            at: comparator.to_owned(),
        }
    } else {
        RangeError::BadVersion {
            range: range.to_owned(),
            version: text.to_owned(),
        }
    })
}

/// A list of ranges from the config: any may match (OR).
#[derive(Debug, Clone, Default)]
pub struct RangeSet {
    ranges: Vec<Range>,
}

impl RangeSet {
    /// Parses a `semverRange` list, skipping `""` entries as regsync does. Whitespace-only entries are errors.
    pub fn parse<S: AsRef<str>>(ranges: &[S]) -> Result<RangeSet, RangeError> {
        let ranges = ranges
            .iter()
            .map(AsRef::as_ref)
            .filter(|r| !r.is_empty())
            .map(Range::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RangeSet { ranges })
    }

    /// Whether a tag passes: it must be a version matching some range. An empty set passes every tag, as in regsync.
    pub fn matches_tag(&self, tag: &str) -> bool {
        if self.ranges.is_empty() {
            return true;
        }
        Version::parse(tag).is_some_and(|v| self.matches(&v))
    }

    /// Whether `v` matches some range. An empty set matches every version.
    pub fn matches(&self, v: &Version) -> bool {
        self.ranges.is_empty() || self.ranges.iter().any(|r| r.matches(v))
    }

    /// True when no ranges are left after skipping `""` entries, so the set filters nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The parsed ranges, in config order.
    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }
}

/// Renders the ranges as a list of quoted strings, e.g. `[">=1.0.0 <2.0.0", ">=4.0.0"]`.
impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, range) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{:?}", range.text)?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests;
