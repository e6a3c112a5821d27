#!/bin/bash
# bench-dedup.sh -- chunk dedup of kindling flatten vs mke2fs -d over the corpus.
# The dedup mode of bench-flatten.sh; see there for what it prints.
#
# usage: scripts/bench-dedup.sh [IMAGE...]
set -euo pipefail
exec "$(dirname "$0")/bench-flatten.sh" --dedup "$@"
