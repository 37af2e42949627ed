//! `.Sync` for templates: the entry as regsync's templates see it.
use super::*;

/// `.Sync` as regsync's templates see it: the entry with defaults applied, Go field names.
pub(super) struct SyncData<'a> {
    pub(super) s: &'a RawSync,
    pub(super) kind: SyncKind,
    pub(super) interval: Option<Duration>,
    pub(super) trigger: &'a Option<Trigger>,
    pub(super) ratelimit: RateLimit,
    pub(super) media_types: &'a [String],
    pub(super) bools: [bool; 5],
    pub(super) backup: String,
    pub(super) source: String,
    pub(super) target: String,
    pub(super) referrer_source: String,
    pub(super) referrer_target: String,
}

impl SyncData<'_> {
    pub(super) fn value(&self) -> Value {
        let strs = |v: &[Spanned<Scalar>]| {
            Value::List(v.iter().map(|x| Value::Str(x.value.0.clone())).collect())
        };
        let tags = |t: Option<&RawTagFilter>| {
            let empty = RawTagFilter::default();
            let t = t.unwrap_or(&empty);
            Value::Map(BTreeMap::from([
                ("Allow".to_owned(), strs(&t.allow)),
                ("Deny".to_owned(), strs(&t.deny)),
                ("SemverRange".to_owned(), strs(&t.semver_range)),
            ]))
        };
        let schedule = match self.trigger {
            Some(Trigger::Schedule(s)) => s.as_str().to_owned(),
            _ => String::new(),
        };
        let [
            digest_tags,
            referrers,
            fast_check,
            force_recursive,
            include_external,
        ] = self.bools;
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        put("Source", Value::Str(self.source.clone()));
        put("Target", Value::Str(self.target.clone()));
        put("Type", Value::Str(self.kind.as_str().to_owned()));
        put("Tags", tags(self.s.tags.as_ref()));
        put(
            "TagSets",
            Value::List(
                self.s
                    .tag_sets
                    .iter()
                    .flatten()
                    .map(|t| tags(Some(t)))
                    .collect(),
            ),
        );
        let repos = self.s.repos.as_ref();
        put(
            "Repos",
            Value::Map(BTreeMap::from([
                (
                    "Allow".to_owned(),
                    repos.map_or(Value::List(vec![]), |r| strs(&r.allow)),
                ),
                (
                    "Deny".to_owned(),
                    repos.map_or(Value::List(vec![]), |r| strs(&r.deny)),
                ),
            ])),
        );
        put(
            "Platform",
            Value::Str(
                self.s
                    .platform
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default(),
            ),
        );
        put(
            "Platforms",
            Value::List(
                self.s
                    .platforms
                    .iter()
                    .flatten()
                    .map(|p| Value::Str(p.value.clone()))
                    .collect(),
            ),
        );
        put("DigestTags", Value::Bool(digest_tags));
        put("Referrers", Value::Bool(referrers));
        put("ReferrerSource", Value::Str(self.referrer_source.clone()));
        put("ReferrerTarget", Value::Str(self.referrer_target.clone()));
        put("FastCheck", Value::Bool(fast_check));
        put("ForceRecursive", Value::Bool(force_recursive));
        put("IncludeExternal", Value::Bool(include_external));
        put("Backup", Value::Str(self.backup.clone()));
        put(
            "Interval",
            Value::Str(
                self.interval
                    .map(go_duration_string)
                    .unwrap_or_else(|| "0s".to_owned()),
            ),
        );
        put("Schedule", Value::Str(schedule));
        put(
            "RateLimit",
            Value::Map(BTreeMap::from([
                ("Min".to_owned(), Value::Int(self.ratelimit.min as i64)),
                (
                    "Retry".to_owned(),
                    Value::Str(go_duration_string(self.ratelimit.retry)),
                ),
            ])),
        );
        put(
            "MediaTypes",
            Value::List(
                self.media_types
                    .iter()
                    .map(|t| Value::Str(t.clone()))
                    .collect(),
            ),
        );
        Value::Map(m)
    }
}
