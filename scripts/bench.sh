#!/usr/bin/env bash
# Benchmarks of the housekeeping pipeline (docs/BENCHMARKS.md): expire against one set-based
# statement doing the same move, unknown, delete-objects against raw deletions on local disk and
# on moto's S3 API, and the worker's peak memory. Starts a private PostgreSQL and moto in a
# temporary directory, prints a results table (Markdown) and removes everything at the end.
#
#   scripts/bench.sh                    everything, on both PostgreSQL configurations (40+ minutes)
#   BENCH_ONLY="expire unknown" scripts/bench.sh      some of: expire unknown local s3 memory
#   BENCH_PG=stock scripts/bench.sh     one configuration: tuned (fsync off, lib.sh's default) or
#                                       stock (PG_STOCK=1: Debian's defaults, fsync on); default
#                                       "tuned stock", one pass each, same data
#   BENCH_SCALE=0.1 scripts/bench.sh    every row/object count scaled (a quick check of the script)
#   HK_BIN=/path/to/housekeep scripts/bench.sh        use that binary instead of building one
#
# Sizes (before BENCH_SCALE): BENCH_EXPIRE_ROWS=1000000, BENCH_BATCH_SIZES="1000 5000 10000",
# BENCH_UNKNOWN_ROWS=10000, BENCH_LOCAL_FILES=100000, BENCH_S3_OBJECTS=20000,
# BENCH_S3_ONE_OBJECTS=2000, BENCH_S3_AUDIT_OBJECTS=20000. BENCH_ROUNDS=N (default 1) times
# every expire comparison (statement, housekeep warn, housekeep audit) N times in a row.
# BENCH_EXPIRE_MODES="warn audit" picks the housekeep runs of expire. BENCH_RESULTS=FILE also
# writes the table there; PG_OPTS adds server options (scripts/lib.sh). Every timed run is
# preceded by a CHECKPOINT and runs alone; the load column is the 1-minute load average before
# and after it. "audit" runs use the default log filter (info) in JSON with stderr redirected to a
# file, "warn" runs HOUSEKEEP_LOG=warn.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

SCALE=${BENCH_SCALE:-1}
scaled() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s); if (v < 1) v = 1; print v }'; }
EXPIRE_ROWS=$(scaled "${BENCH_EXPIRE_ROWS:-1000000}")
BATCH_SIZES=${BENCH_BATCH_SIZES:-1000 5000 10000}
EXPIRE_MODES=${BENCH_EXPIRE_MODES:-warn audit}
ROUNDS=${BENCH_ROUNDS:-1}
UNKNOWN_ROWS=$(( $(scaled "${BENCH_UNKNOWN_ROWS:-10000}") / 4 * 4 ))
LOCAL_FILES=$(scaled "${BENCH_LOCAL_FILES:-100000}")
S3_OBJECTS=$(scaled "${BENCH_S3_OBJECTS:-20000}")
S3_ONE_OBJECTS=$(scaled "${BENCH_S3_ONE_OBJECTS:-2000}")
S3_AUDIT_OBJECTS=$(scaled "${BENCH_S3_AUDIT_OBJECTS:-20000}")
ONLY=${BENCH_ONLY:-expire unknown local s3 memory}
PG_CONFIGS=${BENCH_PG:-tuned stock}
wants() { [[ " $ONLY " == *" $1 "* ]]; }
for c in $PG_CONFIGS; do
  case $c in tuned|stock) ;; *) echo "BENCH_PG: unknown configuration \"$c\" (tuned, stock)" >&2; exit 2 ;; esac
done

ensure_packages --python
ensure_moto
ensure_tools time curl

housekeep_release
PY="$ROOT/.venv/bin/python"

# The first pass's configuration starts the server; later passes restart it on the same data.
first=${PG_CONFIGS%% *}
if [ "$first" = stock ]; then export PG_STOCK=1; else export PG_STOCK=0; fi
if wants s3; then start_servers /tmp/housekeep-bench bench; else start_servers /tmp/housekeep-bench; fi
unset HOUSEKEEP_CONFIG
for v in $(env | grep -o '^HOUSEKEEP_[A-Z0-9_]*' || true); do unset "$v"; done

PG_BASE="postgres://postgres@127.0.0.1:$PG_PORT"
export PGOPTIONS="-c client_min_messages=warning"
psql_() { "$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
sql() { local db=$1; shift; psql_ -d "$db" -At "$@"; }
copy_db() { psql_ -d postgres -c "DROP DATABASE IF EXISTS $2" -c "CREATE DATABASE $2 TEMPLATE $1"; }
drop_db() { psql_ -d postgres -c "DROP DATABASE IF EXISTS $1"; }
checkpoint() { psql_ -d postgres -c CHECKPOINT; }
secs() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", n / t }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
verdict() { if "$@"; then echo pass; else echo FAIL; fi; }
load1() { cut -d' ' -f1 /proc/loadavg; }

# use_pg CONFIG: (re)start the server with that configuration, on the same data directory.
PG_CFG=""
use_pg() {
  local cfg=$1
  if [ -n "$PG_CFG" ] && [ "$PG_CFG" != "$cfg" ]; then
    stop_postgres "$WORK/pg"
    if [ "$cfg" = stock ]; then PG_STOCK=1 start_postgres "$WORK/pg" "$PG_PORT"; else PG_STOCK=0 start_postgres "$WORK/pg" "$PG_PORT"; fi
  fi
  PG_CFG=$cfg
  log "PostgreSQL $cfg: $(sql postgres -c "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
        WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'wal_buffers', 'max_wal_size', 'server_version')")"
}

RESULTS="$WORK/results.md"
: >"$RESULTS"
# result BENCHMARK WHAT VALUE LOAD TARGET VERDICT (the configuration of the pass goes in too)
result() {
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$PG_CFG" "$2" "$3" "$4" "$5" "$6" >>"$RESULTS"
  printf '    %-8s %-6s %-58s %14s  load %-10s %-8s %s\n' "$1" "$PG_CFG" "$2" "$3" "$4" "$5" "$6" >&2
}

# hk LOGMODE ENV... -- ARGS: run housekeep under /usr/bin/time; sets T (wall seconds, process
# start to exit), RSS (peak MB), OUT (its summary line), AUDIT (audit records written), LOAD.
# LOGMODE is warn (HOUSEKEEP_LOG=warn) or audit (default filter, JSON, stderr to a file).
hk() {
  local mode=$1; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  if [ "$mode" = warn ]; then envs+=(HOUSEKEEP_LOG=warn); else envs+=(HOUSEKEEP_LOG_FORMAT=json); fi
  checkpoint
  local l0 t0 rc=0
  l0=$(load1)
  t0=$EPOCHREALTIME
  env "${envs[@]}" /usr/bin/time -f '%M' -o "$WORK/time.out" "$HK" "$@" >"$WORK/hk.out" 2>"$WORK/hk.err" || rc=$?
  T=$(secs "$t0")
  LOAD="$l0–$(load1)"
  if [ $rc -ne 0 ]; then
    log "housekeep $* failed ($rc)"
    cat "$WORK/hk.out" >&2
    grep -v '"target":"housekeep::audit"' "$WORK/hk.err" | tail -n 20 >&2
    exit 1
  fi
  RSS=$(tail -n 1 "$WORK/time.out" | awk '{ printf "%.1f", $1 / 1024 }')
  OUT=$(cat "$WORK/hk.out")
  AUDIT=$(grep -c '"target":"housekeep::audit"' "$WORK/hk.err" || true)
  printf '      %s (%s, %ss wall, %s MB peak RSS, %s audit records, %s bytes of logs, load %s)\n' \
    "$OUT" "$mode" "$T" "$RSS" "$AUDIT" "$(stat -c %s "$WORK/hk.err")" "$LOAD" >&2
  rm -f "$WORK/hk.err"
}

# An empty, migrated database every dataset starts from (GitLab's tables and schema housekeep).
psql_ -d postgres -c "CREATE DATABASE schema_tpl"
HOUSEKEEP_DATABASE_URL="$PG_BASE/schema_tpl" HOUSEKEEP_LOG=warn "$HK" migrate >/dev/null
mkdir -p "$WORK/empty"

# The helper for files and S3 objects (boto3 from moto's venv).
cat >"$WORK/objs.py" <<'PY'
import os, sys, time
from concurrent.futures import ThreadPoolExecutor

def keys(path):
    with open(path) as f:
        return [l.rstrip("\n") for l in f if l.strip()]

def mkfiles(root, listfile):
    """Write a 128-byte file for each listed key under root."""
    data, made = b"x" * 128, set()
    for k in keys(listfile):
        d = os.path.dirname(k)
        if d not in made:
            os.makedirs(os.path.join(root, d), exist_ok=True)
            made.add(d)
        with open(os.path.join(root, k), "wb") as f:
            f.write(data)

def unlink(root, listfile, threads, cleanup):
    """Delete the listed files with `threads` threads; with cleanup=1 also remove the parent
    directories left empty, up to root (what object_store's LocalFileSystem cleanup does)."""
    threads, cleanup, root = int(threads), cleanup == "1", os.path.abspath(root)
    paths = [os.path.join(root, k) for k in keys(listfile)]
    def one(p):
        try:
            os.unlink(p)
        except FileNotFoundError:
            return
        d = os.path.dirname(p)
        while cleanup and d != root:
            try:
                os.rmdir(d)
            except OSError:
                break
            d = os.path.dirname(d)
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, paths, chunksize=256))
    print(f"{time.perf_counter() - t:.3f}")

def client(threads):
    import boto3, botocore.config
    return boto3.client("s3", config=botocore.config.Config(
        max_pool_connections=threads, retries={"max_attempts": 3}, s3={"addressing_style": "path"}))

def bulkdel(bucket, listfile):
    """DeleteObjects, 1,000 keys a request, one request after the other."""
    c, ks = client(1), keys(listfile)
    t = time.perf_counter()
    for i in range(0, len(ks), 1000):
        r = c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in ks[i:i + 1000]], "Quiet": True})
        if r.get("Errors"):
            sys.exit(f"bulk delete errors: {r['Errors'][:3]}")
    print(f"{time.perf_counter() - t:.3f}")

def onedel(bucket, listfile, threads):
    """DeleteObject, one key a request, `threads` requests in flight."""
    threads = int(threads)
    c, ks = client(threads), keys(listfile)
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(lambda k: c.delete_object(Bucket=bucket, Key=k), ks))
    print(f"{time.perf_counter() - t:.3f}")

def count(bucket, prefix):
    n = 0
    for page in client(1).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        n += page.get("KeyCount", 0)
    print(n)

if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
PY

# A deletion queue of :n ready objects (file_store :fs), 70% hashed keys
# (P/<date>/<job_id>/<artifact_id>/artifacts.zip), 30% @final keys, over 1,000 projects; their
# sizes in housekeep.deleted_object_state, as expire leaves them.
cat >"$WORK/gen_queue.sql" <<'SQL'
WITH q AS (
  SELECT nextval('ci_deleted_objects_id_seq') AS id, i FROM generate_series(1, :n) i
), queued AS (
  INSERT INTO ci_deleted_objects (id, file_store, pick_up_at, store_dir, file, project_id, created_at)
  SELECT id, :fs, now() - interval '1 day' + (i % 1000) * interval '1 second',
         CASE WHEN i % 10 < 7
              THEN housekeep.project_dir(1 + i % 1000) || '/2026_10_' || lpad((1 + i % 28)::text, 2, '0') || '/' || i || '/' || (i + 5000000)
              ELSE housekeep.project_dir(1 + i % 1000) || '/@final/' || substr(md5(i::text), 1, 2) || '/' || substr(md5(i::text), 3, 2) END,
         CASE WHEN i % 10 < 7 THEN 'artifacts.zip' ELSE substr(md5(i::text), 5) END,
         1 + i % 1000, now() - interval '3 days'
  FROM q
)
INSERT INTO housekeep.deleted_object_state (deleted_object_id, size) SELECT id, 128 FROM q;
VACUUM ANALYZE ci_deleted_objects;
VACUUM ANALYZE housekeep.deleted_object_state;
SQL
queue_db() { # queue_db DB N FILE_STORE
  copy_db schema_tpl "$1"
  psql_ -d "$1" -v n="$2" -v fs="$3" -f "$WORK/gen_queue.sql"
}
queue_keys() { # queue_keys DB PREFIX > list
  sql "$1" -c "COPY (SELECT '$2' || store_dir || '/' || file FROM ci_deleted_objects ORDER BY id) TO STDOUT"
}
queue_left() { # queue_left DB: rows left in the queue and in housekeep's state of it
  sql "$1" -c "SELECT (SELECT count(*) FROM ci_deleted_objects) + (SELECT count(*) FROM housekeep.deleted_object_state)"
}
# s3_put LIST: upload a 128-byte object per key (curl, 8 in flight; moto takes ~300 PUTs/s).
s3_put() {
  head -c 128 /dev/zero | tr '\0' x >"$WORK/obj.bin"
  awk -v u="$AWS_ENDPOINT_URL/bench/" -v f="$WORK/obj.bin" \
    '{ printf "upload-file = \"%s\"\nurl = \"%s%s\"\noutput = \"/dev/null\"\n", f, u, $0 }' "$1" >"$WORK/curl.cfg"
  curl -sS --no-progress-meter --fail --parallel --parallel-max 8 -K "$WORK/curl.cfg" >/dev/null
}
s3_count() { "$PY" "$WORK/objs.py" count bench "$1"; }

# ---------------------------------------------------------------------------------------------
# Datasets, generated once (on the first pass that needs them) into template databases.
# Pipelines, jobs and artifacts go in through the partitioned parents, so GitLab's triggers give
# them their ids; each pipeline's partition (100, 101, 102 in turn) is its jobs' and artifacts'.
# ---------------------------------------------------------------------------------------------

# expire_tpl: 1,000 projects in 100 namespaces; :n expirable artifacts — archive, metadata and
# junit of n/3 jobs (three jobs a pipeline), 80% remote, 30% with an @final key, 10% in the legacy
# layout, 10% with file_location NULL (hashed), expired 2 to 71 days ago, unlocked — and n/4
# expired unlocked traces, which expire never touches.
make_expire_tpl() {
  [ -z "${EXPIRE_TPL_DONE:-}" ] || return 0
  log "expire: generating $EXPIRE_ROWS expirable rows"
  copy_db schema_tpl expire_tpl
  psql_ -d expire_tpl -v n="$EXPIRE_ROWS" >/dev/null <<'SQL'
INSERT INTO projects (id, name, path, namespace_id, created_at, updated_at)
SELECT p, 'project-' || p, 'project-' || p, 1 + p % 100, now() - interval '1 year', now() - interval '1 year'
FROM generate_series(1, 1000) p;
SELECT setval('projects_id_seq', 1000);
INSERT INTO p_ci_pipelines (partition_id, project_id, ref, sha, status, source, locked, created_at, updated_at, finished_at)
SELECT 100 + k % 3, 1 + k % 1000, 'main', md5(k::text), 'success', 1, 0,
       now() - interval '41 days', now() - interval '41 days', now() - interval '41 days'
FROM generate_series(1, (:n + 8) / 9) k ORDER BY k;
INSERT INTO p_ci_builds (partition_id, project_id, commit_id, name, ref, type, status, created_at, updated_at, finished_at)
SELECT p.partition_id, p.project_id, p.id, 'job-' || s, 'main', 'Ci::Build', 'success', p.created_at, p.created_at, p.created_at
FROM p_ci_pipelines p CROSS JOIN generate_series(1, 3) s ORDER BY p.id, s;
CREATE TEMP TABLE jobs AS SELECT row_number() OVER (ORDER BY id) AS j, id, partition_id, project_id FROM p_ci_builds;
CREATE INDEX ON jobs (j);
INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, file_format, file_location, size, file_store,
                                file, file_final_path, expire_at, locked, created_at, updated_at)
SELECT b.partition_id, b.project_id, b.id, ft, 2, CASE i % 10 WHEN 3 THEN 1 WHEN 4 THEN NULL ELSE 2 END,
       100 + (i::bigint * 7919) % 65000, CASE WHEN i % 10 < 8 THEN 2 ELSE 1 END,
       CASE ft WHEN 1 THEN 'artifacts.zip' WHEN 2 THEN 'metadata.gz' ELSE 'junit.xml.gz' END,
       CASE WHEN i % 10 < 3 THEN housekeep.project_dir(b.project_id) || '/@final/' || substr(md5(i::text), 1, 2) || '/'
                                 || substr(md5(i::text), 3, 2) || '/' || substr(md5(i::text), 5) END,
       now() - interval '2 days' - (i % 100000) * interval '1 minute', 0,
       now() - interval '40 days' + (i % 100000) * interval '1 minute', now() - interval '40 days'
FROM (SELECT i, (i + 2) / 3 AS j, (ARRAY[1, 2, 4])[1 + i % 3] AS ft FROM generate_series(1, :n) i) s
JOIN jobs b USING (j) ORDER BY i;
INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, file_format, file_location, size, file_store,
                                file, expire_at, locked, created_at, updated_at)
SELECT b.partition_id, b.project_id, b.id, 3, 1, 2, 2048, 2, 'job.log', now() - interval '2 days', 0,
       now() - interval '40 days', now() - interval '40 days'
FROM jobs b WHERE b.j <= :n / 4 ORDER BY b.j;
INSERT INTO project_statistics (project_id, namespace_id, repository_size, build_artifacts_size, storage_size)
SELECT p.id, p.namespace_id, 1048576 * (1 + p.id % 50), COALESCE(t.total, 0), 1048576 * (1 + p.id % 50) + COALESCE(t.total, 0)
FROM projects p LEFT JOIN (SELECT project_id, sum(size)::bigint AS total FROM p_ci_job_artifacts GROUP BY project_id) t ON t.project_id = p.id;
VACUUM ANALYZE;
SQL
  printf '      %s\n' "$(sql expire_tpl -c "SELECT 'pipelines ' || (SELECT count(*) FROM p_ci_pipelines) || ', jobs ' || (SELECT count(*) FROM p_ci_builds)
        || ', artifacts ' || (SELECT count(*) FROM p_ci_job_artifacts) || ' (per partition ' || (SELECT string_agg(partition_id || ': ' || n, ', ' ORDER BY partition_id)
           FROM (SELECT partition_id, count(*) AS n FROM p_ci_job_artifacts GROUP BY 1) x) || '), '
        || pg_size_pretty(pg_database_size('expire_tpl'))")" >&2
  EXPIRE_TPL_DONE=1
}

# The set-based reference: move_to_queue_sql! (src/tasks/mod.rs) around expire's batch
# (src/tasks/expire.rs) without LIMIT and SKIP LOCKED, in one statement: the same delete, queue
# insert with ids from the queue's sequence, deleted_object_state insert and project_statistics
# decrement (build_artifacts_size and storage_size). The rows are counted instead of returned.
cat >"$WORK/expire_sql.sql" <<'SQL'
WITH batch AS (
  SELECT id, partition_id FROM p_ci_job_artifacts
  WHERE expire_at < now() AND locked = 0 AND file_type <> 3
  FOR UPDATE
),
del AS (
  DELETE FROM p_ci_job_artifacts a USING batch b WHERE a.id = b.id AND a.partition_id = b.partition_id
  RETURNING a.id, a.project_id, a.job_id, a.file_type, COALESCE(a.size, 0) AS size, a.file_store::smallint AS file_store, a.expire_at,
            housekeep.artifact_store_dir(a.project_id, a.created_at, a.job_id, a.id, a.file_final_path, a.file_location) AS store_dir,
            housekeep.artifact_file(a.file, a.file_final_path) AS file
),
to_queue AS (
  SELECT d.*, nextval('ci_deleted_objects_id_seq') AS object_id FROM del d WHERE d.file IS NOT NULL
),
queued AS (
  INSERT INTO ci_deleted_objects (id, file_store, pick_up_at, store_dir, file, project_id)
  SELECT object_id, file_store,
         LEAST(GREATEST(COALESCE(expire_at, now()), now() - interval '1 day'), now() + interval '1 hour'),
         store_dir, file, project_id
  FROM to_queue
  RETURNING 1
),
sizes AS (
  INSERT INTO housekeep.deleted_object_state (deleted_object_id, size)
  SELECT object_id, size FROM to_queue
  RETURNING 1
),
stats AS (
  UPDATE project_statistics s SET build_artifacts_size = s.build_artifacts_size - d.total,
                                  storage_size = s.storage_size - d.total
  FROM (SELECT project_id, sum(size) AS total FROM del GROUP BY project_id) d
  WHERE s.project_id = d.project_id
  RETURNING 1
)
SELECT count(*) FROM del;
SQL
# What a move leaves behind, to check that both sides did the same work: artifacts left, queue
# rows/bytes/distinct keys (bytes from housekeep's state of them), state rows, project totals.
expire_state() {
  sql "$1" -c "SELECT (SELECT count(*) FROM p_ci_job_artifacts),
                      (SELECT count(*) || '/' || sum(s.size) || '/' || count(DISTINCT o.store_dir || '/' || o.file)
                       FROM ci_deleted_objects o JOIN housekeep.deleted_object_state s ON s.deleted_object_id = o.id),
                      (SELECT count(*) FROM housekeep.deleted_object_state),
                      (SELECT sum(build_artifacts_size) || '/' || sum(storage_size) FROM project_statistics)"
}

# unknown_tpl: :jobs pipelines (every other one locked), one job each, four expired locked = 2
# artifacts per job (archive, metadata, trace, junit). Background: 100,000 locked = 2 rows not
# expired yet and 300,000 locked = 1 rows (pipelines and jobs of their own).
make_unknown_tpl() {
  [ -z "${UNKNOWN_TPL_DONE:-}" ] || return 0
  log "unknown: generating $UNKNOWN_ROWS expired rows of unknown lock status"
  copy_db schema_tpl unknown_tpl
  psql_ -d unknown_tpl -v jobs="$((UNKNOWN_ROWS / 4))" >/dev/null <<'SQL'
INSERT INTO projects (id, name, path, namespace_id, created_at, updated_at)
SELECT p, 'project-' || p, 'project-' || p, 1 + p % 100, now() - interval '1 year', now() - interval '1 year'
FROM generate_series(1, 1000) p;
SELECT setval('projects_id_seq', 1000);
INSERT INTO p_ci_pipelines (partition_id, project_id, ref, sha, status, source, locked, created_at, updated_at, finished_at)
SELECT 100 + i % 3, 1 + i % 1000, 'main', md5(i::text), 'success', 1, CASE WHEN i % 2 = 1 THEN 1 ELSE 0 END,
       now() - interval '50 days', now() - interval '50 days', now() - interval '50 days'
FROM generate_series(1, :jobs + 100000) i ORDER BY i;
INSERT INTO p_ci_builds (partition_id, project_id, commit_id, name, ref, type, status, created_at, updated_at, finished_at)
SELECT partition_id, project_id, id, 'build', 'main', 'Ci::Build', 'success', created_at, created_at, created_at
FROM p_ci_pipelines ORDER BY id;
INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, file_format, file_location, size, file_store,
                                file, expire_at, locked, created_at, updated_at)
SELECT b.partition_id, b.project_id, b.id, ft, 2, 2, 1000, 2, CASE ft WHEN 3 THEN 'job.log' ELSE 'artifacts.zip' END,
       CASE WHEN b.j <= :jobs THEN now() - interval '20 days' + (b.j * 4 + ft) * interval '1 second'
            ELSE now() + interval '10 days' END,
       CASE WHEN b.j <= :jobs + 25000 THEN 2 ELSE 1 END, now() - interval '50 days', now() - interval '50 days'
FROM (SELECT row_number() OVER (ORDER BY id) AS j, id, partition_id, project_id FROM p_ci_builds) b, unnest(ARRAY[1, 2, 3, 4]) ft
ORDER BY b.j, ft;
INSERT INTO project_statistics (project_id, namespace_id, repository_size, build_artifacts_size, storage_size)
SELECT p.id, p.namespace_id, 1048576, COALESCE(t.total, 0), 1048576 + COALESCE(t.total, 0)
FROM projects p LEFT JOIN (SELECT project_id, sum(size)::bigint AS total FROM p_ci_job_artifacts GROUP BY project_id) t ON t.project_id = p.id;
VACUUM ANALYZE;
SQL
  UNKNOWN_TPL_DONE=1
}

log "load before starting: $(cut -d' ' -f1-3 /proc/loadavg); housekeep $("$HK" --version 2>/dev/null || echo '?')"
BENCH_T0=$EPOCHREALTIME

# ---------------------------------------------------------------------------------------------
# 1. expire over EXPIRE_ROWS expired rows, against one set-based statement.
# ---------------------------------------------------------------------------------------------
bench_expire() {
  local B r moved want got mode R R_SQL Q T_SQL l0
  for B in $BATCH_SIZES; do
    for r in $(seq 1 "$ROUNDS"); do
      log "expire ($PG_CFG): batch size $B, round $r of $ROUNDS"
      copy_db expire_tpl expire_sql
      checkpoint
      l0=$(load1)
      t0=$EPOCHREALTIME
      moved=$(sql expire_sql -f "$WORK/expire_sql.sql")
      T_SQL=$(secs "$t0")
      LOAD="$l0–$(load1)"
      [ "$moved" = "$EXPIRE_ROWS" ] || { log "the statement moved $moved rows, not $EXPIRE_ROWS"; exit 1; }
      printf '      one statement: %s rows in %ss (load %s)\n' "$moved" "$T_SQL" "$LOAD" >&2
      want=$(expire_state expire_sql)
      drop_db expire_sql
      R_SQL=$(rate "$EXPIRE_ROWS" "$T_SQL")
      result expire "batch $B: one set-based statement" "$R_SQL rows/s" "$LOAD" "reference" "—"
      for mode in $EXPIRE_MODES; do
        copy_db expire_tpl expire_hk
        hk "$mode" HOUSEKEEP_DATABASE_URL="$PG_BASE/expire_hk" HOUSEKEEP_STORE_URL="file://$WORK/empty" \
          HOUSEKEEP_TASKS_EXPIRE_BATCH_SIZE="$B" HOUSEKEEP_TASKS_EXPIRE_TIME_BUDGET=1h -- run expire
        got=$(expire_state expire_hk)
        [ "$got" = "$want" ] || { log "housekeep left $got, the statement $want"; exit 1; }
        R=$(rate "$EXPIRE_ROWS" "$T")
        Q=$(ratio "$R" "$R_SQL")
        result expire "batch $B: housekeep run expire ($mode)" "$R rows/s" "$LOAD" "" ""
        result expire "batch $B: ratio to the statement ($mode)" "$Q" "" "≥ 0.9" "$(verdict ge "$Q" 0.9)"
        result memory "expire, $EXPIRE_ROWS rows, batch $B ($mode): peak RSS" "$RSS MB" "" "< 100 MB" "$(verdict lt "$RSS" 100)"
        if [ "$mode" = warn ] && wants memory && [ -z "$MEM_DB" ]; then
          drop_db expire_done
          psql_ -d postgres -c "ALTER DATABASE expire_hk RENAME TO expire_done"
          MEM_DB=expire_done
        else
          drop_db expire_hk
        fi
      done
    done
  done
}

# ---------------------------------------------------------------------------------------------
# 2. unknown: UNKNOWN_ROWS expired locked = 2 rows, half of them in locked pipelines.
# ---------------------------------------------------------------------------------------------
bench_unknown() {
  local mode left task_s
  for mode in warn warn warn audit; do
    copy_db unknown_tpl unknown_hk
    hk "$mode" HOUSEKEEP_DATABASE_URL="$PG_BASE/unknown_hk" HOUSEKEEP_STORE_URL="file://$WORK/empty" \
      HOUSEKEEP_TASKS_UNKNOWN_MAX_ROWS="$UNKNOWN_ROWS" -- run unknown
    left=$(sql unknown_hk -c "SELECT count(*) FROM p_ci_job_artifacts WHERE locked = 2 AND expire_at < now()")
    [ "$left" = 0 ] || { log "unknown left $left rows unresolved"; exit 1; }
    task_s=$(sed -n 's/.* in \([0-9.]*\)s.*/\1/p' <<<"$OUT")
    result unknown "housekeep run unknown, $UNKNOWN_ROWS rows ($mode): wall (task)" "${T}s (${task_s}s)" "$LOAD" "< 1 s" "$(verdict lt "$T" 1)"
    drop_db unknown_hk
  done
}

# ---------------------------------------------------------------------------------------------
# 3a. delete-objects on local disk: LOCAL_FILES files, against unlinking them.
# ---------------------------------------------------------------------------------------------
run_hk_local() { # run_hk_local MODE
  python3 "$WORK/objs.py" mkfiles "$WORK/files" "$WORK/local.keys"
  copy_db local_tpl local_hk
  hk "$1" HOUSEKEEP_DATABASE_URL="$PG_BASE/local_hk" HOUSEKEEP_STORE_URL="file://$WORK/files" \
    HOUSEKEEP_TASKS_DELETE_OBJECTS_TIME_BUDGET=1h -- run delete-objects
  left=$(find "$WORK/files" -type f | wc -l)
  [ "$left" = 0 ] && [ "$(queue_left local_hk)" = 0 ] || { log "delete-objects left $left files"; exit 1; }
  drop_db local_hk
  rm -rf "$WORK/files"
}
run_raw_local() { # run_raw_local CLEANUP -> T, LOAD
  python3 "$WORK/objs.py" mkfiles "$WORK/files" "$WORK/local.keys"
  checkpoint
  local l0
  l0=$(load1)
  T=$(python3 "$WORK/objs.py" unlink "$WORK/files" "$WORK/local.keys" 2 "$1")
  LOAD="$l0–$(load1)"
  [ "$(find "$WORK/files" -type f | wc -l)" = 0 ] || { log "files left after unlinking"; exit 1; }
  # Without cleanup the directories stay; the next run's files go into them (removing 200,000
  # directories here would take longer than the benchmark).
}
bench_local() {
  log "delete-objects ($PG_CFG, local disk): $LOCAL_FILES queued files"
  if [ -z "${LOCAL_TPL_DONE:-}" ]; then
    queue_db local_tpl "$LOCAL_FILES" 1
    queue_keys local_tpl "" >"$WORK/local.keys"
    LOCAL_TPL_DONE=1
  fi
  local dirs R_HK R_RAWC R_RAW R_HKA L_HK L_RAWC L_RAW L_HKA Q
  dirs=$(sed 's#/[^/]*$##' "$WORK/local.keys" | awk -F/ '{ p = ""; for (i = 1; i <= NF; i++) { p = p "/" $i; print p } }' | sort -u | wc -l)
  printf '      %s files in %s directories\n' "$LOCAL_FILES" "$dirs" >&2
  run_hk_local warn
  R_HK=$(rate "$LOCAL_FILES" "$T"); L_HK=$LOAD
  run_raw_local 1
  R_RAWC=$(rate "$LOCAL_FILES" "$T"); L_RAWC=$LOAD
  run_raw_local 0
  R_RAW=$(rate "$LOCAL_FILES" "$T"); L_RAW=$LOAD
  run_hk_local audit
  R_HKA=$(rate "$LOCAL_FILES" "$T"); L_HKA=$LOAD
  result local "raw unlink, 2 threads" "$R_RAW files/s" "$L_RAW" "reference" "—"
  result local "raw unlink + remove emptied parent dirs, 2 threads" "$R_RAWC files/s" "$L_RAWC" "" ""
  for m in "warn $R_HK $L_HK" "audit $R_HKA $L_HKA"; do
    set -- $m
    Q=$(ratio "$2" "$R_RAW")
    result local "housekeep run delete-objects ($1)" "$2 files/s" "$3" "" ""
    result local "ratio to raw unlink ($1)" "$Q" "" "≥ 0.5" "$(verdict ge "$Q" 0.5)"
    result local "ratio to unlink + remove emptied dirs ($1)" "$(ratio "$2" "$R_RAWC")" "" "" ""
  done
}

# ---------------------------------------------------------------------------------------------
# 3b. delete-objects on moto's S3 API, against bulk DeleteObjects and one DeleteObject per key.
# ---------------------------------------------------------------------------------------------
bench_s3() {
  local p=$PG_CFG t0 n want R_HK R_BULK R_ONE R_HKA L_HK L_BULK L_ONE L_HKA Q Q1 l0
  log "delete-objects ($PG_CFG, S3, moto): uploading $S3_OBJECTS + $S3_OBJECTS + $S3_ONE_OBJECTS + $S3_AUDIT_OBJECTS objects"
  queue_db s3_hk "$S3_OBJECTS" 2
  queue_keys s3_hk "$p/hk/" >"$WORK/s3_hk.keys"
  sed "s#^$p/hk/#$p/raw/#" "$WORK/s3_hk.keys" >"$WORK/s3_raw.keys"
  head -n "$S3_ONE_OBJECTS" "$WORK/s3_hk.keys" | sed "s#^$p/hk/#$p/one/#" >"$WORK/s3_one.keys"
  queue_db s3_audit "$S3_AUDIT_OBJECTS" 2
  queue_keys s3_audit "$p/aud/" >"$WORK/s3_audit.keys"
  t0=$EPOCHREALTIME
  cat "$WORK/s3_hk.keys" "$WORK/s3_raw.keys" "$WORK/s3_one.keys" "$WORK/s3_audit.keys" >"$WORK/s3_all.keys"
  s3_put "$WORK/s3_all.keys"
  n=$(wc -l <"$WORK/s3_all.keys")
  printf '      uploaded %s objects in %ss\n' "$n" "$(secs "$t0")" >&2
  for k in hk raw one aud; do
    want=$(grep -c "^$p/$k/" "$WORK/s3_all.keys")
    [ "$(s3_count "$p/$k/")" = "$want" ] || { log "upload under $p/$k/ incomplete"; exit 1; }
  done

  hk warn HOUSEKEEP_DATABASE_URL="$PG_BASE/s3_hk" HOUSEKEEP_STORE_URL="s3://bench/$p/hk" \
    HOUSEKEEP_TASKS_DELETE_OBJECTS_TIME_BUDGET=1h -- run delete-objects
  [ "$(s3_count "$p/hk/")" = 0 ] && [ "$(queue_left s3_hk)" = 0 ] || { log "delete-objects left objects"; exit 1; }
  R_HK=$(rate "$S3_OBJECTS" "$T"); L_HK=$LOAD
  checkpoint
  l0=$(load1)
  T=$("$PY" "$WORK/objs.py" bulkdel bench "$WORK/s3_raw.keys")
  L_BULK="$l0–$(load1)"
  [ "$(s3_count "$p/raw/")" = 0 ] || { log "bulk delete left objects"; exit 1; }
  R_BULK=$(rate "$S3_OBJECTS" "$T")
  l0=$(load1)
  T=$("$PY" "$WORK/objs.py" onedel bench "$WORK/s3_one.keys" 20)
  L_ONE="$l0–$(load1)"
  [ "$(s3_count "$p/one/")" = 0 ] || { log "single deletes left objects"; exit 1; }
  R_ONE=$(rate "$S3_ONE_OBJECTS" "$T")
  hk audit HOUSEKEEP_DATABASE_URL="$PG_BASE/s3_audit" HOUSEKEEP_STORE_URL="s3://bench/$p/aud" \
    HOUSEKEEP_TASKS_DELETE_OBJECTS_TIME_BUDGET=1h -- run delete-objects
  [ "$(s3_count "$p/aud/")" = 0 ] && [ "$(queue_left s3_audit)" = 0 ] || { log "delete-objects left objects"; exit 1; }
  R_HKA=$(rate "$S3_AUDIT_OBJECTS" "$T"); L_HKA=$LOAD
  drop_db s3_hk
  drop_db s3_audit

  result s3 "raw DeleteObjects, 1,000 keys/request, sequential ($S3_OBJECTS)" "$R_BULK objects/s" "$L_BULK" "reference" "—"
  result s3 "raw DeleteObject, 1 key/request, 20 in flight ($S3_ONE_OBJECTS)" "$R_ONE objects/s" "$L_ONE" "reference" "—"
  for m in "warn $R_HK $S3_OBJECTS $L_HK" "audit $R_HKA $S3_AUDIT_OBJECTS $L_HKA"; do
    set -- $m
    Q=$(ratio "$2" "$R_BULK")
    Q1=$(ratio "$2" "$R_ONE")
    result s3 "housekeep run delete-objects ($1, $3)" "$2 objects/s" "$4" "" ""
    result s3 "ratio to raw bulk ($1)" "$Q" "" "≥ 0.9" "$(verdict ge "$Q" 0.9)"
    result s3 "ratio to one per request ($1)" "$Q1" "" "≥ 10" "$(verdict ge "$Q1" 10)"
  done
}

# ---------------------------------------------------------------------------------------------
# 4. Memory: delete-objects over the EXPIRE_ROWS rows expire queued (objects absent, local disk).
# ---------------------------------------------------------------------------------------------
bench_memory() {
  local mode
  if [ -z "$MEM_DB" ]; then
    log "memory: moving $EXPIRE_ROWS rows to the queue"
    copy_db expire_tpl expire_done
    sql expire_done -f "$WORK/expire_sql.sql" >/dev/null
    MEM_DB=expire_done
  fi
  for mode in warn audit; do
    log "memory ($PG_CFG): delete-objects over $EXPIRE_ROWS queued rows ($mode)"
    copy_db "$MEM_DB" mem_hk
    sql mem_hk -c "VACUUM ANALYZE"
    hk "$mode" HOUSEKEEP_DATABASE_URL="$PG_BASE/mem_hk" HOUSEKEEP_STORE_URL="file://$WORK/empty" \
      HOUSEKEEP_TASKS_DELETE_OBJECTS_TIME_BUDGET=1h -- run delete-objects
    [ "$(queue_left mem_hk)" = 0 ] || { log "rows left in the queue"; exit 1; }
    result memory "delete-objects, $EXPIRE_ROWS rows ($mode): peak RSS" "$RSS MB" "$LOAD" "< 100 MB" "$(verdict lt "$RSS" 100)"
    result memory "delete-objects, $EXPIRE_ROWS absent objects ($mode): rate" "$(rate "$EXPIRE_ROWS" "$T") rows/s" "$LOAD" "" ""
    drop_db mem_hk
  done
  drop_db expire_done
}

for cfg in $PG_CONFIGS; do
  use_pg "$cfg"
  MEM_DB=""
  if wants expire || wants memory; then make_expire_tpl; fi
  if wants expire; then bench_expire; fi
  if wants unknown; then make_unknown_tpl; bench_unknown; fi
  if wants local; then bench_local; fi
  if wants s3; then bench_s3; fi
  if wants memory; then bench_memory; fi
done

log "done in $(secs "$BENCH_T0")s (load now: $(cut -d' ' -f1-3 /proc/loadavg))"
{
  echo "| benchmark | pg | what | result | load | target | verdict |"
  echo "|---|---|---|---|---|---|---|"
  cat "$RESULTS"
} | tee ${BENCH_RESULTS:+"$BENCH_RESULTS"}
