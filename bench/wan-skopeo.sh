#!/usr/bin/env bash
# `skopeo sync` over the lab's slow link, the same way bench-wan.sh measures regferry and
# ocync: the source registry behind latency-proxy.py (WAN_DELAY_MS one way, default 25 ms =
# a 50 ms round trip), the target local, the data set of the last bench-wan.sh run (it seeds
# the source; this script does not), cold into an empty target then no-op. skopeo's blob-info
# cache is dropped before the cold run, so cold is cold for it too.
#
# Called by `bench/run.sh wan` after the lab script; results go to $RESULTS (the lab's
# lib.sh), as `skopeo-yaml` rows of the wan25-cold and wan25-noop scenarios.
set -euo pipefail
LAB=${LAB:?set LAB to the lab directory}
export LAYER_SIZE=${LAYER_SIZE:-256KiB}
source "$LAB/lib.sh"
WAN_DELAY_MS=${WAN_DELAY_MS:-25}
WAN_PORT=${WAN_PORT:-5011}
LAB_SRC_PORT=${LAB_SRC_PORT:-5001}
WSRC=127.0.0.1:$WAN_PORT
SKOPEO=${SKOPEO:-skopeo}

lab_registries start
lab_fresh_target
rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb
"$LAB/latency-proxy.py" "$WAN_PORT" "$LAB_SRC_PORT" "$WAN_DELAY_MS" --pidfile "$LAB_DIR/wan.pid" &
trap 'kill "$(cat "$LAB_DIR/wan.pid")" 2>/dev/null || true' EXIT
sleep 1

# The source repositories under the slow link's address; skopeo puts them under $DST/lab,
# which is where they are on the source too (lab/repo-NNN), so verify.py compares them.
cfg=$LAB_DIR/wan-skopeo.yaml
{
  echo "$WSRC:"
  echo "  tls-verify: false"
  echo "  images:"
  for repo in $(source_repos); do echo "    $repo: []"; done
} >"$cfg"
cmd=("$SKOPEO" sync --all --src yaml --dest docker --dest-tls-verify=false "$cfg" "$DST/lab")
note="skopeo $("$SKOPEO" --version | awk '{print $3}') rtt=$((2 * WAN_DELAY_MS))ms"
measure skopeo-yaml "wan${WAN_DELAY_MS}-cold" "$note" -- "${cmd[@]}"
measure skopeo-yaml "wan${WAN_DELAY_MS}-noop" "$note" -- "${cmd[@]}"
