//! `regferry artifact list`: what a user runs after mirroring, to see that the attestations
//! came along.
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use regferry_config::{Config, Endpoint, Host, TlsMode, template::SystemHost};
use regferry_registry::{Platform, Reference};
use regferry_scheduler::Clients;
use regferry_scheduler::artifacts::{self, Artifact};

use crate::args::OutputFormat;

pub(crate) fn list(
    config: Option<Config>,
    reference: &str,
    platform: Option<&str>,
    format: OutputFormat,
    plain_http: bool,
) -> anyhow::Result<()> {
    let platform = platform.map(Platform::parse).transpose()?;
    let (endpoint, tag) = match reference.strip_prefix("ocidir://") {
        Some(rest) => {
            let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
            let (path, tag) = match rest[last_slash..].rfind(':') {
                Some(i) => (&rest[..last_slash + i], &rest[last_slash + i + 1..]),
                None => (rest, "latest"),
            };
            (
                Endpoint::OciDir {
                    path: PathBuf::from(path),
                    tag: Some(tag.to_owned()),
                },
                tag.to_owned(),
            )
        }
        None => {
            let r = Reference::parse(reference)
                .with_context(|| format!("{reference:?} is not an image reference"))?;
            let tag = r.manifest_reference();
            (Endpoint::Registry(r), tag)
        }
    };
    let mut config = match config {
        Some(c) => c,
        None => regferry_config::load_str("", "<none>", &SystemHost)?.config,
    };
    if let (true, Some(registry)) = (plain_http, endpoint.registry()) {
        match config.creds.iter_mut().find(|h| h.registry == registry) {
            Some(h) => h.tls = TlsMode::Disabled,
            None => {
                let mut h = Host::with_defaults(registry);
                h.tls = TlsMode::Disabled;
                config.creds.push(h);
            }
        }
    }
    let clients = Clients::new(Arc::new(config));
    let repo = clients.repo(&endpoint, None)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let subjects = rt.block_on(artifacts::list(&repo, &tag, platform.as_ref()))?;
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &subjects)?;
            writeln!(out)?;
        }
        OutputFormat::Table => {
            for s in &subjects {
                let what = s.platform.as_deref().unwrap_or(&s.media_type);
                writeln!(out, "{} ({what})", s.digest)?;
                if s.referrers.is_empty() {
                    writeln!(out, "  no referrers")?;
                }
                write_tree(&mut out, &s.referrers, 1)?;
            }
        }
    }
    Ok(())
}

fn write_tree(out: &mut impl Write, list: &[Artifact], depth: usize) -> std::io::Result<()> {
    for a in list {
        writeln!(
            out,
            "{}{}  {}  {} bytes",
            "  ".repeat(depth),
            a.digest,
            a.artifact_type.as_deref().unwrap_or(&a.media_type),
            a.size
        )?;
        write_tree(out, &a.referrers, depth + 1)?;
    }
    Ok(())
}
