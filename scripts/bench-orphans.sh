#!/usr/bin/env bash
# Benchmarks of list-orphans (docs/BENCHMARKS.md): throughput against a bare listing of the same
# store, and peak memory at two sizes. Starts its own PostgreSQL and moto; cleans up at the end.
#   scripts/bench-orphans.sh [LOCAL_OBJECTS [S3_OBJECTS]]     (defaults 1000000 200000; 0 skips S3)
#   HK_BIN=/path/to/housekeep scripts/bench-orphans.sh          that binary instead of building one
#   PG_STOCK=1 scripts/bench-orphans.sh                         PostgreSQL with Debian's defaults
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
LOCAL_N=${1:-1000000}
S3_N=${2:-200000}

ensure_packages --python
command -v /usr/bin/time >/dev/null || { $SUDO apt-get update -qq; $SUDO apt-get install -y -qq time >/dev/null; }
ensure_moto
housekeep_release

start_servers /var/tmp/housekeep-bench bench
export HOUSEKEEP_LOG=warn
PSQL=("$(pg_bindir)/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres)

# setup DB N: a database with N @final keys (1,000 projects), half of them referenced by archive
# rows of their own jobs (five jobs a pipeline, pipelines over partitions 100, 101 and 102);
# writes the key list to $WORK/keys-N.txt.
setup_db() {
  local db=$1 n=$2
  "${PSQL[@]}" -d postgres -c "CREATE DATABASE $db"
  HOUSEKEEP_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$db" "$HK" migrate >/dev/null
  "${PSQL[@]}" -v ON_ERROR_STOP=1 -d "$db" <<SQL
CREATE TABLE bench_keys AS
  SELECT i, i % 1000 + 1 AS project_id,
         housekeep.project_dir(i % 1000 + 1) || '/@final/' || substr(u, 1, 2) || '/' || substr(u, 3, 2) || '/' || substr(u, 5) AS k
  FROM (SELECT i, encode(sha256(('upload-' || i)::bytea), 'hex') AS u FROM generate_series(1, $n) i) s;
INSERT INTO projects (id, name, path, namespace_id, created_at, updated_at)
  SELECT p, 'project-' || p, 'project-' || p, 1 + p % 100, now(), now() FROM generate_series(1, 1000) p;
INSERT INTO p_ci_pipelines (partition_id, project_id, ref, status, locked, created_at, updated_at)
  SELECT 100 + k % 3, 1 + k % 1000, 'main', 'success', 0, now(), now() FROM generate_series(1, ($n / 2 + 4) / 5) k ORDER BY k;
INSERT INTO p_ci_builds (partition_id, project_id, commit_id, name, type, status, created_at, updated_at)
  SELECT p.partition_id, p.project_id, p.id, 'job-' || s, 'Ci::Build', 'success', now(), now()
  FROM p_ci_pipelines p CROSS JOIN generate_series(1, 5) s ORDER BY p.id, s;
INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, file_store, file, file_final_path, size,
                                created_at, updated_at)
  SELECT b.partition_id, k.project_id, b.id, 1, 2, 'artifacts.zip', k.k, 16, now(), now()
  FROM (SELECT row_number() OVER (ORDER BY i) AS j, project_id, k FROM bench_keys WHERE i % 2 = 0) k
  JOIN (SELECT row_number() OVER (ORDER BY id) AS j, id, partition_id FROM p_ci_builds) b USING (j);
VACUUM ANALYZE;
\copy (SELECT k FROM bench_keys ORDER BY i) TO '$WORK/keys-$db.txt'
SQL
}

# rate LABEL SECONDS N
rate() { python3 -c "import sys; print(f'{int(sys.argv[2])/float(sys.argv[1]):.0f}')" "$1" "$2"; }

results=()
bench_local() {
  local n=$1 db="local$1" dir="$WORK/store-local-$1"
  log "local disk: $n @final objects"
  setup_db "$db" "$n"
  mkdir -p "$dir"
  python3 - "$dir" "$WORK/keys-$db.txt" <<'PY'
import os, sys
root, keys = sys.argv[1], sys.argv[2]
old = 1_600_000_000
for line in open(keys):
    p = os.path.join(root, line.strip())
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f: f.write(b"0123456789abcdef")
    os.utime(p, (old, old))
PY
  sync
  # Bare listing: every file with its size (warm cache for both, listing first once).
  find "$dir" -type f -printf '%s\n' >/dev/null
  local t0 t1 bare ours
  t0=$(date +%s.%N); find "$dir" -type f -printf '%p %s\n' | wc -l >/dev/null; t1=$(date +%s.%N)
  /usr/bin/time -f "find: user %U s, system %S s" find "$dir" -type f -printf '%p %s\n' >/dev/null
  bare=$(python3 -c "print($t1-$t0)")
  /usr/bin/time -v -o "$WORK/time-$db.txt" env HOUSEKEEP_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$db" \
    HOUSEKEEP_STORE_URL="file://$dir" "$HK" list-orphans --min-age 1h --filename "$WORK/orphans-$db.csv" >/dev/null
  ours=$(awk -F': ' '/Elapsed/ {split($2,a,":"); s=0; for(i=1;i<=length(a);i++) s=s*60+a[i]; print s}' "$WORK/time-$db.txt")
  local rss lines
  rss=$(awk -F': ' '/Maximum resident/ {print int($2/1024)}' "$WORK/time-$db.txt")
  lines=$(wc -l <"$WORK/orphans-$db.csv")
  echo "local | $n | bare $bare s | ours $ours s | $rss MB | $(grep -E 'User time|System time|Percent of CPU' "$WORK/time-$db.txt" | tr -s ' \t\n' ' ')" >&2
  results+=("local | $n | $(rate "$bare" "$n") | $(rate "$ours" "$n") | $(python3 -c "print(f'{$bare/$ours:.2f}')") | $rss MB | $lines")
  rm -rf "$dir"
}

bench_s3() {
  local n=$1 db="s3$1" prefix="bench$1"
  log "S3 (moto): $n @final objects"
  setup_db "$db" "$n"
  "$ROOT/.venv/bin/python" - "$prefix" "$WORK/keys-$db.txt" <<'PY'
import sys, boto3, concurrent.futures as cf
prefix, keys = sys.argv[1], [l.strip() for l in open(sys.argv[2])]
s3 = boto3.client("s3")
def put(k): s3.put_object(Bucket="bench", Key=f"{prefix}/{k}", Body=b"0123456789abcdef")
with cf.ThreadPoolExecutor(32) as ex: list(ex.map(put, keys))
PY
  local t0 t1 bare ours
  t0=$(date +%s.%N)
  "$ROOT/.venv/bin/python" - "$prefix" <<'PY'
import sys, boto3
n = 0
for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=sys.argv[1] + "/"):
    n += len(page.get("Contents", []))
print(n, file=sys.stderr)
PY
  t1=$(date +%s.%N)
  bare=$(python3 -c "print($t1-$t0)")
  /usr/bin/time -v -o "$WORK/time-$db.txt" env HOUSEKEEP_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/$db" \
    HOUSEKEEP_STORE_URL="s3://bench/$prefix" "$HK" list-orphans --min-age 0s --filename "$WORK/orphans-$db.csv" >/dev/null
  ours=$(awk -F': ' '/Elapsed/ {split($2,a,":"); s=0; for(i=1;i<=length(a);i++) s=s*60+a[i]; print s}' "$WORK/time-$db.txt")
  local rss lines
  rss=$(awk -F': ' '/Maximum resident/ {print int($2/1024)}' "$WORK/time-$db.txt")
  lines=$(wc -l <"$WORK/orphans-$db.csv")
  results+=("S3 (moto) | $n | $(rate "$bare" "$n") | $(rate "$ours" "$n") | $(python3 -c "print(f'{$bare/$ours:.2f}')") | $rss MB | $lines")
}

bench_local 100000
bench_local "$LOCAL_N"
[ "$S3_N" -gt 0 ] && bench_s3 "$S3_N"

echo
echo "| store | objects | bare listing (objects/s) | list-orphans (objects/s) | ratio | peak RSS | orphans listed |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${results[@]}"
