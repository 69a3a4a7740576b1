#!/usr/bin/env bash
# Attachment stream throughput beside its baselines, in one run:
#  - memory to sink: encrypt and decrypt 1 GiB, the raw one-shot AES-256-GCM of the same
#    library (aws-lc-rs) on the same bytes, and the format's crypto alone (the ceiling);
#  - file to file on tmpfs: fieldvault's format and the `age` CLI (Debian package) on the
#    same 1 GiB file, with peak RSS (GNU time), and a plain `dd` copy as the floor; a
#    warm-up round, then FV_BENCH_ROUNDS rounds (5 by default), medians reported;
#  - peak RSS of an 8 GiB attachment encrypted and decrypted (FV_BENCH_BIG_MIB).
# Prints `figure NAME VALUE UNIT`. Installs `age` and `time` if missing (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${FV_BENCH_MIB:-1024}
need=()
command -v age >/dev/null || need+=(age)
[ -x /usr/bin/time ] || need+=(time)
if ((${#need[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
bin=$(cargo bench -q -p fieldvault-core --bench attachment --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="attachment" and m.get("executable"): print(m["executable"])' | tail -1)
"$bin" memory "$SIZE_MIB" "${FV_BENCH_MEMORY_ROUNDS:-9}" | grep '^figure '

dir=$(mktemp -d -p /dev/shm fvbench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
head -c $((SIZE_MIB << 20)) /dev/urandom > "$dir/in"
bytes=$((SIZE_MIB << 20))
age-keygen -o "$dir/key" 2>/dev/null
recipient=$(age-keygen -y "$dir/key")
# tmpfs page allocation in this VM's kernel dominates file-to-file timings, and the first
# touch of memory the guest never used is slower still. So every tool runs in every round,
# each deleting its output before the next tool runs (all reuse the same freed pages); the
# first round only warms up; the medians of the rest are reported, peak RSS the largest.
# A plain `dd` copy of the same bytes is the floor for any file-to-file tool here.
run() { /usr/bin/time -f '%e %M' -o "$dir/time" "$@" >/dev/null; cat "$dir/time"; }
rounds=${FV_BENCH_ROUNDS:-5}
: > "$dir/times"
for round in $(seq 0 "$rounds"); do
  tag=$([ "$round" -eq 0 ] && echo warmup || echo round)
  echo "$tag fv_enc $(run "$bin" encrypt "$dir/in" "$dir/in.fva" "$dir/hashes")" >> "$dir/times"
  echo "$tag fv_dec $(run "$bin" decrypt "$dir/in.fva" "$dir/out")" >> "$dir/times"
  cmp -s "$dir/in" "$dir/out" || { echo "round trip differs" >&2; exit 1; }
  rm -f "$dir/out" "$dir/in.fva" "$dir/hashes"
  echo "$tag age_enc $(run age -r "$recipient" -o "$dir/in.age" "$dir/in")" >> "$dir/times"
  echo "$tag age_dec $(run age -d -i "$dir/key" -o "$dir/out" "$dir/in.age")" >> "$dir/times"
  rm -f "$dir/out" "$dir/in.age"
  echo "$tag copy $(run dd if="$dir/in" of="$dir/out" bs=4M status=none)" >> "$dir/times"
  rm -f "$dir/out"
done
python3 - "$dir/times" "$bytes" <<'PY'
import statistics, sys
t, rss = {}, {}
for line in open(sys.argv[1]):
    tag, what, secs, kib = line.split()
    if tag == "round":
        t.setdefault(what, []).append(float(secs))
        rss[what] = max(rss.get(what, 0), int(kib))
m = {k: statistics.median(v) for k, v in t.items()}
gbps = lambda k: float(sys.argv[2]) / max(m[k], 1e-9) / 1e9
print(f"figure attachment_encrypt_file {gbps('fv_enc'):.3f} GB/s")
print(f"figure attachment_decrypt_file {gbps('fv_dec'):.3f} GB/s")
print(f"figure plain_copy_file {gbps('copy'):.3f} GB/s")
print(f"figure attachment_encrypt_vs_copy {m['copy'] / max(m['fv_enc'], 1e-9):.3f} x")
print(f"figure age_encrypt_file {gbps('age_enc'):.3f} GB/s")
print(f"figure age_decrypt_file {gbps('age_dec'):.3f} GB/s")
print(f"figure attachment_vs_age_encrypt {m['age_enc'] / max(m['fv_enc'], 1e-9):.3f} x")
print(f"figure attachment_vs_age_decrypt {m['age_dec'] / max(m['fv_dec'], 1e-9):.3f} x")
print(f"figure attachment_peak_rss_encrypt {rss['fv_enc'] / 1024:.1f} MiB")
print(f"figure attachment_peak_rss_decrypt {rss['fv_dec'] / 1024:.1f} MiB")
print(f"figure age_peak_rss_encrypt {rss['age_enc'] / 1024:.1f} MiB")
PY

# Peak RSS whatever the size: an 8 GiB attachment (FV_BENCH_BIG_MIB), encrypted from a
# sparse file (reads as zeros, costs no memory) onto tmpfs with its chunk hashes spilled to
# a file as the vault does, then decrypted to /dev/null. Without the spill the encryptor
# would keep 32 bytes per 64 KiB chunk, 4 MiB more at 8 GiB.
rm -f "$dir/in"
big_mib=${FV_BENCH_BIG_MIB:-8192}
truncate -s "${big_mib}M" "$dir/sparse"
enc=$(run "$bin" encrypt "$dir/sparse" "$dir/big.fva" "$dir/hashes")
dec=$(run "$bin" decrypt "$dir/big.fva" /dev/null)
rm -f "$dir/sparse" "$dir/big.fva" "$dir/hashes"
echo "figure attachment_peak_rss_encrypt_${big_mib}mib $(echo "$enc" | awk '{printf "%.1f", $2 / 1024}') MiB"
echo "figure attachment_peak_rss_decrypt_${big_mib}mib $(echo "$dec" | awk '{printf "%.1f", $2 / 1024}') MiB"
