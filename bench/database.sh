#!/usr/bin/env bash
# The document workload on SQLCipher and on plain SQLite (same code, same pragmas), side by
# side in one run, the two sides in alternating blocks: 100k ~1 KiB inserts in batches of
# 1000, 100k warm point reads, 2k cold point reads (fresh connection each), a full list, the
# file size after 30k single-document commits, a file-size sweep over nine document sizes,
# and unlock-to-first-read (in-process keystore, then GNOME Keyring's Secret Service over
# D-Bus). Prints `figure NAME VALUE UNIT`; ratios are SQLCipher's time (or size) over plain
# SQLite's.
#   bench/database.sh                 # the full workload
#   FV_BENCH_DOCS=10000 bench/database.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cargo bench -q -p fieldvault-client --features bench-baseline --bench database --no-run --message-format=json \
  2>/dev/null | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="database" and m.get("executable"): print(m["executable"])' | tail -1)
"$bin" | grep '^figure '

# Unlock to first read through a real OS keystore: GNOME Keyring's Secret Service in a
# throwaway D-Bus session and home directory (installed if missing, Debian packages), so
# the figure includes the keystore's IPC. The one above uses an in-process store.
need=()
command -v dbus-run-session >/dev/null || need+=(dbus)
command -v gnome-keyring-daemon >/dev/null || need+=(gnome-keyring)
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
HOME=$home FV_BENCH_ONLY=unlock-secret-service dbus-run-session -- sh -c \
  'printf bench | gnome-keyring-daemon --unlock --components=secrets >/dev/null && exec "$0"' "$bin" 2>/dev/null \
  | grep '^figure '
