#!/bin/bash
# bench-flatten.sh -- end-to-end numbers for `kindling flatten`, each against a
# baseline measured in the same run on the same machine.
#
# usage: scripts/bench-flatten.sh [-n RUNS] [IMAGE...]      throughput (default)
#        scripts/bench-flatten.sh --dedup [IMAGE...]        chunk dedup (= scripts/bench-dedup.sh)
#
# Throughput: per corpus image (all by default), RUNS (default 5) interleaved
# rounds of
#   kindling   kindling flatten LAYOUT -o TMPFS/out.img
#   gzip|tar   gzip -dc (zstd -dc for zstd layers, cat for plain ones) | tar -x
#              of every layer blob in order into a fresh tmpfs directory: what
#              pull-and-unpack costs before a container can start
#   mke2fs -d  mke2fs -t ext4 -d ROOTFS into a tmpfs file as large as our image
#              (ROOTFS unpacked once by corpus.py unpack, on the tmpfs), with
#              pinned options so that it is deterministic (below)
# after one untimed warm-up of kindling (sizes the mke2fs file, warms the page
# cache with the blobs). Times are wall-clock seconds of the whole command;
# MB = 10^6 bytes of uncompressed layer tar (corpus.json), so MB/s compares
# the three on the same input.
#
# Dedup (--dedup): flattens every image (all corpus images by default) and
# builds the mke2fs -d baseline of each, then reports from `kindling chunks`:
# chunks, zero chunks, non-zero chunks, image size, the share of
# debian-slim's distinct non-zero chunks present in each image, python-app-v2's
# new chunks over v1, and growth: non-zero chunk bytes vs the rootfs' file
# bytes (du -sb --apparent-size).
#
# Needs root (tmpfs mount), python3, zstd, e2fsprogs. Environment:
# KINDLING_CORPUS (default /var/cache/kindling-corpus), KINDLING (binary,
# default target/release/kindling, built if missing), KINDLING_CORPUS_PY
# (default ../shared/corpus/corpus.py), BENCH_TMPFS_SIZE (default 6g).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${KINDLING_CORPUS:-/var/cache/kindling-corpus}
CORPUS_PY=${KINDLING_CORPUS_PY:-$ROOT/../shared/corpus/corpus.py}
KINDLING=${KINDLING:-$ROOT/target/release/kindling}
RUNS=5
MODE=throughput
IMAGES=()
while [ $# -gt 0 ]; do
	case "$1" in
		-n) RUNS=$2; shift ;;
		--dedup) MODE=dedup ;;
		-h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
		-*) echo "unknown option $1" >&2; exit 2 ;;
		*) IMAGES+=("$1") ;;
	esac
	shift
done

[ "$(id -u)" = 0 ] || { echo "must run as root (tmpfs mount)" >&2; exit 1; }
[ -f "$CORPUS/corpus.json" ] || { echo "no corpus at $CORPUS (set KINDLING_CORPUS)" >&2; exit 1; }
[ -f "$CORPUS_PY" ] || { echo "no corpus.py at $CORPUS_PY (set KINDLING_CORPUS_PY)" >&2; exit 1; }
if [ ! -x "$KINDLING" ]; then
	(cd "$ROOT" && cargo build --release -q)
fi
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
if [ ${#IMAGES[@]} -eq 0 ]; then
	mapfile -t IMAGES < <($PY -c 'import json,sys; [print(i["name"]) for i in json.load(open(sys.argv[1]))["images"]]' "$CORPUS/corpus.json")
fi

# Pinned mke2fs: fixed UUID, directory hash seed and clock, no journal (our
# images have none), root owned by 0:0. Same values for every image.
export SOURCE_DATE_EPOCH=1747699200 E2FSPROGS_FAKE_TIME=1747699200
MKE2FS_UUID=6b696e64-6c69-6e67-2d62-656e63680000
MKE2FS_OPTS=(-q -F -t ext4 -b 4096 -U "$MKE2FS_UUID" -E "hash_seed=$MKE2FS_UUID,root_owner=0:0" -O ^has_journal)

TMP=$(mktemp -d /tmp/kindling-bench.XXXXXX)
FS=$TMP/fs
mkdir -p "$FS"
cleanup() {
	mountpoint -q "$FS" && umount "$FS"
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
mount -t tmpfs -o "size=${BENCH_TMPFS_SIZE:-6g}" kindling-bench "$FS"

now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.3f", e - s }'; }

# layers NAME -> lines "BLOB_PATH MEDIA_TYPE UNCOMPRESSED_SIZE", bottom first
layers() {
	$PY - "$CORPUS" "$1" <<-'EOF'
	import json, os, sys
	corpus, name = sys.argv[1:]
	im = [i for i in json.load(open(os.path.join(corpus, "corpus.json")))["images"] if i["name"] == name][0]
	for l in im["layers"]:
	    algo, hexd = l["digest"].split(":")
	    print(os.path.join(corpus, "all", "blobs", algo, hexd), l["mediaType"], l["uncompressed_size"])
	EOF
}

# unpack_layers NAME DEST: the gzip|tar baseline. GNU tar knows no OCI
# rules: where a layer replaces a directory with a file (torture) it reports
# an error and goes on; that is noted in TMP/tar.log and does not stop the run.
unpack_layers() {
	local blob mt _size
	mkdir "$2"
	while read -r blob mt _size; do
		case "$mt" in
			*+gzip) gzip -dc "$blob" ;;
			*+zstd) zstd -dcq "$blob" ;;
			*) cat "$blob" ;;
		esac | tar -x --numeric-owner -C "$2" -f - 2>>"$TMP/tar.log" ||
			echo "  note: tar reported errors unpacking $1 (ignored)" >>"$TMP/tar.notes"
	done < <(layers "$1")
}

# mke2fs_image ROOTFS OUT BYTES
mke2fs_image() {
	rm -f "$2"
	truncate -s "$3" "$2"
	mke2fs "${MKE2FS_OPTS[@]}" -d "$1" "$2"
}

image_bytes() { stat -c %s "$1"; }

# stats "t1 t2 ..." -> "median max"
stats() {
	printf '%s\n' $1 | sort -g | awk '{ a[NR] = $1 } END {
		m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
		printf "%.3f %.3f\n", m, a[NR] }'
}

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(uname -r)  $(nproc) cpus  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')  load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# kindling: $KINDLING ($("$KINDLING" --version 2>/dev/null || echo '?'))"
echo "# corpus: $CORPUS   mke2fs: $(mke2fs -V 2>&1 | head -1)"

if [ "$MODE" = throughput ]; then
	echo "# $RUNS interleaved runs per image; seconds are wall clock; MB = 10^6 bytes of uncompressed layer tar"
	echo
	printf '%-14s %8s | %16s %7s | %16s %7s | %16s %7s | %7s %8s\n' \
		image raw-MB "kindling med/max" MB/s "gzip|tar med/max" MB/s "mke2fs-d med/max" MB/s \
		speedup "vs+mkfs"
	for name in "${IMAGES[@]}"; do
		layout=$CORPUS/images/$name
		raw=$(layers "$name" | awk '{ s += $3 } END { print s }')
		# Warm-up: sizes the mke2fs file, reads the blobs into the page cache.
		"$KINDLING" flatten "$layout" -o "$FS/out.img" >/dev/null
		size=$(image_bytes "$FS/out.img")
		rm -f "$FS/out.img"
		$PY "$CORPUS_PY" unpack "$CORPUS/all" "$name" "$FS/rootfs" >/dev/null
		tk=() tt=() tm=()
		for ((r = 0; r < RUNS; r++)); do
			s=$(now)
			"$KINDLING" flatten "$layout" -o "$FS/out.img" >/dev/null
			e=$(now); tk+=("$(elapsed "$s" "$e")")
			rm -f "$FS/out.img"

			s=$(now)
			unpack_layers "$name" "$FS/unpacked"
			e=$(now); tt+=("$(elapsed "$s" "$e")")
			rm -rf "$FS/unpacked"

			s=$(now)
			mke2fs_image "$FS/rootfs" "$FS/mke2fs.img" "$size"
			e=$(now); tm+=("$(elapsed "$s" "$e")")
			rm -f "$FS/mke2fs.img"
		done
		rm -rf "$FS/rootfs"
		read -r km kx < <(stats "${tk[*]}")
		read -r tm_ tx < <(stats "${tt[*]}")
		read -r mm mx < <(stats "${tm[*]}")
		awk -v n="$name" -v raw="$raw" -v km="$km" -v kx="$kx" -v tm="$tm_" -v tx="$tx" -v mm="$mm" -v mx="$mx" 'BEGIN {
			mb = raw / 1e6
			printf "%-14s %8.1f | %7.3f %8.3f %7.0f | %7.3f %8.3f %7.0f | %7.3f %8.3f %7.0f | %6.2fx %7.2fx\n",
				n, mb, km, kx, mb / km, tm, tx, mb / tm, mm, mx, mb / mm, tm / km, (tm + mm) / km }'
		echo "  runs: kindling ${tk[*]} | gzip|tar ${tt[*]} | mke2fs ${tm[*]}" >&2
		if [ -s "$TMP/tar.notes" ]; then sort -u "$TMP/tar.notes" >&2; rm -f "$TMP/tar.notes"; fi
	done
	echo
	echo "# speedup = median(gzip|tar) / median(kindling); vs+mkfs = (median(gzip|tar) + median(mke2fs -d)) / median(kindling)"
	exit 0
fi

# ---------------------------------------------------------------------------
# dedup mode
CH=$TMP/chunks
mkdir -p "$CH"
for name in "${IMAGES[@]}"; do
	"$KINDLING" flatten "$CORPUS/images/$name" -o "$FS/out.img" >/dev/null
	size=$(image_bytes "$FS/out.img")
	"$KINDLING" chunks "$FS/out.img" >"$CH/$name.kindling"
	echo "$size" >"$CH/$name.kindling.size"
	rm -f "$FS/out.img"
	$PY "$CORPUS_PY" unpack "$CORPUS/all" "$name" "$FS/rootfs" >/dev/null
	du -sb --apparent-size "$FS/rootfs" | cut -f1 >"$CH/$name.rootfs-bytes"
	du -sB1 "$FS/rootfs" | cut -f1 >"$CH/$name.rootfs-alloc"
	mke2fs_image "$FS/rootfs" "$FS/mke2fs.img" "$size"
	"$KINDLING" chunks "$FS/mke2fs.img" >"$CH/$name.mke2fs"
	echo "$size" >"$CH/$name.mke2fs.size"
	rm -rf "$FS/rootfs" "$FS/mke2fs.img"
done
$PY - "$CH" "${IMAGES[@]}" <<-'EOF'
	import sys
	ch, names = sys.argv[1], sys.argv[2:]
	CHUNK = 512 << 10

	def load(name, kind):
	    with open(f"{ch}/{name}.{kind}") as f:
	        hashes = [line.split()[1] for line in f]
	    size = int(open(f"{ch}/{name}.{kind}.size").read())
	    return hashes, size

	print("# chunks of 512 KiB; base-share = share of debian-slim's DISTINCT non-zero chunks found in the image;")
	print("# growth = non-zero chunk bytes / rootfs file bytes (du -sb --apparent-size of the merged tree);")
	print("# alloc-growth = the same over the rootfs' allocated bytes on tmpfs (du -sB1: sparse files count what they hold)")
	for kind, label in (("kindling", "kindling flatten"), ("mke2fs", "mke2fs -d (pinned), same image size")):
	    print()
	    print(f"## {label}")
	    base = None
	    if "debian-slim" in names:
	        h, _ = load("debian-slim", kind)
	        base = {x for x in h if x != "zero"}
	    print(f"{'image':<14} {'chunks':>7} {'zero':>6} {'nonzero':>8} {'distinct':>9} {'size-MiB':>9} {'rootfs-MB':>10} "
	          f"{'alloc-MB':>9} {'nz-MB':>8} {'growth':>7} {'alloc-gr':>8} {'base-share':>10}")
	    for n in names:
	        h, size = load(n, kind)
	        nz = [x for x in h if x != "zero"]
	        s = set(nz)
	        rootfs = int(open(f"{ch}/{n}.rootfs-bytes").read())
	        alloc = int(open(f"{ch}/{n}.rootfs-alloc").read())
	        share = "%9.2f%%" % (100 * len(base & s) / len(base)) if base else "-"
	        nzb = len(nz) * CHUNK
	        print(f"{n:<14} {len(h):>7} {len(h) - len(nz):>6} {len(nz):>8} {len(s):>9} {size / 2**20:>9.1f} "
	              f"{rootfs / 1e6:>10.1f} {alloc / 1e6:>9.1f} {nzb / 1e6:>8.1f} {nzb / rootfs:>6.2f}x {nzb / alloc:>7.2f}x "
	              f"{share:>10}")
	    sets = [{x for x in load(n, kind)[0] if x != "zero"} for n in names]
	    union = set().union(*sets)
	    total = sum(len(x) for x in sets)
	    print(f"all {len(names)} images: {total} distinct non-zero chunks per image summed, {len(union)} in the union "
	          f"(store {len(union) * CHUNK / 2**20:.0f} MiB instead of {total * CHUNK / 2**20:.0f} MiB: "
	          f"{100 * (1 - len(union) / total):.1f}% saved)")
	    if "python-app-v1" in names and "python-app-v2" in names:
	        v1 = {x for x in load("python-app-v1", kind)[0] if x != "zero"}
	        v2 = {x for x in load("python-app-v2", kind)[0] if x != "zero"}
	        new = len(v2 - v1)
	        print(f"python-app-v2 over v1: {new} new distinct non-zero chunks of {len(v2)} "
	              f"({new * CHUNK / 2**20:.1f} MiB to upload)")
EOF
