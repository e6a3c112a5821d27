#!/bin/bash
# bench-store.sh -- what the origin store holds after pushing the corpus.
#
# usage: scripts/bench-store.sh [IMAGE...]     (default: all corpus images, in corpus order)
#
# Pushes every image, in order, into one new local store and prints per
# image what the push uploaded, then corpus-wide:
#   images       sum of the flattened image sizes (what a naive store of
#                whole images would hold)
#   non-zero     sum of each image's non-zero chunk bytes (chunked, zero
#                chunks dropped, no dedup across images)
#   stored       bytes of chunk objects in the store (dedup across images)
#   layers-raw   the registry's unique layer bytes, uncompressed (each layer
#                digest counted once)
#   layers-gz    the same, compressed as the registry stores them
# Needs nothing but the corpus (KINDLING_CORPUS, default
# /var/cache/kindling-corpus) and the binary (KINDLING, default
# target/release/kindling).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CORPUS=${KINDLING_CORPUS:-/var/cache/kindling-corpus}
KINDLING=${KINDLING:-$ROOT/target/release/kindling}
case "${1:-}" in -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
[ -f "$CORPUS/corpus.json" ] || { echo "no corpus at $CORPUS (set KINDLING_CORPUS)" >&2; exit 1; }
[ -x "$KINDLING" ] || (cd "$ROOT" && cargo build --release -q)
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
IMAGES=("$@")
if [ ${#IMAGES[@]} -eq 0 ]; then
	mapfile -t IMAGES < <($PY -c 'import json,sys; [print(i["name"]) for i in json.load(open(sys.argv[1]))["images"]]' "$CORPUS/corpus.json")
fi
TMP=$(mktemp -d /tmp/kindling-store.XXXXXX)
trap 'rm -rf "$TMP"' EXIT INT TERM
export KINDLING_KEY_FILE=$TMP/tenant.key
head -c 32 /dev/urandom >"$KINDLING_KEY_FILE"

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ)  corpus: $CORPUS  chunk 512 KiB  store: new local directory"
printf '%-14s %10s %7s %6s %8s %9s %12s\n' image image-MiB chunks zero present uploaded uploaded-MiB
for name in "${IMAGES[@]}"; do
	"$KINDLING" push "$CORPUS/images/$name" --name "$name" --store "$TMP/store" --json >>"$TMP/pushes.jsonl"
	tail -1 "$TMP/pushes.jsonl" | $PY -c 'import json,sys; s=json.load(sys.stdin); print("%-14s %10.1f %7d %6d %8d %9d %12.1f" % (sys.argv[1], s["image_bytes"]/2**20, s["chunks"], s["zero_chunks"], s["present_chunks"], s["uploaded_chunks"], s["uploaded_bytes"]/2**20))' "$name"
done
stored=$(find "$TMP/store/chunks" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
$PY - "$CORPUS" "$TMP/pushes.jsonl" "$stored" "${IMAGES[@]}" <<'PYEOF'
import json, os, sys
corpus, pushes, stored, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
c = json.load(open(os.path.join(corpus, "corpus.json")))
layers = {}
for im in c["images"]:
    if im["name"] in names:
        for l in im["layers"]:
            layers[l["digest"]] = (l["uncompressed_size"], l["size"])
ps = [json.loads(l) for l in open(pushes)]
images = sum(p["image_bytes"] for p in ps)
nonzero = sum((p["chunks"] - p["zero_chunks"]) * p["chunk_size"] for p in ps)
raw = sum(u for u, _ in layers.values())
gz = sum(s for _, s in layers.values())
mib = lambda b: b / 2**20
print()
print("images      %9.1f MiB  (sum of image sizes)" % mib(images))
print("non-zero    %9.1f MiB  (sum of non-zero chunks, no cross-image dedup)" % mib(nonzero))
print("stored      %9.1f MiB  = %.1f %% of non-zero, %.1f %% of image sizes, %.2fx the unique layer bytes" % (mib(stored), 100 * stored / nonzero, 100 * stored / images, stored / raw))
print("layers-raw  %9.1f MiB  (%d unique layers, uncompressed)" % (mib(raw), len(layers)))
print("layers-gz   %9.1f MiB  (the same, compressed)" % mib(gz))
PYEOF
