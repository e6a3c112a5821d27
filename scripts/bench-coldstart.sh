#!/bin/bash
# bench-coldstart.sh -- `kindling bench coldstart` over the corpus images.
#
# usage: scripts/bench-coldstart.sh [-n RUNS] [--latency 36ms] [--bandwidth BITS] [--cow files|blocks] [--work-dir DIR] [IMAGE...]
#
# For each image (default: all), pushes it to a fresh local store and runs
# `kindling bench coldstart` with the image's startup command from
# corpus.json: (a) pull and unpack, (b) lazy with a cold worker cache and
# the startup trace an earlier start recorded, (b0) the same without it,
# (c) lazy with a warm one, (d) runc on the local unpacked rootfs, (e) lazy
# with a cold worker cache over a warm AZ cache (five in-process cache
# nodes on loopback, 4+1 stripes), RUNS
# interleaved rounds (default 5), the origin behind an emulated link
# (default 36 ms per request, 1 Gbit/s shared). Prints the JSON line of
# each image, then a table of medians and ratios. --cow: where the lazy
# variants' containers write (as for `kindling run`; default files).
# --work-dir: the file system for the store, (a)'s trees, the worker
# caches and the runs' scratch (default /var/tmp).
# Needs root (FUSE, loop devices, runc). Environment: KINDLING_CORPUS
# (default /var/cache/kindling-corpus), KINDLING (binary, default
# target/release/kindling).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${KINDLING_CORPUS:-/var/cache/kindling-corpus}
KINDLING=${KINDLING:-$ROOT/target/release/kindling}
RUNS=5 LAT=36ms BW=1000000000 COW=files WORK=/var/tmp
IMAGES=()
while [ $# -gt 0 ]; do
	case "$1" in
		-n) RUNS=$2; shift ;;
		--latency) LAT=$2; shift ;;
		--bandwidth) BW=$2; shift ;;
		--cow) COW=$2; shift ;;
		--work-dir) WORK=$2; shift ;;
		-h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
		-*) echo "unknown option $1" >&2; exit 2 ;;
		*) IMAGES+=("$1") ;;
	esac
	shift
done
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
[ -x "$KINDLING" ] || (cd "$ROOT" && cargo build --release -q)
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
if [ ${#IMAGES[@]} -eq 0 ]; then
	mapfile -t IMAGES < <($PY -c 'import json,sys; [print(i["name"]) for i in json.load(open(sys.argv[1]))["images"]]' "$CORPUS/corpus.json")
fi
TMP=$(mktemp -d "$WORK/kindling-coldstart.XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
export XDG_DATA_HOME=$TMP/data XDG_CACHE_HOME=$TMP/cache KINDLING_STORE=$TMP/store TMPDIR=$TMP
unset KINDLING_KEY_FILE KINDLING_CACHE_DIR

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(nproc) cpus  load $(cut -d' ' -f1-3 /proc/loadavg)  latency $LAT  bandwidth $BW bit/s  cow $COW  $RUNS runs  work $WORK ($(findmnt -no FSTYPE,OPTIONS -T "$WORK" | cut -c1-60))"
for name in "${IMAGES[@]}"; do
	mapfile -t cmd < <($PY -c 'import json,sys; [print(a) for i in json.load(open(sys.argv[1]))["images"] if i["name"] == sys.argv[2] for a in i["startup"]]' "$CORPUS/corpus.json" "$name")
	"$KINDLING" bench coldstart --source "$CORPUS/images/$name" --name "$name" --runs "$RUNS" \
		--latency "$LAT" --bandwidth "$BW" --cow "$COW" --work-dir "$TMP" -- "${cmd[@]}" | tee -a "$TMP/results.jsonl"
done
echo
$PY - "$TMP/results.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("%-14s %9s %9s %9s %9s %9s %9s | %6s %6s %6s %6s %6s %6s | %8s %8s" % ("image", "a pull", "b cold", "b0 notr", "c warm", "d local", "e az", "b/a", "b0/a", "b/d", "c/d", "e/d", "a/e", "fetched", "fetch0"))
for r in rows:
    m = lambda k: r[k]["median_ms"]
    print("%-14s %7.0fms %7.0fms %7.0fms %7.0fms %7.0fms %7.0fms | %6.2f %6.2f %6.2f %6.2f %6.2f %6.2f | %7.1f%% %7.1f%%" % (
        r["name"], m("a_pull_unpack"), m("b_lazy_cold"), m("b0_lazy_cold_no_trace"), m("c_lazy_warm"), m("d_local_rootfs"),
        m("e_lazy_az_warm"), r["b_over_a"], r["b0_over_a"], r["b_over_d"], r["c_over_d"], r["e_over_d"],
        1 / r["e_over_a"], 100 * r["fetched_share"],
        100 * r["bytes_fetched_b0"] / r["image_bytes"]))
PYEOF
