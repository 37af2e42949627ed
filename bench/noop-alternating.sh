#!/usr/bin/env bash
# The 1 x 3,000 no-op, regferry and ocync taking turns on the same data and the same target.
#
# The lab's bench-scale.sh measures each tool's no-ops in a block after that tool's own cold
# sync, so the two blocks meet the registries in different states; on this 2-core machine,
# where the registries' CPU decides a no-op's time, that order alone moved the ratio by a few
# per cent from run to run. Here both tools' no-ops alternate, ROUNDS times (default 10, the
# first tool changing each round), after one seeding, both cold syncs and one warm-up no-op
# each; bench/ratios.py takes the target's ratio from these `alt-noop-1x3000` rows when they
# are there.
#
#   bench/noop-alternating.sh        (bench/run.sh scale-noop runs it)
#
# Needs ocync's lab build (bench/build-ocync.sh): without it there is nothing to compare,
# and the script fails.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=${LAB:-$PWD/../shared/lab}
source "$LAB/lib.sh"
# lib.sh sets RESULTS without exporting it; exported, the lab script below writes its rows
# to the same file as the alternating runs, also when this script runs on its own.
export RESULTS
REGFERRY=${REGFERRY:-$PWD/target/release/regferry}
OCYNC_HTTP=${OCYNC_HTTP:-/tmp/ocync-build-http/target/release/ocync}
[[ -x $REGFERRY ]] || { echo "no regferry binary at $REGFERRY (set REGFERRY=...)" >&2; exit 2; }
[[ -x $OCYNC_HTTP ]] || { echo "no ocync at $OCYNC_HTTP (bench/build-ocync.sh builds it)" >&2; exit 2; }
export REGFERRY OCYNC_HTTP

# Seeds 1 x 3,000, then each tool's cold sync (into an empty target) and one no-op; the
# configs stay in $LAB_DIR. ocync's cold sync runs last, so the target holds what it wrote
# and its cache knows it; regferry's no-op finds the same images there.
SCALE_TOOLS="regferry ocync-http" SCALE_NOOP_REPEAT=1 "$LAB/bench-scale.sh" 1x3000 >&2

rf=(env HOME="$LAB_DIR/home-regferry" "$REGFERRY" once -c "$LAB_DIR/scale-regferry.yml")
oc=(env DOCKER_CONFIG="$LAB_DIR/ocync-docker-none" NO_COLOR=1 "$OCYNC_HTTP" sync
    -c "$LAB_DIR/scale-ocync.yaml" --json)
# One more no-op each first, not counted, so that the rounds start alike: bench-scale.sh's
# no-ops above ran each right after its tool's cold sync, ocync's last.
measure regferry alt-noop-warmup-1x3000 "regferry, warm-up" -- "${rf[@]}"
measure ocync-http-tuned alt-noop-warmup-1x3000 "ocync, warm-up" -- "${oc[@]}"
# Who goes first changes each round (AB BA AB ...), so neither tool always runs in the other's
# wake.
for round in $(seq "${ROUNDS:-10}"); do
  if ((round % 2)); then
    measure regferry alt-noop-1x3000 "regferry, alternating with ocync" -- "${rf[@]}"
    measure ocync-http-tuned alt-noop-1x3000 "ocync, alternating with regferry" -- "${oc[@]}"
  else
    measure ocync-http-tuned alt-noop-1x3000 "ocync, alternating with regferry" -- "${oc[@]}"
    measure regferry alt-noop-1x3000 "regferry, alternating with ocync" -- "${rf[@]}"
  fi
done
