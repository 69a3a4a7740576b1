#!/usr/bin/env bash
# Fieldvault's main job in one command: two devices of one user work offline and converge
# through the sync server, and nothing they or the server keep on disk is readable.
#
#   scripts/demo.sh
#
# It installs what the build needs (scripts/setup.sh --core), builds the release binaries,
# then, in a scratch directory it removes at the end (the server is stopped too, whatever
# happens):
#   1. sets up a server: `fieldvault-server init` (prints the certificate's pin), a user,
#      `serve` on a free port of 127.0.0.1, waiting for GET /healthz over pinned TLS;
#   2. makes two device vaults (passphrase keystore) and logs both in, pinning the server;
#   3. stops the server and writes documents on device one while it is down: they wait in
#      the outbox, and `fieldvault sync` fails (exit 1);
#   4. starts the server again; device one syncs (push), device two syncs (pull) and holds
#      the documents;
#   5. greps every file of both vaults and of the server's data directory for a plaintext
#      string of the documents and for the SQLite header, and fails if one matches.
# Needs Debian or Ubuntu with the Rust toolchain; takes a few minutes, mostly the build.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

step_no=0
bold="" plain=""
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; fi
step() {
  step_no=$((step_no + 1))
  printf '\n%s== %s. %s%s\n' "$bold" "$step_no" "$*" "$plain"
}
say() { printf '%s\n' "$*"; }
die() {
  printf '\ndemo: FAILED: %s\n' "$*" >&2
  exit 1
}

step "Install what the build needs (scripts/setup.sh --core)"
bash scripts/setup.sh --core

step "Build the release binaries (cargo build --release)"
cargo build --release
bin="${CARGO_TARGET_DIR:-$root/target}/release"
[ -x "$bin/fieldvault" ] && [ -x "$bin/fieldvault-server" ] || die "the binaries are not in $bin"
export PATH="$bin:$PATH"

# Everything below lives in a scratch directory, removed at the end with the server stopped.
scratch="$(mktemp -d "${TMPDIR:-/tmp}/fieldvault-demo.XXXXXX")"
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
cleanup() {
  stop_server
  rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The server: its data directory, and its key directory beside it (<data>.keys, the default).
export FIELDVAULT_DATA="$scratch/server-data"
server_log="$scratch/server.log"
# The user's password, and each device's vault passphrase: from the environment here, as a
# script would (a person gets prompts instead).
user="alice"
export FIELDVAULT_PASSWORD='correct horse battery staple 42'
export FIELDVAULT_PASSPHRASE='marble quokka seventy umbrella'
device1="$scratch/device-1"
device2="$scratch/device-2"
# A string that appears only in the documents, to look for on disk at the end.
marker="Quokkaberry-7319"

# Runs fieldvault against device N's vault, showing the command.
on() {
  local n="$1" dir
  shift
  dir="$device1"
  [ "$n" = 2 ] && dir="$device2"
  say "[device $n] \$ fieldvault $*"
  FIELDVAULT_VAULT="$dir" fieldvault "$@"
}
# Writes a document on device N from stdin (arguments are visible in /proc; stdin is not).
put_doc() {
  local n="$1" collection="$2" id="$3" json="$4" dir
  dir="$device1"
  [ "$n" = 2 ] && dir="$device2"
  say "[device $n] \$ echo '$json' | fieldvault put $collection $id"
  printf '%s\n' "$json" | FIELDVAULT_VAULT="$dir" fieldvault put "$collection" "$id"
}

# Starts the server on 127.0.0.1:$1 (0 picks a free port) and waits until GET /healthz
# answers over TLS pinned to the server's key; sets $port.
start_server() {
  say "\$ fieldvault-server serve --listen 127.0.0.1:$1 &"
  : >"$server_log"
  fieldvault-server serve --listen "127.0.0.1:$1" 2>>"$server_log" &
  server_pid=$!
  local i
  for i in $(seq 1 100); do
    kill -0 "$server_pid" 2>/dev/null || { cat "$server_log" >&2; server_pid=""; die "the server did not start"; }
    if [ "$1" = 0 ]; then
      port="$(sed -n 's|.*listening on https://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$server_log" | head -1)"
    else
      port="$1"
    fi
    if [ -n "$port" ] && healthy; then
      say "GET https://127.0.0.1:$port/healthz answered 200 (TLS pinned to $pin)"
      return 0
    fi
    sleep 0.1
  done
  cat "$server_log" >&2
  die "the server did not answer /healthz within 10 s"
}
# Whether /healthz answers 200, trusting only the pinned key (curl spells pins sha256//BASE64;
# --insecure skips the CA check of the self-signed certificate, not the pin). Without curl,
# whether the port accepts connections.
healthy() {
  if command -v curl >/dev/null; then
    curl -fsS --max-time 2 --insecure --pinnedpubkey "sha256//${pin#sha256/}" \
      "https://127.0.0.1:$port/healthz" >/dev/null 2>&1
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
  fi
}

step "Set up the sync server (in $scratch)"
say "\$ fieldvault-server init"
pin="$(fieldvault-server init 2>/dev/null)"
say "$pin    <- the certificate's SPKI pin: devices trust this key and no other"
say "\$ FIELDVAULT_PASSWORD=... fieldvault-server user add $user"
fieldvault-server user add "$user"
port=""
start_server 0
server="https://127.0.0.1:$port"

step "Make two device vaults and log both in (passphrase keystore)"
for n in 1 2; do
  # init prints the new key hierarchy; its first line is enough here.
  created="$(on "$n" init --keystore passphrase)"
  printf '%s\n' "$created" | sed -n '1,2p'
  # One pin is enough for a demo; a real deployment also pins the next key (a second --pin).
  on "$n" login --server "$server" --user "$user" --pin "$pin" --device-name "phone-$n" 2>/dev/null
done

step "Stop the server: the devices are offline now"
stop_server
say "server stopped"

step "Write documents on device one while offline"
put_doc 1 visits v1 "{\"patient\": \"Ada $marker\", \"bp\": [120, 80]}"
put_doc 1 visits v2 "{\"patient\": \"Grace $marker\", \"notes\": \"follow up in two weeks\"}"
put_doc 1 visits v1 "{\"patient\": \"Ada $marker\", \"bp\": [118, 76], \"seen\": true}"
say "The two writes of v1 fold into one queued change; nothing has left the device:"
on 1 outbox
say ""
set +e
on 1 sync
rc=$?
set -e
[ "$rc" -eq 1 ] || die "sync while the server is down exited $rc, not 1"
say "sync exited 1 while offline, as it should; the changes stay queued:"
on 1 outbox

step "Start the server again and sync both devices"
start_server "$port"
on 1 sync
[ -z "$(FIELDVAULT_VAULT="$device1" fieldvault outbox)" ] || die "device one's outbox is not empty after sync"
say "device one's outbox is empty: the server holds both documents"
on 2 sync

step "Device two holds the documents"
on 2 get visits v1
on 2 list visits
v1="$(FIELDVAULT_VAULT="$device2" fieldvault get visits v1)"
v2="$(FIELDVAULT_VAULT="$device2" fieldvault get visits v2)"
[[ "$v1" == *'"seen": true'* ]] || die "device two lacks the last edit of visits/v1"
[[ "$v2" == *"Grace $marker"* ]] || die "device two lacks visits/v2"

step "The files at rest hold no plaintext"
say "Every file under both vaults and the server's data directory:"
(cd "$scratch" && find device-1 device-2 server-data -type f -exec ls -l {} + | awk '{printf "  %10s  %s\n", $5, $9}')
leaks=0
for pattern in "$marker" "SQLite format 3"; do
  say "\$ grep -rlaF '$pattern' device-1 device-2 server-data"
  set +e
  found="$(cd "$scratch" && grep -rlaF "$pattern" device-1 device-2 server-data)"
  rc=$?
  set -e
  case "$rc" in
    1) say "  no file matches" ;;
    0)
      say "$found" | sed 's/^/  MATCH: /'
      leaks=1
      ;;
    *) die "grep failed (exit $rc)" ;;
  esac
done
((leaks == 0)) || die "plaintext found at rest"
say "None matches: the documents are encrypted on both devices and on the server, and no"
say "database is plain SQLite (SQLCipher leaves no header)."

step "Stop the server and remove the scratch directory"
stop_server
say "server stopped"
trap - EXIT
cleanup
say ""
say "demo: ok"
