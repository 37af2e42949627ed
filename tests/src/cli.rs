//! Running the `regferry` binary in end-to-end tests: a configuration file in its own temp dir,
//! and a run's exit code and output. The binary's path comes from the calling test
//! (`env!("CARGO_BIN_EXE_regferry")`), which only Cargo knows.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::wait::{Deadline, pause};

/// How long one run may take before it is killed and the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A configuration file, `regferry.yaml`, alone in a temp dir (removed on drop) where tests may
/// put files it refers to (`{{ file "…" }}`).
#[derive(Debug)]
pub struct ConfigFile {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    /// Writes `yaml` to a new temp dir.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn new(yaml: &str) -> Self {
        let dir = crate::temp_dir();
        let path = dir.path().join("regferry.yaml");
        std::fs::write(&path, yaml).expect("write regferry.yaml");
        Self { dir, path }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file's text.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.path).expect("read regferry.yaml")
    }
}

/// A configuration for the harness's plain-HTTP registries: each of `hosts` gets
/// `tls: disabled` (and its login, when given), Docker's own configuration is skipped,
/// `defaults` (YAML lines indented by two spaces) is added to `defaults:`, and `sync` (the
/// entries, indented by two spaces) follows.
pub fn registry_config(
    hosts: &[(String, Option<(&str, &str)>)],
    defaults: &str,
    sync: &str,
) -> ConfigFile {
    let mut y = format!("defaults:\n  skipDockerConfig: true\n{defaults}creds:\n");
    for (h, login) in hosts {
        y.push_str(&format!("  - registry: {h}\n    tls: disabled\n"));
        if let Some((u, p)) = login {
            y.push_str(&format!("    user: {u}\n    pass: {p}\n"));
        }
    }
    y.push_str("sync:\n");
    y.push_str(sync);
    ConfigFile::new(&y)
}

/// What a run of the binary did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The process's peak resident memory (`VmHWM`, KiB), as last read while it ran; 0 if
    /// never read (a run shorter than the polling interval).
    pub peak_rss_kib: u64,
}

impl RunOutput {
    /// stdout then stderr, for searching and for assertion messages.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `bin ARGS -c CONFIG` with `REGFERRY_LOG=warn`, with stdin closed.
///
/// # Panics
/// If the binary cannot run, or runs longer than [`RUN_TIMEOUT`] (it is killed).
pub fn run_regferry(bin: &str, args: &[&str], config: &ConfigFile) -> RunOutput {
    // Output goes to files, not pipes: waiting with a deadline then needs no reader threads.
    let out_dir = crate::temp_dir();
    let (out_path, err_path) = (out_dir.path().join("stdout"), out_dir.path().join("stderr"));
    let create = |p: &Path| File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut child = Command::new(bin)
        .args(args)
        .arg("-c")
        .arg(config.path())
        .env("REGFERRY_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(create(&out_path))
        .stderr(create(&err_path))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let deadline = Deadline::after(RUN_TIMEOUT);
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_rss_kib = 0;
    let status = loop {
        // VmHWM only grows, so the last reading before the exit is the peak, give or take
        // what the process allocated in its last 10 ms.
        if let Some(kib) = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| vm_hwm_kib(&s))
        {
            peak_rss_kib = kib;
        }
        if let Some(status) = child.try_wait().expect("wait for regferry") {
            break status;
        }
        if deadline.passed() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "regferry {} ran longer than {RUN_TIMEOUT:?}; stderr:\n{}",
                args.join(" "),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        pause(Duration::from_millis(10));
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    RunOutput {
        code: status.code().unwrap_or(-1),
        stdout: read(&out_path),
        stderr: read(&err_path),
        peak_rss_kib,
    }
}

/// `VmHWM` from a `/proc/<pid>/status` text, in KiB.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `text` as a YAML literal block scalar for a mapping value, its lines indented by `indent`
/// spaces: `format!("    regcert: {}", yaml_block(pem, 6))`. For PEM in a config file.
pub fn yaml_block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut y = String::from("|\n");
    for line in text.trim_end().lines() {
        y.push_str(&pad);
        y.push_str(line);
        y.push('\n');
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_block_indents_every_line() {
        assert_eq!(
            format!("  k: {}", yaml_block("-----A-----\nxyz\n-----B-----\n", 4)),
            "  k: |\n    -----A-----\n    xyz\n    -----B-----\n"
        );
    }
}
