#!/usr/bin/env bash
# Attachment sync through the real `fieldvault-server` (release binary, embedded SQLCipher
# store, `init` / `user add` / `serve` on 127.0.0.1), beside a bare HTTPS client sending the
# same bytes in the same run (issue 16). Each side gets a fresh server of its own; the steps
# run one at a time, each its own process under /usr/bin/time -v (peak RSS, CPU; the
# server's CPU during the step from /proc), in the order
#   baseline upload, upload, download, baseline download
# so that each measured step sits next to its baseline.
#   prepare:           a random source file of FV_BENCH_BYTES; vault device-a with document
#                      visits/v1 and the file attached (`attach`, timed as its own figure);
#                      vault device-b, empty; baseline.fva (and transport.fva): the same bytes
#                      encrypted in the same format (v2, 64 KiB chunks) for visits/b1 (t1).
#   upload:            device-a logs in (timed apart) and runs one `sync`: the push of v1 with
#                      its attachment list, the pull, the upload (metadata, every chunk).
#   download:          device-b logs in, prefetches `visits`, runs one `sync`: the pull, the
#                      key, the download (every chunk checked, the file decrypted once before
#                      it is kept); then `attachment_get` to a file (its own figure), compared
#                      with the source byte for byte.
#   baseline upload:   the bare client of sync_bench.rs (one pinned keep-alive TLS connection,
#                      HTTP/1.1 framed by hand, signed requests, verified answers, no vault):
#                      a push of visits/b1 listing the attachment, its metadata, every chunk
#                      of baseline.fva, one request at a time.
#   baseline download: the bare client GETs the metadata and every chunk into a file (no
#                      check beyond each answer's signature); afterwards, untimed, the file is
#                      compared with baseline.fva, and an fsync of it and one decryption of
#                      it are timed as figures of their own (work the device's download does).
#   transport up/down: the baseline's requests again (visits/t1, on the baseline's server),
#                      sent through the SDK's own Transport (hyper; HTTP/2 by ALPN): the
#                      device's wire without its vault, to say where the device's time goes.
# Prints `figure NAME VALUE UNIT`; ratios are the device's time over the baseline's.
#   bench/attachment_sync.sh                              # 1 GiB, a few minutes once built
#   FV_BENCH_BYTES=67108864 bench/attachment_sync.sh      # 64 MiB, a quick look
# Disk: about 14x FV_BENCH_BYTES at the peak (the source and three encrypted copies, the
# downloads, two server stores and their write-ahead logs: 885 MB measured at 64 MiB) in a
# temporary directory under $TMPDIR, removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export FV_BENCH_BYTES="${FV_BENCH_BYTES:-1073741824}"
export FIELDVAULT_PASSWORD='attachment benchmark password'
# GNU time measures each step's peak RSS and CPU.
if [ ! -x /usr/bin/time ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq time >/dev/null
fi

cargo build -q --release -p fieldvault-server --bin fieldvault-server --example attachment_bench
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# Copies: other builds in the shared target directory cannot swap a binary mid-run.
cp target/release/fieldvault-server target/release/examples/attachment_bench "$work/"
server_bin="$work/fieldvault-server"
bench="$work/attachment_bench"

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

# Runs one step of the example under GNU time (against server $2, if any); its figures,
# then the step process's peak RSS and CPU time and the server's CPU time during the step.
# Client and server take turns (one request at a time), so the two CPU times add up to
# about the step's wall time: they say which side the time goes to.
step() {
    local name=$1 server=$2
    shift 2
    local pid="" before=0 after=0
    if [ -n "$server" ]; then pid=$(cat "$work/$server.pid"); before=$(cpu_secs "$pid"); fi
    /usr/bin/time -v -o "$work/$name.time" "$bench" "$@" >"$work/$name.out"
    if [ -n "$server" ]; then after=$(cpu_secs "$pid"); fi
    grep '^figure ' "$work/$name.out"
    awk -v n="$name" '
        /Maximum resident set size/ { printf "figure attachment_%s_rss %.1f MiB\n", n, $NF / 1024 }
        /User time|System time/ { cpu += $NF }
        END { printf "figure attachment_%s_client_cpu %.2f s\n", n, cpu }' "$work/$name.time"
    if [ -n "$server" ]; then
        awk -v n="$name" -v a="$after" -v b="$before" 'BEGIN { printf "figure attachment_%s_server_cpu %.2f s\n", n, a - b }'
    fi
}

echo "figure attachment_bytes $FV_BENCH_BYTES bytes"
start_server device
start_server baseline
dev=("$(cat "$work/device.url")" "$(cat "$work/device.pin")")
base=("$(cat "$work/baseline.url")" "$(cat "$work/baseline.pin")")
{
    step prepare "" prepare "$work/files"
    step baseline_upload baseline baseline-upload "$work/files" "${base[@]}"
    step upload device upload "$work/files" "${dev[@]}"
    step download device download "$work/files" "${dev[@]}"
    step baseline_download baseline baseline-download "$work/files" "${base[@]}"
    step transport_upload baseline transport-upload "$work/files" "${base[@]}"
    step transport_download baseline transport-download "$work/files" "${base[@]}"
} | tee "$work/figures"

awk '
    { f[$2] = $3 }
    END {
        printf "figure attachment_upload_vs_baseline %.2f x\n", f["attachment_upload"] / f["attachment_baseline_upload"]
        printf "figure attachment_download_vs_baseline %.2f x\n", f["attachment_download"] / f["attachment_baseline_download"]
        printf "figure attachment_transport_upload_vs_baseline %.2f x\n", f["attachment_transport_upload"] / f["attachment_baseline_upload"]
        printf "figure attachment_transport_download_vs_baseline %.2f x\n", f["attachment_transport_download"] / f["attachment_baseline_download"]
    }' "$work/figures"
