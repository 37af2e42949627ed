//! `oci-client` as a second independent reader (beside skopeo) of what regferry wrote: the
//! crate regferry's own registry client replaces (docs/design/dependencies.md), so a
//! disagreement between the two clients shows up in the tests.
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::TestRegistry;

/// Every manifest type the copy engine handles.
const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The manifest `reg` serves for `repo:tag` (or `repo@digest`), read with `oci-client`: its
/// exact bytes, and the digest the registry reported for them.
///
/// # Panics
/// When oci-client cannot read it.
pub fn oci_client_manifest(reg: &TestRegistry, reference: &str) -> (Vec<u8>, String) {
    let full = format!("{}/{reference}", reg.host());
    let parsed: Reference = full
        .parse()
        .unwrap_or_else(|e| panic!("oci-client cannot parse {full}: {e}"));
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime for oci-client");
    let (bytes, digest) = rt
        .block_on(client.pull_manifest_raw(&parsed, &RegistryAuth::Anonymous, ACCEPT))
        .unwrap_or_else(|e| panic!("oci-client could not read {full}: {e}"));
    (bytes.to_vec(), digest)
}
