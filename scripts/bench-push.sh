#!/bin/bash
# bench-push.sh -- `kindling push` and `fetch` against `kindling flatten`,
# measured side by side in one run on the same machine.
#
# usage: scripts/bench-push.sh [-n RUNS] [IMAGE...]     (default: all corpus images, 5 runs)
#
# Per image, RUNS interleaved rounds of:
#   flatten     kindling flatten LAYOUT -o TMPFS/out.img           (the baseline)
#   push-local  kindling push LAYOUT --store TMPFS/store-R          (a new, empty store)
#   push-s3     kindling push LAYOUT --store s3://kindling/R-IMAGE   (a new, empty prefix)
#               on `kindling s3-server` (s3s-fs on loopback, objects on the tmpfs)
#   fetch-local kindling fetch NAME --store TMPFS/store-R -o TMPFS/f.img
#   fetch-s3    kindling fetch NAME --store s3://kindling/R-IMAGE -o TMPFS/f.img
# after one untimed warm-up flatten (page cache). Every push uploads every
# chunk (nothing is present), the worst case for push. Times are wall-clock
# seconds of the whole command; MB/s is of uncompressed layer tar for
# flatten and push (the same input) and of stored (non-zero) chunk bytes
# for fetch. "push/flatten" = median(flatten) / median(push): the issue's
# goal is >= 0.8 for the local store.
#
# Needs root (tmpfs). Environment: KINDLING_CORPUS (default
# /var/cache/kindling-corpus), KINDLING (binary, default
# target/release/kindling, built if missing), BENCH_TMPFS_SIZE (default 8g).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${KINDLING_CORPUS:-/var/cache/kindling-corpus}
KINDLING=${KINDLING:-$ROOT/target/release/kindling}
RUNS=5
IMAGES=()
while [ $# -gt 0 ]; do
	case "$1" in
		-n) RUNS=$2; shift ;;
		-h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
		-*) echo "unknown option $1" >&2; exit 2 ;;
		*) IMAGES+=("$1") ;;
	esac
	shift
done
[ "$(id -u)" = 0 ] || { echo "must run as root (tmpfs mount)" >&2; exit 1; }
[ -f "$CORPUS/corpus.json" ] || { echo "no corpus at $CORPUS (set KINDLING_CORPUS)" >&2; exit 1; }
[ -x "$KINDLING" ] || (cd "$ROOT" && cargo build --release -q)
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
if [ ${#IMAGES[@]} -eq 0 ]; then
	mapfile -t IMAGES < <($PY -c 'import json,sys; [print(i["name"]) for i in json.load(open(sys.argv[1]))["images"]]' "$CORPUS/corpus.json")
fi

TMP=$(mktemp -d /tmp/kindling-bench.XXXXXX)
FS=$TMP/fs
mkdir -p "$FS"
S3PID=
cleanup() {
	[ -n "$S3PID" ] && kill "$S3PID" 2>/dev/null && wait "$S3PID" 2>/dev/null
	mountpoint -q "$FS" && umount "$FS"
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
mount -t tmpfs -o "size=${BENCH_TMPFS_SIZE:-8g}" kindling-bench "$FS"

"$KINDLING" s3-server --root "$FS/s3" >"$TMP/s3.out" &
S3PID=$!
for _ in $(seq 50); do [ -s "$TMP/s3.out" ] && break; sleep 0.1; done
read -r ep _ ak sk <"$TMP/s3.out"
export AWS_ENDPOINT_URL=${ep#endpoint=} AWS_ACCESS_KEY_ID=${ak#access_key_id=} \
	AWS_SECRET_ACCESS_KEY=${sk#secret_access_key=} AWS_REGION=us-east-1
export KINDLING_KEY_FILE=$TMP/tenant.key
head -c 32 /dev/urandom >"$KINDLING_KEY_FILE"

now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.3f", e - s }'; }
stats() {
	printf '%s\n' $1 | sort -g | awk '{ a[NR] = $1 } END {
		m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
		printf "%.3f %.3f\n", m, a[NR] }'
}
raw_bytes() {
	$PY - "$CORPUS" "$1" <<-'PYEOF'
	import json, os, sys
	corpus, name = sys.argv[1:]
	im = [i for i in json.load(open(os.path.join(corpus, "corpus.json")))["images"] if i["name"] == name][0]
	print(sum(l["uncompressed_size"] for l in im["layers"]))
	PYEOF
}
timed() { local s e; s=$(now); "$@" >/dev/null; e=$(now); elapsed "$s" "$e"; }

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(uname -r)  $(nproc) cpus  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')  load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# kindling: $KINDLING   corpus: $CORPUS   $RUNS interleaved runs, median/max seconds"
echo
printf '%-14s %7s %7s | %13s %5s | %13s %5s | %13s %5s | %13s %6s | %13s %6s | %12s\n' \
	image raw-MB data-MB "flatten" MB/s "push-local" MB/s "push-s3" MB/s "fetch-local" MB/s "fetch-s3" MB/s "push/flatten"
for name in "${IMAGES[@]}"; do
	layout=$CORPUS/images/$name
	raw=$(raw_bytes "$name")
	"$KINDLING" flatten "$layout" -o "$FS/out.img" >/dev/null
	rm -f "$FS/out.img"
	tf=() tl=() ts=() fl=() fs=()
	data=0
	for ((r = 0; r < RUNS; r++)); do
		tf+=("$(timed "$KINDLING" flatten "$layout" -o "$FS/out.img")")
		rm -f "$FS/out.img"
		tl+=("$(timed "$KINDLING" push "$layout" --name "$name" --store "$FS/store-$r")")
		ts+=("$(timed "$KINDLING" push "$layout" --name "$name" --store "s3://kindling/$r-$name")")
		fl+=("$(timed "$KINDLING" fetch "$name" --store "$FS/store-$r" -o "$FS/f.img")")
		data=$(du -sb --apparent-size "$FS/store-$r/chunks" | cut -f1)
		rm -f "$FS/f.img"
		fs+=("$(timed "$KINDLING" fetch "$name" --store "s3://kindling/$r-$name" -o "$FS/f.img")")
		rm -rf "$FS/f.img" "$FS/store-$r" "$FS/s3/kindling/$r-$name"
	done
	read -r fm fx < <(stats "${tf[*]}")
	read -r lm lx < <(stats "${tl[*]}")
	read -r sm sx < <(stats "${ts[*]}")
	read -r flm flx < <(stats "${fl[*]}")
	read -r fsm fsx < <(stats "${fs[*]}")
	awk -v n="$name" -v raw="$raw" -v data="$data" -v fm="$fm" -v fx="$fx" -v lm="$lm" -v lx="$lx" \
		-v sm="$sm" -v sx="$sx" -v flm="$flm" -v flx="$flx" -v fsm="$fsm" -v fsx="$fsx" 'BEGIN {
		mb = raw / 1e6; d = data / 1e6
		printf "%-14s %7.1f %7.1f | %6.3f %6.3f %5.0f | %6.3f %6.3f %5.0f | %6.3f %6.3f %5.0f | %6.3f %6.3f %6.0f | %6.3f %6.3f %6.0f | %11.2fx\n",
			n, mb, d, fm, fx, mb / fm, lm, lx, mb / lm, sm, sx, mb / sm, flm, flx, d / flm, fsm, fsx, d / fsm, fm / lm }'
	echo "  runs: flatten ${tf[*]} | push-local ${tl[*]} | push-s3 ${ts[*]} | fetch-local ${fl[*]} | fetch-s3 ${fs[*]}" >&2
done
