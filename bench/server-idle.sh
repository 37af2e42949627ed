#!/usr/bin/env bash
# Benchmark: `regferry server` with a big configuration, idle between runs (issue 10,
# part 6). Not a timed test: it prints, for Rancher's generated mirror file (7,241
# `type: image` entries) with every host pointed at one empty local registry,
#   - peak RSS and RSS once the server is ready (after its first pass), and
#   - CPU time used over an idle window (default 30 s) after that,
# so that memory per scheduled entry and a busy idle loop both show.
#
#   bench/server-idle.sh            # IDLE=30 seconds of idle window
# Needs: docker-registry (scripts/setup installs it), curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
IDLE=${IDLE:-30}
command -v docker-registry >/dev/null || { echo "needs docker-registry (scripts/setup)" >&2; exit 2; }
echo "== building regferry (release)" >&2
cargo build --release --locked -q -p regferry-cli
bin=$ROOT/target/release/regferry
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
reg_port=$(free_port)
admin_port=$(free_port)
cat >"$tmp/registry.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $tmp/storage}}
http: {addr: 127.0.0.1:$reg_port}
EOF
docker-registry serve "$tmp/registry.yml" >"$tmp/registry.log" 2>&1 &
pids+=($!)

# Every source and target host becomes the local registry (the sources are absent, so
# each first-pass run ends at once with "not found"); each entry runs hourly.
python3 - tests/fixtures/regsync-corpus/22-rancher-artifact-mirror-large.yaml \
  "127.0.0.1:$reg_port" >"$tmp/server.yaml" <<'PY'
import re, sys
path, host = sys.argv[1], sys.argv[2]
out = [f"version: 1\ncreds:\n  - registry: {host}\n    tls: disabled\n"
       "defaults:\n  interval: 1h\nsync:\n"]
entries = 0
for line in open(path):
    m = re.match(r"^(- |  )(source|target): (\S+)$", line.rstrip("\n"))
    if m:
        ref = m.group(3)
        first = ref.split("/", 1)[0]
        if "/" in ref and ("." in first or ":" in first or first == "localhost"):
            ref = ref.split("/", 1)[1]
        out.append(f"{m.group(1)}{m.group(2)}: {host}/{ref}\n")
        entries += m.group(2) == "source"
    elif re.match(r"^  type: ", line):
        out.append(line)
sys.stdout.write("".join(out))
print(f"{entries} entries", file=sys.stderr)
PY
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$reg_port/v2/" >/dev/null && break; sleep 0.1; done

start=$(date +%s.%N)
"$bin" server -c "$tmp/server.yaml" --listen "127.0.0.1:$admin_port" -v warn >/dev/null 2>"$tmp/server.log" &
srv=$!
pids+=($srv)
until curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null; do
  kill -0 "$srv" 2>/dev/null || { cat "$tmp/server.log" >&2; echo "server died" >&2; exit 1; }
  sleep 0.2
done
ready=$(date +%s.%N)
kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$srv/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$srv/stat"; }
sleep 2
rss_ready=$(kib VmRSS)
t0=$(ticks)
sleep "$IDLE"
t1=$(ticks)
hz=$(getconf CLK_TCK)
printf '%-36s %s\n' "entries scheduled" "$(grep -c 'source:' "$tmp/server.yaml")"
printf '%-36s %.1f s\n' "first pass until ready" "$(echo "$ready - $start" | bc -l)"
printf '%-36s %d MiB\n' "peak RSS (VmHWM)" $(($(kib VmHWM) / 1024))
printf '%-36s %d MiB\n' "RSS when ready" $((rss_ready / 1024))
printf '%-36s %d MiB\n' "RSS after ${IDLE} s idle" $(($(kib VmRSS) / 1024))
printf '%-36s %.2f %% of one core\n' "CPU while idle (${IDLE} s)" \
  "$(echo "($t1 - $t0) * 100 / $hz / $IDLE" | bc -l)"
