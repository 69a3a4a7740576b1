#!/usr/bin/env bash
# A short fuzzing smoke run of every target, seeded from the committed test vectors.
#   fuzz/smoke.sh [SECONDS_PER_TARGET]   (default 30)
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The machine's toolchain is stable:
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the nightly-only sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
export RUSTC_BOOTSTRAP=1
mkdir -p corpus/attachment corpus/key_records corpus/sync
python3 - <<'PY'
import pathlib
vec = pathlib.Path("../crates/core/tests/vectors")
for p in (vec / "attachment").glob("*_*"):
    for line in p.read_text().splitlines():
        if line.startswith("file = "):
            (pathlib.Path("corpus/attachment") / p.name).write_bytes(bytes.fromhex(line[7:]))
for p in (vec / "wrapped-key").glob("*_*"):
    for line in p.read_text().splitlines():
        if line.startswith("wrapped = "):
            (pathlib.Path("corpus/key_records") / p.name).write_bytes(bytes.fromhex(line[10:]))
(pathlib.Path("corpus/sync") / "put").write_bytes(b'{"idempotency_key":"k-0123456789abcdef","collection":"visits","id":"v1","op":"put","body":{"site":"north"},"base_version":0}')
PY
for target in attachment key_records sync; do
  cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=65536
done
