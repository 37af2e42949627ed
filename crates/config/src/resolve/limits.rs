//! `limits` (a regferry extension): bounds on what registries send and how long they may
//! take, under `defaults` and in `creds` entries.
use super::*;

/// Where a `limits` mapping is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum LimitsAt {
    /// Under `defaults`: every key.
    Defaults,
    /// In a `creds` entry: the keys about one registry's answers.
    Host,
}

pub(super) fn resolve_limits(
    ctx: &Ctx<'_>,
    scope: &Scope,
    raw: &Spanned<RawLimits>,
    at: LimitsAt,
    errs: &mut Errors,
) -> LimitSettings {
    let l = &raw.value;
    let duration =
        |field: &str, v: &Option<Spanned<Scalar>>| -> Result<Option<Duration>, ConfigError> {
            let Some(s) = v else { return Ok(None) };
            let field = format!("limits.{field}");
            let d = ctx.duration(scope, &field, s)?;
            if d.is_zero() {
                return ctx.err(
                    scope,
                    &field,
                    Some(s.defined),
                    ErrorKind::OutOfRange {
                        value: s.value.0.clone(),
                        expected: "a duration above 0",
                    },
                );
            }
            Ok(Some(d))
        };
    let number = |field: &str,
                  v: &Option<Spanned<Scalar>>,
                  parse: fn(&str) -> Option<u64>,
                  expected: &'static str|
     -> Result<Option<u64>, ConfigError> {
        let Some(s) = v else { return Ok(None) };
        let field = format!("limits.{field}");
        match parse(s.value.0.trim()) {
            Some(n) if n > 0 => Ok(Some(n)),
            Some(_) => ctx.err(
                scope,
                &field,
                Some(s.defined),
                ErrorKind::OutOfRange {
                    value: s.value.0.clone(),
                    expected: "a number above 0",
                },
            ),
            None => ctx.err(
                scope,
                &field,
                Some(s.defined),
                ErrorKind::Invalid {
                    value: s.value.0.clone(),
                    expected,
                },
            ),
        }
    };
    const SIZE: &str = "a size in bytes (a number, or one with a unit: KiB, MiB, GiB, KB, MB, GB)";
    const COUNT: &str = "a whole number";
    // Sizes and counts bound what is held in memory: as `usize`, saturating.
    let in_memory = |v: Option<u64>| v.map(|v| usize::try_from(v).unwrap_or(usize::MAX));
    let size = |field, v| number(field, v, parse_size, SIZE).map(in_memory);
    let count = |field, v| number(field, v, |t| t.parse().ok(), COUNT).map(in_memory);
    if at == LimitsAt::Host {
        for (field, v) in [
            ("indexDepth", &l.index_depth),
            ("manifestsPerImage", &l.manifests_per_image),
            ("referrersPerImage", &l.referrers_per_image),
        ] {
            if let Some(s) = v {
                errs.keep(ctx.err::<()>(
                    scope,
                    &format!("limits.{field}"),
                    Some(s.defined),
                    ErrorKind::Misplaced {
                        reason: "bounds an image, whatever registry it comes from: set it under defaults.limits",
                    },
                ));
            }
        }
    }
    LimitSettings {
        connect_timeout: errs
            .keep(duration("connectTimeout", &l.connect_timeout))
            .flatten(),
        response_timeout: errs
            .keep(duration("responseTimeout", &l.response_timeout))
            .flatten(),
        idle_timeout: errs
            .keep(duration("idleTimeout", &l.idle_timeout))
            .flatten(),
        request_timeout: errs
            .keep(duration("requestTimeout", &l.request_timeout))
            .flatten(),
        min_speed: errs
            .keep(number("minSpeed", &l.min_speed, parse_size, SIZE))
            .flatten(),
        token_size: errs.keep(size("tokenSize", &l.token_size)).flatten(),
        manifest_size: errs.keep(size("manifestSize", &l.manifest_size)).flatten(),
        page_size: errs.keep(size("pageSize", &l.page_size)).flatten(),
        listing_size: errs.keep(size("listingSize", &l.listing_size)).flatten(),
        pages: errs.keep(count("pages", &l.pages)).flatten(),
        names: errs.keep(count("names", &l.names)).flatten(),
        index_depth: errs.keep(count("indexDepth", &l.index_depth)).flatten(),
        manifests_per_image: errs
            .keep(count("manifestsPerImage", &l.manifests_per_image))
            .flatten(),
        referrers_per_image: errs
            .keep(count("referrersPerImage", &l.referrers_per_image))
            .flatten(),
    }
}

/// A size: bytes as a number, or a number and a unit (binary `KiB`, `MiB`, `GiB`; decimal
/// `KB`, `MB`, `GB`; `B`), with or without a space between.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_a_number_and_a_unit() {
        assert_eq!(parse_size("4194304"), Some(4 << 20));
        assert_eq!(parse_size("8MiB"), Some(8 << 20));
        assert_eq!(parse_size("8 MiB"), Some(8 << 20));
        assert_eq!(parse_size("2GB"), Some(2_000_000_000));
        assert_eq!(parse_size("512B"), Some(512));
        for bad in [
            "",
            "MiB",
            "8 mb",
            "8.5MiB",
            "-1",
            "8 potatoes",
            "99999999999GiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }
}
