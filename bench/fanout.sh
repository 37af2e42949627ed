#!/usr/bin/env bash
# One pull, many targets: one `targets` entry per source repository with three target
# registries, against three entries per repository with one target each, on the lab's data
# set. Measured per run: wall time, peak RSS, and what the source served (requests, GETs and
# bytes, from its access log). Each round starts from three empty targets; then a no-op.
#
#   bench/fanout.sh        (bench/run.sh fanout runs it)
#
# The lab's registries serve the source (5001) and the first target (5002); this script
# starts two more distribution instances, on 5003 and 5004, beside them, and checks each
# target against the source with the lab's verify.py.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=${LAB:-$PWD/../shared/lab}
source "$LAB/lib.sh"
REGFERRY=${REGFERRY:-$PWD/target/release/regferry}
[[ -x $REGFERRY ]] || { echo "no regferry binary at $REGFERRY (set REGFERRY=...)" >&2; exit 2; }
EXTRA_PORTS=(5003 5004)
TARGETS=("$DST" 127.0.0.1:5003 127.0.0.1:5004)

extra_start() {
  local port=$1 dir=$LAB_DIR/t$1
  rm -rf "$dir"; mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: lab-t$port-not-secret
EOF
  /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/access.log" 2>"$dir/registry.log" &
  echo $! >"$dir/pid"
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port/v2/" && return 0
    sleep 0.1
  done
  echo "registry on $port did not start: $(tail -3 "$dir/registry.log")" >&2
  return 1
}

extra_stop() {
  local port
  for port in "${EXTRA_PORTS[@]}"; do
    [[ -f $LAB_DIR/t$port/pid ]] && kill "$(cat "$LAB_DIR/t$port/pid")" 2>/dev/null || true
    rm -f "$LAB_DIR/t$port/pid"
  done
}
trap extra_stop EXIT

# Three empty targets.
fresh_targets() {
  log "fresh targets: ${TARGETS[*]}"
  lab_registries wipe dst
  extra_stop
  sleep 0.3
  local port
  for port in "${EXTRA_PORTS[@]}"; do extra_start "$port"; done
}

# config targets|entries
config() {
  local f=$LAB_DIR/fanout-$1.yml repo t
  {
    echo "version: 1"
    echo "creds:"
    for t in "$SRC" "${TARGETS[@]}"; do
      echo "  - registry: $t"
      echo "    tls: disabled"
    done
    echo "defaults:"
    echo "  skipDockerConfig: true"
    echo "  referrers: true"
    echo "sync:"
    for repo in $(source_repos); do
      if [[ $1 == targets ]]; then
        echo "  - source: $SRC/$repo"
        echo "    targets:"
        for t in "${TARGETS[@]}"; do echo "      - $t/$repo"; done
        echo "    type: repository"
      else
        for t in "${TARGETS[@]}"; do
          echo "  - source: $SRC/$repo"
          echo "    target: $t/$repo"
          echo "    type: repository"
        done
      fi
    done
  } >"$f"
  echo "$f"
}

# Every target against the source (the lab's verify.py; measure() checks the first).
verify_all() {
  local t
  for t in "${TARGETS[@]}"; do
    "$LAB/verify.py" --src "$SRC" --dst "$t" >"$LAB_DIR/verify-$t.txt" 2>&1 || true
    head -1 "$LAB_DIR/verify-$t.txt" | sed "s/^/  $1 /" >&2
  done
}

lab_registries start
lab_fresh_source
version=$("$REGFERRY" version 2>/dev/null | head -1)
mkdir -p "$LAB_DIR/home-fanout"
for _ in $(seq "${ROUNDS:-2}"); do
  for shape in targets entries; do
    cfg=$(config "$shape")
    cmd=(env HOME="$LAB_DIR/home-fanout" "$REGFERRY" once -c "$cfg")
    fresh_targets
    # (fanout_…: bench/ratios.py reads the part of a tool's name before its first dash.)
    measure "fanout_$shape" cold "$version" -- "${cmd[@]}"
    verify_all "$shape"
    measure "fanout_$shape" noop "" -- "${cmd[@]}"
  done
done
echo "results: $RESULTS" >&2
