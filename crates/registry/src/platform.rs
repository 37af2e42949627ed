use std::fmt;

/// A platform as regsync's `platform` field writes it: `os/arch[/variant][,osver=VERSION]`,
/// or `local` for the machine regferry runs on.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// Operating system, e.g. `linux`, `windows`.
    pub os: String,
    /// CPU architecture in Go/OCI spelling, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// Architecture variant, e.g. `v7`; empty when not given.
    pub variant: String,
    /// Windows OS version, e.g. `10.0.17763.1234`; empty when not given.
    pub os_version: String,
}

/// Why a string is not a platform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// Not of the form `os/arch[/variant]`.
    #[error("platform {platform:?} is not os/arch[/variant][,osver=VERSION]")]
    Malformed {
        /// The rejected text.
        platform: String,
    },
    /// An option after `,` other than `osver=`.
    #[error("platform {platform:?}: unknown option {option:?} (only osver= is supported)")]
    UnknownOption {
        /// The rejected text.
        platform: String,
        /// The unknown option.
        option: String,
    },
}

impl Platform {
    /// Parses `os/arch[/variant][,osver=…]` or `local`, normalising architecture aliases
    /// (`x86_64`→`amd64`, `aarch64`→`arm64`) as containerd's `platforms` package does.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let malformed = || PlatformError::Malformed {
            platform: s.to_owned(),
        };
        let mut options = s.split(',');
        let main = options.next().unwrap_or_default();
        let mut os_version = String::new();
        for opt in options {
            match opt.strip_prefix("osver=") {
                Some(v) if !v.is_empty() => os_version = v.to_owned(),
                _ => {
                    return Err(PlatformError::UnknownOption {
                        platform: s.to_owned(),
                        option: opt.to_owned(),
                    });
                }
            }
        }
        let mut p = if main == "local" {
            Platform::host()
        } else {
            let parts: Vec<&str> = main.split('/').collect();
            let ok_part = |p: &&str| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
            };
            if !(2..=3).contains(&parts.len()) || !parts.iter().all(ok_part) {
                return Err(malformed());
            }
            let (architecture, variant) =
                normalise_arch(parts[1], parts.get(2).copied().unwrap_or(""));
            Platform {
                os: parts[0].to_ascii_lowercase(),
                architecture,
                variant,
                os_version: String::new(),
            }
        };
        if !os_version.is_empty() {
            p.os_version = os_version;
        }
        Ok(p)
    }

    /// The platform regferry itself runs on, in OCI spelling.
    pub fn host() -> Platform {
        let (architecture, variant) = normalise_arch(std::env::consts::ARCH, "");
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture,
            variant,
            os_version: String::new(),
        }
    }
}

fn normalise_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match (arch.as_str(), variant.as_str()) {
        ("x86_64" | "x86-64" | "amd64", v) => ("amd64".into(), v.into()),
        ("aarch64" | "arm64", "8" | "v8") => ("arm64".into(), String::new()),
        ("aarch64" | "arm64", v) => ("arm64".into(), v.into()),
        ("armhf", _) => ("arm".into(), "v7".into()),
        ("armel", _) => ("arm".into(), "v6".into()),
        ("arm", "" | "7") => ("arm".into(), "v7".into()),
        ("arm", "5" | "6" | "8") => ("arm".into(), format!("v{variant}")),
        ("i386" | "i686" | "x86", v) => ("386".into(), v.into()),
        (a, v) => (a.into(), v.into()),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        if !self.os_version.is_empty() {
            write!(f, ",osver={}", self.os_version)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Platform({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let p = |s: &str| Platform::parse(s).unwrap().to_string();
        assert_eq!(p("linux/amd64"), "linux/amd64");
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/aarch64"), "linux/arm64");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/arm/v6"), "linux/arm/v6");
        assert_eq!(
            p("windows/amd64,osver=10.0.17763"),
            "windows/amd64,osver=10.0.17763"
        );
        assert_eq!(Platform::parse("local").unwrap(), Platform::host());
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/amd64/v1/x").is_err());
        assert!(Platform::parse("linux//v1").is_err());
        assert!(matches!(
            Platform::parse("linux/amd64,foo=1"),
            Err(PlatformError::UnknownOption { .. })
        ));
    }
}
