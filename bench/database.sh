#!/usr/bin/env bash
# The document workload on SQLCipher and on plain SQLite (same code, same pragmas), side by
# side in one run, the two sides in alternating blocks: 100k ~1 KiB inserts in batches of
# 1000, 100k warm point reads, 2k cold point reads (fresh connection each), a full list, the
# file size after 30k single-document commits, a file-size sweep over nine document sizes,
# and unlock-to-first-read. Prints `figure NAME VALUE UNIT`; ratios are SQLCipher's time
# (or size) over plain SQLite's.
#   bench/database.sh                 # the full workload
#   FV_BENCH_DOCS=10000 bench/database.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p fieldvault-client --features bench-baseline --bench database 2>/dev/null | grep '^figure '
