#!/usr/bin/env bash
# The server under load: 64 clients on loopback, each on its own keep-alive TLS connection and
# logged in as its own device, send signed requests in a closed loop for 10 s after a 2 s
# warm-up, against an in-process server on SQLite and on PostgreSQL, beside the baseline build
# (`--features bench-unsigned`: the same routes with the signing layer removed). Rounds
# alternate the two builds; the faster run of each is kept. Prints `figure NAME VALUE UNIT`.
# Two workloads (the first argument, or FV_BENCH_MODE):
#   device (issue 5, the default): GET /v1/devices/self. Figures server_{signed,unsigned}_
#     BACKEND_{ops,p50,p99,cpu,db_cpu} (cpu: us of this process per op, clients included;
#     db_cpu: us of the postgres processes per op); server_signing_overhead_BACKEND =
#     unsigned ops/s / signed ops/s; server_signing_cpu_ratio_BACKEND = signed CPU per op
#     (cpu + db_cpu) / unsigned.
#   push (issue 6): POST /v1/sync/push of 100 new documents per request (FV_BENCH_BATCH), ops/s
#     counting applied ops, p50/p99 per batch. Figures sync_push_{signed,unsigned}_BACKEND_
#     {ops,p50,p99,cpu,db_cpu}, sync_push_signing_overhead_BACKEND
#     and sync_push_signing_cpu_ratio_BACKEND; after every run one more device per
#     user pulls everything, and the run fails unless each op seen applied is there exactly
#     once and nothing else is (sync_exactly_once_BACKEND 1 = every run held).
#   bench/server.sh                                        # device, the full run, ~3 minutes once built
#   bench/server.sh push                                   # push, ~4 minutes once built
#   FV_BENCH_SECS=3 FV_BENCH_ROUNDS=1 bench/server.sh push  # a quick look
#   FV_BENCH_BACKENDS=sqlite bench/server.sh push           # without PostgreSQL
#   FV_BENCH_RATE=25000 bench/server.sh push                # paced: 25k ops/s offered in total,
#     latency from each request's scheduled time (ops/s then only shows the rate was held)
# Also FV_BENCH_CLIENTS (64), FV_BENCH_USERS (8), FV_BENCH_WARMUP_SECS (2), FV_BENCH_BATCH
# (100), FV_BENCH_PG_CONNS (16). PostgreSQL: FIELDVAULT_TEST_POSTGRES (default
# postgres://postgres@127.0.0.1:5432/test), a fresh schema per run, dropped after.
# Single-part timings (FV_BENCH_PARTS=1) come from the first signed run of each backend.
set -euo pipefail
cd "$(dirname "$0")/.."
export FIELDVAULT_TEST_POSTGRES="${FIELDVAULT_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"
export FV_BENCH_MODE="${1:-${FV_BENCH_MODE:-device}}"
case "$FV_BENCH_MODE" in
    device) prefix=server; partsre='^figure server_(healthz|part)_' ;;
    push) prefix=sync_push; partsre='^figure sync_part_' ;;
    *) echo "usage: bench/server.sh [device|push]" >&2; exit 2 ;;
esac
# Paced (open loop) at FV_BENCH_RATE ops/s in total: figures named *_paced_*.
if [[ ${FV_BENCH_RATE:-0} != 0 ]]; then prefix+=_paced; fi
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
            # The parts once per backend. A failed run (a bad answer, an op not on the server
            # exactly once) stops the script here.
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
            awk -v f="$f" -v n="${prefix}_${variant}_${backend}_ops" '$2 == n { print $3, f }' "$f"
        done | sort -g | tail -1 | cut -d' ' -f2-)
        grep "^figure ${prefix}_${variant}_${backend}_" "$best"
        cp "$best" "$work/best.$backend.$variant"
    done
    # The CPU ratio: CPU per op (this process and PostgreSQL's) signed over unsigned, from
    # the same two runs; less at the mercy of a noisy machine than ops/s.
    awk -v b="$backend" -v p="$prefix" '
        $2 == p "_signed_" b "_ops" { s = $3 } $2 == p "_unsigned_" b "_ops" { u = $3 }
        $2 == p "_signed_" b "_p50" { sp = $3 } $2 == p "_unsigned_" b "_p50" { up = $3 }
        $2 == p "_signed_" b "_cpu" || $2 == p "_signed_" b "_db_cpu" { sc += $3 }
        $2 == p "_unsigned_" b "_cpu" || $2 == p "_unsigned_" b "_db_cpu" { uc += $3 }
        END {
            printf "figure %s_signing_overhead_%s %.2f x\n", p, b, u / s
            printf "figure %s_signing_p50_ratio_%s %.2f x\n", p, b, sp / up
            if (sc > 0 && uc > 0) printf "figure %s_signing_cpu_ratio_%s %.2f x\n", p, b, sc / uc
        }' "$work/best.$backend.signed" "$work/best.$backend.unsigned"
    if [[ $FV_BENCH_MODE == push ]]; then
        # Every run checked itself; 1 only if each of them printed 1.
        awk -v n="sync_exactly_once_${backend}" '
            FNR == 1 { runs++ } $2 == n && $3 == 1 { ok++ }
            END { printf "figure %s %d bool\n", n, (runs > 0 && ok == runs) }' "$work/$backend".*.*
    fi
    grep -h -E "$partsre" "$work/$backend.signed.1"
done
