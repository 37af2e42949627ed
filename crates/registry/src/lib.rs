//! The registry layer of regferry: how images are named, and who may read or write them.
//!
//! - [`Reference`], [`Digest`] and [`Platform`] parse and normalise what users write
//!   (`busybox`, `ghcr.io/org/app:1.2`, `…@sha256:…`, `linux/arm64/v8`) exactly as
//!   Docker and regclient do, so a regsync config means the same thing here.
//! - [`credentials`] reads the Docker CLI configuration and runs `docker-credential-*`
//!   helpers with a timeout.
//! - [`Secret`] keeps passwords and tokens out of logs and `Debug` output.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod blob;
pub mod credentials;
mod digest;
mod error;
pub mod hash;
pub mod http;
pub mod manifest;
mod memory;
pub mod ocidir;
mod platform;
mod reference;
pub mod referrers;
pub mod repo;
mod secret;
pub mod tags;

pub use blob::{Blob, ByteStream};
pub use digest::{Digest, DigestError};
pub use error::{Error, Result};
pub use manifest::{Content, Descriptor, Manifest};
pub use memory::Memory;
pub use platform::{Platform, PlatformError};
pub use reference::{
    DOCKER_HUB, Reference, ReferenceError, api_hostname, is_valid_registry, is_valid_repository,
    is_valid_tag,
};
pub use secret::Secret;
pub use tags::TagList;
