#!/usr/bin/env bash
# Builds the Fieldvault library and its Kotlin bindings, compiles FieldNotes.kt (once; again
# when a source changes) and runs it with the arguments given. Needs what scripts/setup.sh
# installs: the Kotlin compiler (crates/ffi/kotlin), Debian's JNA and a JRE.
#   examples/kotlin/run.sh --vault DIR login --server URL --user NAME --pin PIN
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
kotlin="${FIELDVAULT_KOTLIN_HOME:-$root/crates/ffi/kotlin/node_modules/kotlin-compiler}"
jna=/usr/share/java/jna.jar
[ -x "$kotlin/bin/kotlinc" ] || { echo "run.sh: no Kotlin compiler at $kotlin (run scripts/setup.sh)" >&2; exit 1; }
[ -f "$jna" ] || { echo "run.sh: no JNA at $jna (run scripts/setup.sh)" >&2; exit 1; }

target="${CARGO_TARGET_DIR:-$root/target}"
(cd "$root" && cargo build -q -p fieldvault-ffi)
lib="$target/debug/libfieldvault_ffi.so"
out="$target/examples-kotlin"
if [ ! -f "$out/FieldNotesKt.class" ] || [ "$lib" -nt "$out/FieldNotesKt.class" ] || [ "$0" -nt "$out/FieldNotesKt.class" ] \
  || [ "$root/examples/kotlin/FieldNotes.kt" -nt "$out/FieldNotesKt.class" ]; then
  rm -rf "$out" && mkdir -p "$out/generated"
  "$target/debug/uniffi-bindgen" generate --no-format "$lib" --language kotlin --out-dir "$out/generated" >/dev/null
  "$kotlin/bin/kotlinc" -nowarn "$out"/generated/fieldvault/*.kt "$root/examples/kotlin/FieldNotes.kt" \
    -cp "$jna:$kotlin/lib/kotlinx-coroutines-core-jvm.jar" -d "$out"
  [ -f "$out/FieldNotesKt.class" ] || { echo "run.sh: kotlinc failed" >&2; exit 1; }
fi
exec java -cp "$out:$jna:$kotlin/lib/kotlinx-coroutines-core-jvm.jar:$kotlin/lib/kotlin-stdlib.jar" \
  -Djna.library.path="$target/debug" FieldNotesKt "$@"
