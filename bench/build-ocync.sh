#!/usr/bin/env bash
# Builds ocync (github.com/clowdhaus/ocync, Apache-2.0) for the lab's side-by-side runs, as
# the lab's scripts expect it at $OCYNC_HTTP (default /tmp/ocync-build-http/target/release/ocync).
#
#   bench/build-ocync.sh SRC_DIR [OUT_DIR]
#
# SRC_DIR is a checkout of ocync 0.5.2 (`git clone --branch v0.5.2 …`, or a copy of one).
# It is copied to OUT_DIR (default /tmp/ocync-build-http) and changed in three ways, none
# of which touches how ocync syncs:
#  - reqwest comes from crates.io (0.13) instead of a git pin, for machines that reach
#    crates.io but not GitHub;
#  - the FIPS crypto module (aws-lc-fips-sys needs Go and CMake) is swapped for the plain
#    one: `--no-default-features --features non-fips`;
#  - `build_clients` passes each registry's URL with its scheme, so that an `http://` URL
#    stays plain HTTP (0.5.2 strips the scheme there and always speaks HTTPS, which the
#    lab's plain-HTTP registries cannot answer).
set -euo pipefail
src=${1:?usage: bench/build-ocync.sh SRC_DIR [OUT_DIR]}
out=${2:-/tmp/ocync-build-http}
rm -rf "$out"
mkdir -p "$out"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$src" archive HEAD | tar -x -C "$out"
else
  cp -a "$src/." "$out/"
fi
cd "$out"
rm -f rust-toolchain.toml rust-toolchain
python3 - <<'PY'
import re
s = open("Cargo.toml").read()
s = re.sub(r'reqwest = \{ git = "[^"]*", rev = "[0-9a-f]+",', 'reqwest = { version = "0.13",', s)
s = re.sub(r'\[patch\.crates-io\]\s*\nreqwest = \{ git[^\n]*\n', '', s)
open("Cargo.toml", "w").write(s)
p = "src/cli/commands/synchronize.rs"
s = open(p).read()
old = "        let hostname = bare_hostname(&reg.url);\n        let client = build_registry_client(hostname, Some(reg)).await?;"
if old not in s:
    raise SystemExit(f"{p}: the code to patch is not there (not ocync 0.5.2?)")
s = s.replace(old, "        let client = build_registry_client(&reg.url, Some(reg)).await?;")
open(p, "w").write(s)
PY
grep -q 'git = ' Cargo.toml && { echo "Cargo.toml still has a git dependency" >&2; exit 1; }
cargo build --release --bin ocync --no-default-features --features non-fips
echo "$out/target/release/ocync"
