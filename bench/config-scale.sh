#!/usr/bin/env bash
# Benchmark: loading big configurations (issue 10, part 6). Not a timed test: it prints
# wall time and peak RSS of `regferry config` (parse, validate, print) for
#   - the biggest real config we know, Rancher's generated mirror file (7,241 entries,
#     tests/fixtures/regsync-corpus/22-rancher-artifact-mirror-large.yaml), and
#   - generated files of 5,000 / 20,000 / 30,000 / 100,000 `type: image` entries,
# so that a growth faster than linear shows as a ratio per entry.
#
#   bench/config-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
echo "== building regferry and the config loader example (release)" >&2
cargo build --release --locked -q -p regferry-cli
cargo build --release --locked -q -p regferry-config --example load
bin=$ROOT/target/release/regferry
load=$ROOT/target/release/examples/load
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Best of three: wall seconds and peak RSS (MiB) of `regferry config -c FILE` (load and
# print), or with a second argument `load`, of loading alone.
measure() {
  local best="" rss="" cmd=("$bin" config -c "$1")
  [[ ${2:-} == load ]] && cmd=("$load" "$1")
  for _ in 1 2 3; do
    /usr/bin/time -f '%e %M' -o "$tmp/time" "${cmd[@]}" >/dev/null 2>"$tmp/err" ||
      { cat "$tmp/err" >&2; echo "FAILED"; return; }
    read -r s kib <"$tmp/time"
    if [[ -z $best ]] || (($(echo "$s < $best" | bc))); then best=$s; rss=$((kib / 1024)); fi
  done
  echo "$best $rss"
}

generate() {
  python3 - "$1" "$2" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    f.write("version: 1\ncreds:\n  - registry: registry.example.com:5000\n    tls: disabled\nsync:\n")
    for i in range(n):
        f.write(f"  - source: docker.io/library/image{i}:1.{i % 50}\n"
                f"    target: registry.example.com:5000/mirror/image{i}:1.{i % 50}\n"
                f"    type: image\n")
PY
}

printf '%-34s %8s %9s %10s %9s %10s %9s\n' config entries "config s" "us/entry" "peak MiB" "load s" "peak MiB"
row() {
  local label=$1 n=$2 file=$3 s m ls lm
  read -r s m < <(measure "$file")
  if [[ $s == FAILED ]]; then
    printf '%-34s %8d %9s\n' "$label" "$n" "refused"
    return
  fi
  read -r ls lm < <(measure "$file" load)
  printf '%-34s %8d %9s %10.1f %9s %10s %9s\n' "$label" "$n" "$s" \
    "$(echo "$s * 1000000 / $n" | bc -l)" "$m" "$ls" "$lm"
}
row "rancher artifact-mirror (966 KB)" 7241 tests/fixtures/regsync-corpus/22-rancher-artifact-mirror-large.yaml
for n in 5000 20000 30000 100000; do
  generate "$n" "$tmp/gen-$n.yaml"
  row generated "$n" "$tmp/gen-$n.yaml"
done
