#!/usr/bin/env bash
# The device's sync client against the real `fieldvault-server` (release binary, embedded
# SQLCipher store, `init` / `user add` / `serve` on 127.0.0.1), beside a bare protocol client
# in the same run. Each side gets a fresh server of its own; the steps run one at a time, each
# its own process under /usr/bin/time -v (peak RSS, CPU, disk writes; the server's CPU during
# the step from /proc), in the order
#   baseline push, drain, first pull, baseline pull
# so that each measured step sits next to its baseline.
#   drain:         N documents of 1 KiB written offline with put_many (1,000 a transaction)
#                  sit in a vault's outbox; the device logs in and runs one `sync` (push,
#                  then the pull that follows it).
#   first pull:    a fresh vault logs in as the same user and runs one `sync`: every document.
#   baseline push: the same N ops over raw signed HTTP/1.1 (examples/load.rs's client, no
#                  vault), 500 a request.
#   baseline pull: a fresh raw device pulls them with limit 5000, then writes each page to a
#                  vault with put_many; network and vault writes timed apart and added.
# Prints `figure NAME VALUE UNIT`; ratios are the device's time over the baseline's (the
# drain's baseline is the baseline push plus the baseline pull: the same exchanges).
#   bench/sync.sh                        # 100,000 documents, under a minute once built
#   FV_BENCH_DOCS=10000 bench/sync.sh    # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
export FV_BENCH_DOCS="${FV_BENCH_DOCS:-100000}"
export FIELDVAULT_PASSWORD='sync benchmark password'
# GNU time measures each step's peak RSS, CPU and disk writes.
if [ ! -x /usr/bin/time ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq time >/dev/null
fi

cargo build -q --release -p fieldvault-server --bin fieldvault-server --example sync_bench
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# Copies: other builds in the shared target directory cannot swap a binary mid-run.
cp target/release/fieldvault-server target/release/examples/sync_bench "$work/"
server_bin="$work/fieldvault-server"
bench="$work/sync_bench"

# A fresh server in $work/$1: its pin in $work/$1.pin, its https://ADDR in $work/$1.url.
start_server() {
    local data="$work/$1"
    FIELDVAULT_DATA="$data" "$server_bin" init 2>>"$data.setup" >"$data.pin"
    FIELDVAULT_DATA="$data" "$server_bin" user add bench 2>>"$data.setup"
    FIELDVAULT_DATA="$data" "$server_bin" serve --listen 127.0.0.1:0 2>"$data.log" &
    pids+=($!)
    echo $! >"$data.pid"
    for _ in $(seq 1 100); do
        if grep -q 'listening on https://' "$data.log"; then
            sed -n 's/.*listening on \(https:\/\/[0-9.:]*\).*/\1/p' "$data.log" | head -1 >"$data.url"
            return
        fi
        sleep 0.1
    done
    echo "the server in $data did not start:" >&2
    cat "$data.log" >&2
    exit 1
}

# CPU seconds (user + system) the process has used so far.
cpu_secs() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$1/stat"
}

# Runs one step of the example under GNU time against server $1; its figures, then the step
# process's peak RSS and CPU time and the server's CPU time during the step. Client and
# server take turns (one request at a time), so the two CPU times add up to about the
# step's wall time: they say which side the time goes to.
step() {
    local name=$1 server=$2
    shift 2
    local pid before after
    pid=$(cat "$work/$server.pid")
    before=$(cpu_secs "$pid")
    /usr/bin/time -v -o "$work/$name.time" "$bench" "$@" >"$work/$name.out"
    after=$(cpu_secs "$pid")
    grep '^figure ' "$work/$name.out"
    awk -v n="$name" '
        /Maximum resident set size/ { printf "figure sync_%s_peak_rss %.1f MiB\n", n, $NF / 1024 }
        /User time|System time/ { cpu += $NF }
        /File system outputs/ { written = $NF * 512 / 1048576 }
        END {
            printf "figure sync_%s_client_cpu %.2f s\n", n, cpu
            printf "figure sync_%s_client_disk_writes %.0f MiB\n", n, written
        }' "$work/$name.time"
    awk -v n="$name" -v a="$after" -v b="$before" 'BEGIN { printf "figure sync_%s_server_cpu %.2f s\n", n, a - b }'
}

start_server device
start_server baseline
"$bench" prepare "$work/vaults" | grep '^figure '
dev=("$(cat "$work/device.url")" "$(cat "$work/device.pin")")
base=("$(cat "$work/baseline.url")" "$(cat "$work/baseline.pin")")
{
    step baseline_push baseline baseline-push "$work/vaults" "${base[@]}"
    step drain device drain "$work/vaults" "${dev[@]}"
    step first_pull device pull "$work/vaults" "${dev[@]}"
    step baseline_pull baseline baseline-pull "$work/vaults" "${base[@]}"
} | tee "$work/figures"
"$bench" verify "$work/vaults" | grep '^figure '

# The page cache each vault connection may fill (crates/client/src/database.rs; negative
# cache_size is KiB).
kib=$(sed -n 's/.*PRAGMA cache_size = -\([0-9]*\);.*/\1/p' crates/client/src/database.rs | head -1)
echo "figure sync_vault_page_cache_cap $((kib / 1024)) MiB"
du -k "$work/vaults/device-b/accounts/default/documents.db" |
    awk '{ printf "figure sync_first_pull_db_size %.1f MiB\n", $1 / 1024 }'

# The drain is a push and then the pull that brings every pushed document back (the server
# stamps `owner` into each): its baseline is the bare client doing the same two exchanges
# with the same vault writes, the baseline push plus the baseline pull. Its ratio to the bare
# push alone is printed too.
awk '
    $2 == "sync_drain" { d = $3 } $2 == "sync_baseline_push" { bp = $3 }
    $2 == "sync_first_pull" { p = $3 } $2 == "sync_baseline_pull" { bl = $3 }
    END {
        printf "figure sync_drain_vs_baseline %.2f x\n", d / (bp + bl)
        printf "figure sync_drain_vs_baseline_push_alone %.2f x\n", d / bp
        printf "figure sync_first_pull_vs_baseline %.2f x\n", p / bl
    }' "$work/figures"
