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
echo "== building regferry (release)" >&2
cargo build --release --locked -q -p regferry-cli
bin=$ROOT/target/release/regferry
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Best of three: wall seconds and peak RSS (MiB) of `regferry config -c FILE`.
measure() {
  local best="" rss=""
  for _ in 1 2 3; do
    /usr/bin/time -f '%e %M' -o "$tmp/time" "$bin" config -c "$1" >/dev/null 2>"$tmp/err" ||
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

printf '%-40s %8s %10s %12s %10s\n' config entries seconds "us/entry" "peak MiB"
rancher=tests/fixtures/regsync-corpus/22-rancher-artifact-mirror-large.yaml
read -r s m < <(measure "$rancher")
printf '%-40s %8d %10s %12.1f %10s\n' "rancher artifact-mirror (966 KB)" 7241 "$s" \
  "$(echo "$s * 1000000 / 7241" | bc -l)" "$m"
for n in 5000 20000 30000 100000; do
  generate "$n" "$tmp/gen-$n.yaml"
  read -r s m < <(measure "$tmp/gen-$n.yaml")
  if [[ $s == FAILED ]]; then
    printf '%-40s %8d %10s\n' "generated" "$n" "refused"
    continue
  fi
  printf '%-40s %8d %10s %12.1f %10s\n' "generated" "$n" "$s" "$(echo "$s * 1000000 / $n" | bc -l)" "$m"
done
