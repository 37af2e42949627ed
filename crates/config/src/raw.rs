//! The configuration as written: regsync's YAML keys, every value optional so that
//! "unset" can be told from "set to the zero value" (regsync's `*bool` tri-state).
//! Nothing here is validated; `resolve` turns it into a [`crate::Config`].
use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

/// A value with the line and column it came from.
pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawConfig {
    pub(crate) version: Option<S<i64>>,
    #[serde(default)]
    pub(crate) creds: Vec<S<RawHost>>,
    #[serde(default)]
    pub(crate) defaults: RawDefaults,
    #[serde(default)]
    pub(crate) sync: Vec<S<RawSync>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawHost {
    pub(crate) registry: Option<S<String>>,
    pub(crate) hostname: Option<S<String>>,
    pub(crate) user: Option<S<String>>,
    pub(crate) pass: Option<S<String>>,
    pub(crate) token: Option<S<String>>,
    pub(crate) cred_helper: Option<S<String>>,
    pub(crate) cred_expire: Option<S<Scalar>>,
    pub(crate) cred_host: Option<S<String>>,
    pub(crate) tls: Option<S<String>>,
    pub(crate) regcert: Option<S<String>>,
    pub(crate) client_cert: Option<S<String>>,
    pub(crate) client_key: Option<S<String>>,
    pub(crate) path_prefix: Option<S<String>>,
    pub(crate) mirrors: Option<Vec<S<String>>>,
    pub(crate) priority: Option<S<u32>>,
    pub(crate) repo_auth: Option<bool>,
    pub(crate) req_per_sec: Option<S<f64>>,
    pub(crate) req_concurrent: Option<S<i64>>,
    pub(crate) blob_chunk: Option<S<i64>>,
    pub(crate) blob_max: Option<S<i64>>,
    pub(crate) api_opts: Option<BTreeMap<String, Scalar>>,
    /// Deprecated in regsync; accepted and ignored with a warning.
    pub(crate) api: Option<IgnoredAny>,
    /// Deprecated in regsync in favour of `tls`.
    pub(crate) scheme: Option<S<String>>,
    /// regferry extension: bounds for this registry.
    pub(crate) limits: Option<S<RawLimits>>,
}

/// `limits`: durations in Go syntax, sizes in bytes (a number, or with a unit such as
/// `8MiB`), counts as numbers.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawLimits {
    pub(crate) connect_timeout: Option<S<Scalar>>,
    pub(crate) response_timeout: Option<S<Scalar>>,
    pub(crate) idle_timeout: Option<S<Scalar>>,
    pub(crate) request_timeout: Option<S<Scalar>>,
    pub(crate) min_speed: Option<S<Scalar>>,
    pub(crate) token_size: Option<S<Scalar>>,
    pub(crate) manifest_size: Option<S<Scalar>>,
    pub(crate) page_size: Option<S<Scalar>>,
    pub(crate) listing_size: Option<S<Scalar>>,
    pub(crate) pages: Option<S<Scalar>>,
    pub(crate) names: Option<S<Scalar>>,
    pub(crate) index_depth: Option<S<Scalar>>,
    pub(crate) manifests_per_image: Option<S<Scalar>>,
    pub(crate) referrers_per_image: Option<S<Scalar>>,
}

/// Declares a struct holding the keys that `defaults` and each `sync` entry share (and that
/// entries inherit) next to its own keys. Written out rather than `#[serde(flatten)]`,
/// because flattening loses line numbers and hides unknown keys from the warning pass.
macro_rules! with_inheritable {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Default, Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub(crate) struct $name {
            $($(#[$fm])* pub(crate) $field: $ty,)*
            pub(crate) interval: Option<S<Scalar>>,
            pub(crate) schedule: Option<S<String>>,
            pub(crate) backup: Option<S<String>>,
            pub(crate) ratelimit: Option<RawRateLimit>,
            pub(crate) media_types: Option<Vec<S<String>>>,
            pub(crate) include_external: Option<bool>,
            pub(crate) digest_tags: Option<bool>,
            pub(crate) referrers: Option<bool>,
            pub(crate) referrer_filters: Option<Vec<S<RawReferrerFilter>>>,
            pub(crate) referrer_source: Option<S<OneOrMany>>,
            pub(crate) referrer_target: Option<S<String>>,
            pub(crate) referrer_slow: Option<bool>,
            pub(crate) fast_check: Option<bool>,
            /// The spelling regsync's documentation uses; its parser ignores it, regferry reads it.
            pub(crate) fast_copy: Option<bool>,
            pub(crate) force_recursive: Option<bool>,
            /// Parsed but never executed by regsync (regclient#578).
            pub(crate) hooks: Option<IgnoredAny>,
            /// regferry extension: what a source image needs before it is copied.
            pub(crate) require: Option<S<RawRequire>>,
        }

        impl $name {
            /// Moves the shared keys out, leaving `None` behind.
            pub(crate) fn take_inheritable(&mut self) -> RawInheritable {
                RawInheritable {
                    interval: self.interval.take(),
                    schedule: self.schedule.take(),
                    backup: self.backup.take(),
                    ratelimit: self.ratelimit.take(),
                    media_types: self.media_types.take(),
                    include_external: self.include_external.take(),
                    digest_tags: self.digest_tags.take(),
                    referrers: self.referrers.take(),
                    referrer_filters: self.referrer_filters.take(),
                    referrer_source: self.referrer_source.take(),
                    referrer_target: self.referrer_target.take(),
                    referrer_slow: self.referrer_slow.take(),
                    fast_check: self.fast_check.take(),
                    fast_copy: self.fast_copy.take(),
                    force_recursive: self.force_recursive.take(),
                    hooks: self.hooks.take(),
                    require: self.require.take(),
                }
            }
        }
    };
}

/// `require`: referrers the source image must have, and signatures it must carry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawRequire {
    #[serde(default)]
    pub(crate) referrers: Vec<S<RawReferrerFilter>>,
    pub(crate) signature: Option<S<RawSignature>>,
}

/// `require.signature`: cosign public keys (PEM), one or a list.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawSignature {
    pub(crate) key: Option<S<OneOrMany>>,
}

/// The keys an entry inherits from `defaults`, taken out of either.
#[derive(Debug, Default)]
pub(crate) struct RawInheritable {
    pub(crate) interval: Option<S<Scalar>>,
    pub(crate) schedule: Option<S<String>>,
    pub(crate) backup: Option<S<String>>,
    pub(crate) ratelimit: Option<RawRateLimit>,
    pub(crate) media_types: Option<Vec<S<String>>>,
    pub(crate) include_external: Option<bool>,
    pub(crate) digest_tags: Option<bool>,
    pub(crate) referrers: Option<bool>,
    pub(crate) referrer_filters: Option<Vec<S<RawReferrerFilter>>>,
    pub(crate) referrer_source: Option<S<OneOrMany>>,
    pub(crate) referrer_target: Option<S<String>>,
    pub(crate) referrer_slow: Option<bool>,
    pub(crate) fast_check: Option<bool>,
    pub(crate) fast_copy: Option<bool>,
    pub(crate) force_recursive: Option<bool>,
    pub(crate) hooks: Option<IgnoredAny>,
    pub(crate) require: Option<S<RawRequire>>,
}

with_inheritable! {
    RawDefaults {
        parallel: Option<S<i64>>,
        skip_docker_config: Option<bool>,
        user_agent: Option<S<String>>,
        cache_count: Option<S<i64>>,
        cache_time: Option<S<Scalar>>,
        blob_limit: Option<S<i64>>,
        /// regferry extension: how often `server` reads a target in full.
        target_recheck: Option<S<Scalar>>,
        /// regferry extension: bounds for every registry and on one image's graph.
        limits: Option<S<RawLimits>>,
    }
}

with_inheritable! {
    RawSync {
        source: Option<S<String>>,
        target: Option<S<String>>,
        /// regferry extension: several targets, read from the source once.
        targets: Option<S<Vec<S<String>>>>,
        #[serde(rename = "type")]
        kind: Option<S<String>>,
        tags: Option<RawTagFilter>,
        tag_sets: Option<Vec<RawTagFilter>>,
        repos: Option<RawRepoFilter>,
        platform: Option<S<String>>,
        platforms: Option<Vec<S<String>>>,
        /// regferry extension: a name for the admin API and metrics.
        name: Option<S<String>>,
        /// regferry extension: delete target tags the source no longer has.
        prune: Option<S<RawPrune>>,
    }
}

/// `prune: true|false`, or `prune: {maxDelete: 10}` / `{maxDelete: "10%"}` (which enables it).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RawPrune {
    pub(crate) enabled: bool,
    pub(crate) max_delete: Option<Scalar>,
}

impl<'de> Deserialize<'de> for RawPrune {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawPrune;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or a map with `maxDelete` (a count, or a percentage such as \"10%\")")
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawPrune, E> {
                Ok(RawPrune {
                    enabled: v,
                    max_delete: None,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawPrune, A::Error> {
                let mut out = RawPrune {
                    enabled: true,
                    max_delete: None,
                };
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "maxDelete" => out.max_delete = Some(map.next_value::<Scalar>()?),
                        other => {
                            return Err(serde::de::Error::unknown_field(other, &["maxDelete"]));
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawTagFilter {
    #[serde(default)]
    pub(crate) allow: Vec<S<Scalar>>,
    #[serde(default)]
    pub(crate) deny: Vec<S<Scalar>>,
    #[serde(default)]
    pub(crate) semver_range: Vec<S<Scalar>>,
    /// regferry extension: keep only the N highest versions.
    pub(crate) latest: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawRepoFilter {
    #[serde(default)]
    pub(crate) allow: Vec<S<Scalar>>,
    #[serde(default)]
    pub(crate) deny: Vec<S<Scalar>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawRateLimit {
    pub(crate) min: Option<S<i64>>,
    pub(crate) retry: Option<S<Scalar>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawReferrerFilter {
    pub(crate) artifact_type: Option<String>,
    #[serde(default)]
    pub(crate) annotations: BTreeMap<String, Scalar>,
}

/// A scalar read as text whatever its YAML type, as Go reads a YAML scalar into a string:
/// `allow: [1.10]` is the tag "1.10", not the float 1.1. The second field says the value
/// was a YAML null (a blank `- ` item, `~`), read as "" as regsync reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Scalar(pub(crate) String, pub(crate) bool);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = String;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a single value (text, a number or true/false)")
            }
            fn visit_str<E>(self, v: &str) -> Result<String, E> {
                Ok(v.to_owned())
            }
            fn visit_bool<E>(self, v: bool) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_i64<E>(self, v: i64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_u64<E>(self, v: u64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_f64<E>(self, v: f64) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_unit<E>(self) -> Result<String, E> {
                Ok(String::new())
            }
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a single value (text, a number or true/false)")
            }
            fn visit_none<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new(), true))
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar(String::new(), true))
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
                Ok(Scalar(d.deserialize_str(Text)?, false))
            }
        }
        d.deserialize_option(V)
    }
}

/// One string or a list of strings (`referrerSource` may name several sources).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OneOrMany(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a reference or a list of references")
            }
            fn visit_str<E>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_unit<E>(self) -> Result<OneOrMany, E> {
                Ok(OneOrMany(Vec::new()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}
