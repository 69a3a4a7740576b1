#!/usr/bin/env bash
# Installs what Fieldvault needs on Debian or Ubuntu, beyond the Rust toolchain itself.
# Idempotent: installs only what is missing, so running it again does nothing.
#
#   scripts/setup.sh --core   only what building and running need (scripts/demo.sh)
#   scripts/setup.sh          that, plus what the tests and CI need (scripts/test.sh, .ci/run)
#
# Building and running (--core):
#   gcc, libc6-dev, make       C code in aws-lc-sys (crypto) and libdbus-sys
#   pkg-config, libdbus-1-dev  the Linux OS keystore (Secret Service over D-Bus)
#   libssl-dev                 SQLCipher's crypto (libsqlite3-sys bundled-sqlcipher)
# Testing (the full set adds):
#   sqlite3                    the test that plain SQLite cannot open a vault database
#   python3 + pip              an independent check of the format test vectors (cryptography,
#                              blake3), and the SQLCipher interop test (sqlcipher3-binary)
#   rustfmt, clippy            CI's format and lint steps
#   nodejs + npm               the OpenID provider the server's sign-in tests run against
#                              (oidc-provider, pinned in crates/server/tests/oidc; node 20.18+),
#                              Debian's packages only when no `node` is on the PATH
#   age                        the export tests decrypt exports with the age tool
#   chromium                   the admin console's browser tests, driven by playwright-core
#                              (npm, pinned in crates/server/tests/console)
#   python3-venv + sslyze      the TLS scan against Mozilla's intermediate profile (sslyze from
#                              PyPI, pinned, in its own virtual environment)
#   pytest, maturin (pip)      the SDK's Python bindings: their suite, and the package build
#                              (`pip install ./crates/ffi`)
#   libjna-java, a JRE,        the SDK's Kotlin bindings: JNA loads the library; the Kotlin
#   kotlin-compiler (npm)      compiler (pinned in crates/ffi/kotlin, with kotlinx-coroutines)
set -euo pipefail

core=0
case "${1:-}" in
  --core) core=1 ;;
  "") ;;
  -h | --help)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "setup: unknown option $1 (use --core, or nothing for the full set)" >&2
    exit 2
    ;;
esac

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install the Rust toolchain (https://rustup.rs) first" >&2
  exit 1
fi

packages=(gcc libc6-dev make pkg-config libdbus-1-dev libssl-dev)
# age: the export tests decrypt exports with the age command-line tool (docs/formats/export.md).
((core)) || packages+=(sqlite3 python3 python3-pip python3-venv age chromium libjna-java)
# The Kotlin compiler and the Kotlin suite run on a JVM: Debian's, unless one is on the PATH.
((core)) || command -v java >/dev/null || packages+=(default-jre-headless)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=0
apt_install() {
  if ((!apt_updated)); then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt_install "${missing[@]}"
fi

if ((core)); then
  echo "setup: ok (core: build and run)"
  exit 0
fi

# pyca/cryptography checks the format test vectors independently of the Rust code.
if ! python3 -c "import cryptography" 2>/dev/null; then
  echo "setup: installing python cryptography"
  # Debian's own python3 refuses pip installs (PEP 668); its packaged module is the same library.
  python3 -m pip install --quiet --disable-pip-version-check cryptography 2>/dev/null \
    || apt_install python3-cryptography
  python3 -c "import cryptography" || { echo "setup: could not install python cryptography" >&2; exit 1; }
fi

# sqlcipher3-binary (SQLCipher 4.12) proves the vault database opens in another SQLCipher 4
# client. No Debian package ships it: pip, user-wide, overriding PEP 668 only if pip must.
if ! python3 -c "import sqlcipher3" 2>/dev/null; then
  echo "setup: installing python sqlcipher3-binary"
  python3 -m pip install --quiet --disable-pip-version-check sqlcipher3-binary 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages sqlcipher3-binary
  python3 -c "import sqlcipher3" || { echo "setup: could not install sqlcipher3-binary" >&2; exit 1; }
fi

# blake3 lets the attachment vectors be re-checked independently of the Rust code.
if ! python3 -c "import blake3" 2>/dev/null; then
  echo "setup: installing python blake3"
  python3 -m pip install --quiet --disable-pip-version-check blake3 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages blake3
  python3 -c "import blake3" || { echo "setup: could not install blake3" >&2; exit 1; }
fi

# sslyze checks the server's TLS configuration against Mozilla's "intermediate" profile
# (crates/server/tests/it/tls_scan.rs), in a virtual environment of its own so that its pinned
# dependencies stay apart from the system's.
sslyze_venv="${FIELDVAULT_SSLYZE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fieldvault/sslyze}"
if ! "$sslyze_venv/bin/sslyze" --help >/dev/null 2>&1; then
  echo "setup: installing sslyze 6.3.1 (into $sslyze_venv)"
  rm -rf "$sslyze_venv"
  python3 -m venv "$sslyze_venv"
  "$sslyze_venv/bin/pip" install --quiet --disable-pip-version-check sslyze==6.3.1
  "$sslyze_venv/bin/sslyze" --help >/dev/null || { echo "setup: could not install sslyze" >&2; exit 1; }
fi

# The SDK's Python bindings (crates/ffi): pytest runs their suite; maturin builds the
# `fieldvault` package (`pip install ./crates/ffi`). Pinned; user-wide if pip must.
for req in pytest:pytest maturin:maturin==1.16.0; do
  module="${req%%:*}"
  if ! python3 -c "import $module" 2>/dev/null; then
    echo "setup: installing python ${req#*:}"
    python3 -m pip install --quiet --disable-pip-version-check "${req#*:}" 2>/dev/null \
      || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "${req#*:}"
    python3 -c "import $module" || { echo "setup: could not install ${req#*:}" >&2; exit 1; }
  fi
done

# A real OpenID provider for the server's sign-in tests (crates/server/tests/oidc): oidc-provider
# from the npm registry, exactly as package-lock.json pins it. Installed again only when the
# lock file is newer than the last install (npm writes node_modules/.package-lock.json).
command -v node >/dev/null || { echo "setup: installing nodejs npm"; apt_install nodejs npm; }
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 18) ? 0 : 1)' || {
  echo "setup: node $(node --version) is too old for the OpenID provider tests (oidc-provider 9 needs 20.18 or later)" >&2
  exit 1
}
oidc_dir="$(dirname "$0")/../crates/server/tests/oidc"
if [ "$oidc_dir/package-lock.json" -nt "$oidc_dir/node_modules/.package-lock.json" ]; then
  echo "setup: installing the test OpenID provider (npm ci in crates/server/tests/oidc)"
  (cd "$oidc_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# The admin console's browser tests (crates/server/tests/console): playwright-core from the npm
# registry drives Debian's chromium (installed above); never a downloaded browser build.
console_dir="$(dirname "$0")/../crates/server/tests/console"
if [ "$console_dir/package-lock.json" -nt "$console_dir/node_modules/.package-lock.json" ]; then
  echo "setup: installing playwright-core for the console's browser tests (npm ci in crates/server/tests/console)"
  (cd "$console_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# The Kotlin compiler for the SDK's Kotlin suite (crates/ffi/kotlin): npm's kotlin-compiler,
# exactly as package-lock.json pins it; it ships kotlinx-coroutines-core-jvm.jar.
kotlin_dir="$(dirname "$0")/../crates/ffi/kotlin"
if [ "$kotlin_dir/package-lock.json" -nt "$kotlin_dir/node_modules/.package-lock.json" ]; then
  echo "setup: installing the Kotlin compiler (npm ci in crates/ffi/kotlin)"
  (cd "$kotlin_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done
echo "setup: ok (full: build, run and test)"
