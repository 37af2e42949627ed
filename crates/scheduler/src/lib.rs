//! The sync engine: for each entry of a [`Config`], list what the source has, compare it
//! with the target (a HEAD on each side), and copy what is missing or different, with
//! regsync's semantics (see docs/configuration.md). `check` runs the same plan and copies
//! nothing.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod artifacts;
mod clients;
mod engine;
pub mod metrics;
mod report;
pub mod server;
pub mod shard;

pub use clients::Clients;
pub use engine::{Engine, Mode, Only, RunOptions};
pub use report::{EntryReport, ReferrerReport, RunReport, State, TagReport};

pub use regferry_config::Config;
