#!/usr/bin/env bash
# The whole test suite on real systems: a private PostgreSQL cluster and moto's S3 API, both on
# 127.0.0.1 and both stopped at the end. Installs what is missing. Extra arguments go to the
# test runner (cargo nextest run, or cargo test when nextest is not installed).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_packages --python
ensure_moto

WORK=$(mktemp -d /tmp/housekeep-test.XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(free_port)
S3_PORT=$(free_port)
MOTO_PID=""
cleanup() {
  stop_postgres "$WORK/pg"
  [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
start_postgres "$WORK/pg" "$PG_PORT"
log "starting moto S3 on 127.0.0.1:$S3_PORT"
start_moto "$S3_PORT" "$WORK/moto.log"
create_bucket "$S3_PORT" housekeep-test

export HK_TEST_PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
export HK_TEST_S3_BUCKET=housekeep-test
export AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
export HK_TEST_TMP="$WORK"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
