#!/usr/bin/env bash
# Benchmark: regferry against `skopeo sync` and a raw parallel blob copier (the "physical
# limit"), on the same seeded data, in one run, on two real registries on loopback.
# Timings are ratios within this one run; the machine's absolute speed cancels out.
#
#   bench/run.sh            # default data set (20 repos x 5 tags x 3 layers of 2 MiB);
#                           # ROUNDS=3 alternations of the raw copier and regferry
#   bench/run.sh memory     # one 1 GiB layer: peak RSS must stay flat
#   bench/run.sh wan        # the source behind a 50 ms round trip (the lab's bench-wan.sh,
#                           # 120 tags of 256 KiB layers): cold and no-op, ROUNDS times;
#                           # then skopeo once on the same data (WAN_SKOPEO=0: not)
#   bench/run.sh scale      # 1 x 3,000 tags, 200 x 5 tags, one 1 GiB layer (bench-scale.sh),
#                           # beside ocync when bench/build-ocync.sh has built it
#                           # (SCALE_TOOLS="regferry ocync-http skopeo" adds skopeo)
#   bench/run.sh scale-noop # the 1 x 3,000 no-op, regferry and ocync taking turns ROUNDS times
#                           # (default 10) on the same data: the fair measure of its target
#   bench/run.sh fanout     # one `targets` entry with 3 target registries against 3 entries
#                           # with one target each (bench/fanout.sh): source bytes, wall time
#
# Uses the team's lab (LAB=../shared/lab by default): Debian's docker-registry on
# 127.0.0.1:5001/5002, seed.py, verify.py and the measuring harness (lib.sh).
# Needs: docker-registry skopeo time bc (scripts/setup installs them), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LAB=${LAB:-$ROOT/../shared/lab}
[[ -f $LAB/lib.sh ]] || { echo "no benchmark lab at $LAB (set LAB=...)" >&2; exit 2; }
export LAB_DIR=${LAB_DIR:-/tmp/regferry-bench}
export RESULTS=$LAB_DIR/results-$(date +%Y%m%d-%H%M%S).tsv
mkdir -p "$LAB_DIR"

echo "== building regferry (release)" >&2
cargo build --release --locked -q -p regferry-cli
export REGFERRY=$ROOT/target/release/regferry

case "${1:-default}" in
  default)
    # The raw copier and regferry alternate ROUNDS times; the ratios use each one's best
    # run, because on a shared 2-core machine single runs vary by 10-20%.
    "$LAB/registries.sh" start >&2
    "$LAB/bench-skopeo.sh" yaml >&2
    for _ in $(seq "${ROUNDS:-3}"); do
      "$LAB/bench-limit.sh" 4 >&2
      "$LAB/bench-regferry.sh" >&2
    done
    ;;
  memory)
    export REPOS=1 TAGS=1 LAYERS=1 LAYER_SIZE=${LAYER_SIZE:-1GiB} MULTIARCH=0 REFERRERS=0 MUTATE=lab/repo-000:v1.0
    "$LAB/registries.sh" start >&2
    "$LAB/bench-regferry.sh" 1gib >&2
    ;;
  wan)
    # The lab script reads the source registry's port from LAB_SRC_PORT; its own default
    # is missing, so it is set here (the lab's registries.sh serves the source on 5001).
    # ocync runs beside regferry when its lab build is there (bench/build-ocync.sh).
    tools=regferry
    [[ -x ${OCYNC_HTTP:-/tmp/ocync-build-http/target/release/ocync} ]] && tools="regferry ocync-http"
    export LAB_SRC_PORT=${LAB_SRC_PORT:-5001} WAN_TOOLS=${WAN_TOOLS:-$tools}
    for _ in $(seq "${ROUNDS:-3}"); do
      "$LAB/bench-wan.sh" >&2
    done
    # skopeo once on the same data (the lab script does not run it): cold and no-op.
    [[ ${WAN_SKOPEO:-1} == 0 ]] || LAB=$LAB bench/wan-skopeo.sh >&2
    ;;
  scale)
    # Many tags, many repositories, one big layer (the lab's bench-scale.sh). ocync runs
    # beside regferry when its lab build is there (bench/build-ocync.sh); the no-op is
    # measured three times per tool, as single runs vary by 10%.
    OCYNC_HTTP=${OCYNC_HTTP:-/tmp/ocync-build-http/target/release/ocync}
    tools=regferry
    if [[ -x $OCYNC_HTTP ]]; then
      tools="regferry ocync-http"
    else
      echo "no ocync at $OCYNC_HTTP (bench/build-ocync.sh builds it): regferry alone" >&2
    fi
    export OCYNC_HTTP SCALE_TOOLS=${SCALE_TOOLS:-$tools} SCALE_NOOP_REPEAT=${SCALE_NOOP_REPEAT:-3}
    "$LAB/bench-scale.sh" ${SCALE_SETS:-1x3000 200x5 big:1GiB} >&2
    python3 "$LAB/scale-report.py" "$RESULTS"
    ;;
  scale-noop)
    # The 1 x 3,000 no-op target, measured fairly: regferry and ocync take turns, ROUNDS
    # times (default 10), on the same data and target (bench/noop-alternating.sh).
    bench/noop-alternating.sh
    ;;
  fanout)
    bench/fanout.sh
    ;;
  *) echo "usage: bench/run.sh [default|memory|wan|scale|scale-noop|fanout]" >&2; exit 2 ;;
esac
"$LAB/registries.sh" stop >&2 || true

python3 "$LAB/report.py" "$RESULTS" --methods
python3 "$ROOT/bench/ratios.py" "$RESULTS"
