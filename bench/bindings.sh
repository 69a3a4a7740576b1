#!/usr/bin/env bash
# What the bindings cost per call: N put+get pairs of a 1 KiB document (default 2000) through
# the facade in Rust, through the Python bindings and through the Kotlin bindings, in one run
# on the same release library, each in a fresh vault. Prints `figure NAME VALUE UNIT` and each
# language's ratio to Rust (target: within 2x). Attachments never cross the boundary (files
# by path), so there is no byte-copy figure to take.
#   bench/bindings.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build -q --release -p fieldvault-ffi --lib --bins --example put_get
lib="$target/release/libfieldvault_ffi.so"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$target/release/examples/put_get" "$n" | tee "$work/figures"

mkdir -p "$work/py/fieldvault"
"$target/release/uniffi-bindgen" generate --no-format "$lib" --language python --out-dir "$work/py/fieldvault" >/dev/null
cp "$lib" crates/ffi/python/fieldvault/__init__.py "$work/py/fieldvault/"
PYTHONPATH="$work/py" python3 bench/bindings/put_get.py "$n" | tee -a "$work/figures"

kotlin="${FIELDVAULT_KOTLIN_HOME:-$PWD/crates/ffi/kotlin/node_modules/kotlin-compiler}"
if [ -x "$kotlin/bin/kotlinc" ] && [ -f /usr/share/java/jna.jar ]; then
  cp_="/usr/share/java/jna.jar:$kotlin/lib/kotlinx-coroutines-core-jvm.jar"
  "$target/release/uniffi-bindgen" generate --no-format "$lib" --language kotlin --out-dir "$work/kt" >/dev/null
  "$kotlin/bin/kotlinc" -nowarn "$work"/kt/fieldvault/*.kt bench/bindings/PutGet.kt -cp "$cp_" -d "$work/classes"
  java -cp "$work/classes:$cp_:$kotlin/lib/kotlin-stdlib.jar" -Djna.library.path="$target/release" PutGetKt "$n" \
    | tee -a "$work/figures"
else
  echo "bindings.sh: no Kotlin compiler or JNA (scripts/setup.sh installs them); Kotlin skipped" >&2
fi

awk '{ f[$2] = $3 } END {
  for (lang in f) if (lang != "bindings_rust_put_get_us") {
    name = lang; sub(/_put_get_us$/, "", name)
    printf "figure %s_vs_rust %.2f x\n", name, f[lang] / f["bindings_rust_put_get_us"]
  }
}' "$work/figures"
