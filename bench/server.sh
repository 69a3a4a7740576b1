#!/usr/bin/env bash
# The server under load: 64 clients on loopback, each on its own keep-alive TLS connection and
# logged in as its own device, send signed GET /v1/devices/self for 10 s after a 2 s warm-up,
# against an in-process server on SQLite and on PostgreSQL, beside the baseline build
# (`--features bench-unsigned`: the same routes with the signing layer removed). Rounds
# alternate the two builds; the faster run of each is kept. Prints `figure NAME VALUE UNIT`;
# server_signing_overhead_BACKEND = unsigned ops/s / signed ops/s.
#   bench/server.sh                                   # the full run, about 3 minutes once built
#   FV_BENCH_SECS=3 FV_BENCH_ROUNDS=1 bench/server.sh  # a quick look
#   FV_BENCH_BACKENDS=sqlite bench/server.sh          # without PostgreSQL
# Also FV_BENCH_CLIENTS (64), FV_BENCH_USERS (8), FV_BENCH_WARMUP_SECS (2), FV_BENCH_PG_CONNS
# (16). PostgreSQL: FIELDVAULT_TEST_POSTGRES (default postgres://postgres@127.0.0.1:5432/test),
# a fresh schema per run, dropped after.
set -euo pipefail
cd "$(dirname "$0")/.."
export FIELDVAULT_TEST_POSTGRES="${FIELDVAULT_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
rounds="${FV_BENCH_ROUNDS:-2}"
backends="${FV_BENCH_BACKENDS:-sqlite postgres}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One binary per build; the second build only recompiles the server crate and the example.
cargo build -q --release -p fieldvault-server --example load
cp target/release/examples/load "$work/load-signed"
cargo build -q --release -p fieldvault-server --example load --features bench-unsigned
cp target/release/examples/load "$work/load-unsigned"

for round in $(seq 1 "$rounds"); do
    order="signed unsigned"
    if (( round % 2 == 0 )); then order="unsigned signed"; fi
    for backend in $backends; do
        for variant in $order; do
            # The parts (healthz under the same load, store calls, token check, HMAC) once.
            parts=0
            if [[ $round == 1 && $variant == signed ]]; then parts=1; fi
            FV_BENCH_PARTS=$parts "$work/load-$variant" "$backend" >"$work/$backend.$variant.$round"
        done
    done
done

for backend in $backends; do
    for variant in signed unsigned; do
        # The run with the most ops/s, all three of its figures.
        best=$(for f in "$work/$backend.$variant".*; do
            awk -v f="$f" -v n="server_${variant}_${backend}_ops" '$2 == n { print $3, f }' "$f"
        done | sort -g | tail -1 | cut -d' ' -f2-)
        grep "^figure server_${variant}_${backend}_" "$best"
        cp "$best" "$work/best.$backend.$variant"
    done
    awk -v b="$backend" '
        $2 == "server_signed_" b "_ops" { s = $3 } $2 == "server_unsigned_" b "_ops" { u = $3 }
        $2 == "server_signed_" b "_p50" { sp = $3 } $2 == "server_unsigned_" b "_p50" { up = $3 }
        END {
            printf "figure server_signing_overhead_%s %.2f x\n", b, u / s
            printf "figure server_signing_p50_ratio_%s %.2f x\n", b, sp / up
        }' "$work/best.$backend.signed" "$work/best.$backend.unsigned"
    grep -h -e '^figure server_healthz_' -e '^figure server_part_' "$work/$backend.signed.1"
done
