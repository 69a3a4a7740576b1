#!/usr/bin/env bash
# Runs every test: installs what the tests need (scripts/setup.sh, the full set; once), then
# the workspace's tests. Arguments go to `cargo test` (for example a test name filter).
#
# The server's tests also run on PostgreSQL when FIELDVAULT_TEST_POSTGRES names a database
# (postgres://postgres@127.0.0.1:5432/test; each test uses a fresh schema and drops it);
# without it they say "PostgreSQL tests skipped". FIELDVAULT_REQUIRE_INTEROP=1 and
# FIELDVAULT_REQUIRE_ROOT_TESTS=1 make tests that need an installed tool fail instead of skip
# (.ci/run sets both).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo test --workspace "$@"
