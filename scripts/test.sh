#!/usr/bin/env bash
# The whole test suite on real systems: a private PostgreSQL cluster and moto's S3 API, both on
# 127.0.0.1 and both stopped at the end. Installs what is missing. Extra arguments go to the
# test runner (cargo nextest run, or cargo test when nextest is not installed).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_packages --python
ensure_moto
ensure_promtool
ensure_kubernetes_validators
ensure_systemd_tools

PG_TLS=1 start_servers /tmp/housekeep-test housekeep-test

export HK_TEST_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export HK_TEST_S3_BUCKET=housekeep-test
export HK_TEST_TMP="$WORK"
export HK_TEST_PG_CA="$WORK/tls/ca.crt"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
