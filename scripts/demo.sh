#!/usr/bin/env bash
# The demo: a private PostgreSQL (started here, data under $HOUSEKEEP_DEMO_DIR), a local-disk
# store, the schema, a seeded dataset, a summary, one pass of the housekeeping pipeline
# (worker --once) and the summary after it.
#   scripts/demo.sh          build, start, migrate, seed, summarise (a fresh dataset each time)
#   scripts/demo.sh stop     stop the demo's PostgreSQL
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

DEMO=${HOUSEKEEP_DEMO_DIR:-/var/tmp/housekeep-demo}
# The variable names this script's directory, not a housekeep setting: housekeep refuses unknown
# HOUSEKEEP_* variables, so it does not reach it.
unset HOUSEKEEP_DEMO_DIR
if [ "${1:-}" = "stop" ]; then
  stop_postgres "$DEMO/pg"
  log "stopped"
  exit 0
fi

ensure_packages
log "building housekeep (release)"
cargo build --release --quiet
HK="$ROOT/target/release/housekeep"

mkdir -p "$DEMO"
chmod 755 "$DEMO"
stop_postgres "$DEMO/pg"
PORT=$(free_port)
log "starting PostgreSQL on 127.0.0.1:$PORT (data in $DEMO/pg)"
start_postgres "$DEMO/pg" "$PORT"

"$(pg_bindir)/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
  -c "DROP DATABASE IF EXISTS housekeep_demo WITH (FORCE)" -c "CREATE DATABASE housekeep_demo"
rm -rf "$DEMO/artifacts"
mkdir -p "$DEMO/artifacts"

export HOUSEKEEP_DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/housekeep_demo"
export HOUSEKEEP_STORE_URL="file://$DEMO/artifacts"
cat >"$DEMO/env" <<ENV
export HOUSEKEEP_DATABASE_URL="$HOUSEKEEP_DATABASE_URL"
export HOUSEKEEP_STORE_URL="$HOUSEKEEP_STORE_URL"
export PATH="$ROOT/target/release:\$PATH"
ENV

log "housekeep migrate"
"$HK" migrate
log "housekeep seed"
"$HK" seed --projects 10 --artifacts 2000 --orphans 25
log "housekeep status --scan-store (before)"
"$HK" status --scan-store
log "housekeep worker --once: unlock, unknown, expire, delete-objects, stale-uploads"
HOUSEKEEP_LOG=warn "$HK" worker --once
log "housekeep status --scan-store (after)"
"$HK" status --scan-store

cat <<MSG

The demo database keeps running. To try more commands:
  source $DEMO/env
  housekeep --help
Stop it with: scripts/demo.sh stop
MSG
