#!/usr/bin/env bash
# Runs the README's commands as written, in the repository's root, as a newcomer would: the
# quick start (setup, release build, a vault, a document), then the server section's first two
# blocks (a server, a user, a login with curl; the quick start's vault logging in and syncing).
# Whatever they create (demo-vault, server-data, server-data.keys) is removed afterwards, and
# the server they start is stopped. .ci/run calls it after the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
for leftover in demo-vault server-data server-data.keys; do
  if [ -e "$leftover" ]; then
    echo "check-readme: $leftover exists; remove it first (the README's commands create it)" >&2
    exit 1
  fi
done

# The Nth ```sh block after the heading $1 (N from 1), as text.
block() {
  awk -v heading="$1" -v want="$2" '
    $0 == heading { found = 1; next }
    found && /^## / { exit }
    found && /^```sh$/ { n++; if (n == want) { inside = 1; next } }
    inside && /^```$/ { exit }
    inside { print }
  ' README.md
}

script="$(mktemp)"
cleanup() {
  rm -rf demo-vault server-data server-data.keys "$script"
}
trap cleanup EXIT
{
  echo 'set -euo pipefail'
  # The server the README starts in the background stops with the script.
  echo 'trap '"'"'kill $(jobs -p) 2>/dev/null || true'"'"' EXIT'
  block '## Quick start' 1
  block '## Server' 1
  echo 'echo'
  block '## Server' 2
} >"$script"
[ -n "$(block '## Quick start' 1)" ] || { echo "check-readme: no quick start block in README.md" >&2; exit 1; }
[ -n "$(block '## Server' 2)" ] || { echo "check-readme: the server section lost its blocks" >&2; exit 1; }
echo "check-readme: running the README's quick start and server blocks"
bash "$script"
echo "check-readme: ok"
