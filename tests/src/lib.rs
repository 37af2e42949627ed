//! Shared test harness: where fixtures live, golden-file comparison with readable diffs, and
//! (as the copy engine lands) real registry processes on free loopback ports.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    workspace_root().join("tests").join("fixtures").join(rel)
}

/// Compares `actual` with `tests/golden/<name>`. With `REGFERRY_UPDATE_GOLDEN=1` the golden
/// file is rewritten instead (an on-purpose update, reviewed in the diff of the commit).
///
/// # Panics
/// When the output differs from the golden file, with a unified diff.
pub fn assert_golden(name: &str, actual: &str) {
    let path = workspace_root().join("tests").join("golden").join(name);
    if std::env::var_os("REGFERRY_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create golden dir");
        }
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} missing ({e}); run with REGFERRY_UPDATE_GOLDEN=1",
            path.display()
        )
    });
    if expected != actual {
        let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
            .unified_diff()
            .header("expected (golden)", "actual")
            .to_string();
        panic!("output differs from {}:\n{diff}", path.display());
    }
}

/// A temporary directory that is removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temp dir")
}
