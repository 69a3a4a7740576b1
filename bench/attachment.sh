#!/usr/bin/env bash
# Attachment stream throughput beside its baselines, in one run:
#  - memory to sink: encrypt and decrypt 1 GiB, and the raw one-shot AES-256-GCM of the same
#    library (aws-lc-rs) on the same bytes;
#  - file to file on tmpfs: fieldvault's format and the `age` CLI (Debian package) on the
#    same 1 GiB file, with peak RSS (GNU time), and a plain `dd` copy as the floor.
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
"$bin" memory "$SIZE_MIB" | grep '^figure '

dir=$(mktemp -d -p /dev/shm fvbench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
head -c $((SIZE_MIB << 20)) /dev/urandom > "$dir/in"
bytes=$((SIZE_MIB << 20))
run() { /usr/bin/time -f '%e %M' -o "$dir/time" "$@" >/dev/null; cat "$dir/time"; }
rate() { python3 -c "print(f'{$bytes/float($1)/1e9:.3f}')"; }
read -r t_enc rss_enc < <(run "$bin" encrypt "$dir/in" "$dir/in.fva")
read -r t_dec rss_dec < <(run "$bin" decrypt "$dir/in.fva" "$dir/out")
cmp -s "$dir/in" "$dir/out" || { echo "round trip differs" >&2; exit 1; }
# The floor for any file-to-file tool here: a plain copy of the same bytes (tmpfs page
# allocation in this VM's kernel dominates file-to-file timings).
read -r t_copy _ < <(run dd if="$dir/in" of="$dir/copy" bs=4M)
rm -f "$dir/copy"
age-keygen -o "$dir/key" 2>/dev/null
recipient=$(age-keygen -y "$dir/key")
read -r a_enc a_rss_enc < <(run age -r "$recipient" -o "$dir/in.age" "$dir/in")
read -r a_dec a_rss_dec < <(run age -d -i "$dir/key" -o "$dir/out.age" "$dir/in.age")
echo "figure attachment_encrypt_file $(rate "$t_enc") GB/s"
echo "figure attachment_decrypt_file $(rate "$t_dec") GB/s"
echo "figure plain_copy_file $(rate "$t_copy") GB/s"
echo "figure attachment_encrypt_vs_copy $(python3 -c "print(f'{$t_copy/max($t_enc,1e-9):.3f}')") x"
echo "figure age_encrypt_file $(rate "$a_enc") GB/s"
echo "figure age_decrypt_file $(rate "$a_dec") GB/s"
echo "figure attachment_vs_age_encrypt $(python3 -c "print(f'{$a_enc/max($t_enc,1e-9):.3f}')") x"
echo "figure attachment_vs_age_decrypt $(python3 -c "print(f'{$a_dec/max($t_dec,1e-9):.3f}')") x"
echo "figure attachment_peak_rss_encrypt $(python3 -c "print(f'{$rss_enc/1024:.1f}')") MiB"
echo "figure attachment_peak_rss_decrypt $(python3 -c "print(f'{$rss_dec/1024:.1f}')") MiB"
echo "figure age_peak_rss_encrypt $(python3 -c "print(f'{$a_rss_enc/1024:.1f}')") MiB"
