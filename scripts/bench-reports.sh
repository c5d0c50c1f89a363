#!/usr/bin/env bash
# Benchmark of `housekeep report` and `housekeep explain` (docs/BENCHMARKS.md): each report on N
# artifact rows (default 10,000,000), timed as a user runs it (the whole command: start,
# connect, query, print), then run once more with auto_explain, which logs the
# EXPLAIN (ANALYZE, BUFFERS) of exactly the statements housekeep sent. Starts its own
# PostgreSQL; removes it at the end. Building the dataset takes several minutes.
#   scripts/bench-reports.sh [N]                       (default 10000000)
#   HK_BIN=/path/to/housekeep scripts/bench-reports.sh  that binary instead of building one
#   BENCH_RESULTS=/tmp/reports.md scripts/bench-reports.sh   also write the results there
#
# Data: `housekeep seed --no-objects` with N - N/10 artifacts over 1,000 projects (pipelines
# over 60 days and partitions 100, 101, 102; expired, future and NULL expiries; unknown locks on
# old rows), plus one project of N/10 artifacts (`big/monorepo`), the worst case of the
# per-project reports. The schema is GitLab's (sql/gitlab), indexes included.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
N=${1:-10000000}
BIG=$((N / 10))
RUNS=3

ensure_packages
housekeep_release

# auto_explain is loaded but off (log_min_duration -1, its default) while timing; switched on
# afterwards with ALTER SYSTEM (a -c option would override it).
export PG_OPTS="-c shared_preload_libraries=auto_explain \
  -c auto_explain.log_analyze=on -c auto_explain.log_buffers=on -c auto_explain.log_timing=on \
  -c auto_explain.log_nested_statements=off -c log_line_prefix=%m:"
start_servers /var/tmp/housekeep-bench-reports
PSQL=("$(pg_bindir)/psql" -q -X -h 127.0.0.1 -p "$PG_PORT" -U postgres)
export HOUSEKEEP_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/reports"
export HOUSEKEEP_LOG=warn

"${PSQL[@]}" -d postgres -c "CREATE DATABASE reports"
"$HK" migrate >/dev/null
log "seeding $((N - BIG)) artifacts over 1,000 projects"
t0=$(date +%s)
"$HK" seed --no-objects --artifacts $((N - BIG)) --projects 1000
log "adding big/monorepo with $BIG artifacts"
"${PSQL[@]}" -v ON_ERROR_STOP=1 -d reports -v n="$BIG" <<'SQL'
INSERT INTO projects (id, name, path, namespace_id, created_at, updated_at)
  VALUES (100000, 'monorepo', 'monorepo', 1, now(), now());
INSERT INTO routes (source_id, source_type, path, name, namespace_id) VALUES (100000, 'Project', 'big/monorepo', 'monorepo', 1);
INSERT INTO project_statistics (project_id, namespace_id) VALUES (100000, 1);
INSERT INTO p_ci_pipelines (partition_id, project_id, ref, sha, status, source, locked, created_at, updated_at, finished_at)
SELECT 100 + k % 3, 100000, 'main', md5(k::text), 'success', 1, 0,
       now() - (k % 60) * interval '1 day', now() - (k % 60) * interval '1 day', now() - (k % 60) * interval '1 day'
FROM generate_series(1, (:n + 8) / 9) k ORDER BY k;
INSERT INTO p_ci_builds (partition_id, project_id, commit_id, name, ref, type, status, created_at, updated_at, finished_at)
SELECT p.partition_id, p.project_id, p.id, 'job-' || s, 'main', 'Ci::Build', 'success', p.created_at, p.created_at, p.created_at
FROM p_ci_pipelines p CROSS JOIN generate_series(1, 3) s WHERE p.project_id = 100000 ORDER BY p.id, s;
CREATE TEMP TABLE jobs AS
  SELECT row_number() OVER (ORDER BY id) AS j, id, partition_id, created_at FROM p_ci_builds WHERE project_id = 100000;
CREATE INDEX ON jobs (j);
INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, file_format, file_location, size, file_store,
                                file, expire_at, locked, created_at, updated_at)
SELECT b.partition_id, 100000, b.id, ft, 2, 2, 100 + (i::bigint * 7919) % 10000000, 2,
       CASE ft WHEN 1 THEN 'artifacts.zip' WHEN 2 THEN 'metadata.gz' ELSE 'junit.xml.gz' END,
       CASE WHEN i % 10 = 0 THEN NULL ELSE b.created_at AT TIME ZONE 'UTC' + interval '30 days' END,
       CASE WHEN i % 7 = 0 THEN 2 ELSE 0 END, b.created_at AT TIME ZONE 'UTC', b.created_at AT TIME ZONE 'UTC'
FROM (SELECT i, (i + 2) / 3 AS j, (ARRAY[1, 2, 4])[1 + i % 3] AS ft FROM generate_series(1, :n) i) s
JOIN jobs b USING (j) ORDER BY i;
UPDATE project_statistics SET build_artifacts_size = (SELECT sum(size) FROM p_ci_job_artifacts WHERE project_id = 100000)
  WHERE project_id = 100000;
VACUUM ANALYZE;
SQL
build_s=$(( $(date +%s) - t0 ))
rows=$("${PSQL[@]}" -At -d reports -c "SELECT count(*) FROM p_ci_job_artifacts")
size=$("${PSQL[@]}" -At -d reports -c "SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'p_ci_job_artifacts'::regclass")
log "dataset: $rows artifact rows ($size with indexes), built in ${build_s}s"

# A project of the seed's typical size, and a job with an archive for explain.
typical_id=$("${PSQL[@]}" -At -d reports -c "SELECT source_id FROM routes WHERE source_type = 'Project' ORDER BY source_id LIMIT 1 OFFSET 499")
typical=$("${PSQL[@]}" -At -d reports -c "SELECT path FROM routes WHERE source_type = 'Project' AND source_id = $typical_id")
job=$("${PSQL[@]}" -At -d reports -c "SELECT job_id FROM p_ci_job_artifacts WHERE project_id = $typical_id AND file_type = 1 ORDER BY id DESC LIMIT 1")
typical_rows=$("${PSQL[@]}" -At -d reports -c "SELECT count(*) FROM p_ci_job_artifacts WHERE project_id = $typical_id")

REPORTS=(
  "report never-expiring"
  "report expiring-after 7d"
  "report expiring-after 1y"
  "report top-projects"
  "report unknown"
  "report largest --project $typical"
  "report largest --project big/monorepo"
  "report artifacts --project $typical"
  "report artifacts --project big/monorepo"
  "explain --job $job"
)

# best-of wall time of one command, in seconds
wall() {
  local best="" t0 t1 d
  for _ in $(seq 1 $RUNS); do
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$HK" $1 --format json >/dev/null
    t1=$(date +%s.%N)
    d=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
    if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $d < $best else 1)"; then best=$d; fi
  done
  echo "$best"
}

# time_table COMMAND…: a table of the rows each command returns and its best wall time
time_table() {
  echo "| command | rows returned | wall time, best of $RUNS (s) | target |"
  echo "|---|---|---|---|"
  local r n
  for r in "$@"; do
    log "timing: housekeep $r"
    # shellcheck disable=SC2086
    n=$("$HK" $r --format json | python3 -c "import json, sys; d = json.load(sys.stdin); print(len(d) if isinstance(d, list) else 1)")
    echo "| \`housekeep $r\` | $n | $(wall "$r") | < 2 |"
  done
}

out=$(mktemp)
time_table "${REPORTS[@]}" >"$out"

# The plans: auto_explain on for every statement, each command run once more.
"${PSQL[@]}" -d postgres -c "ALTER SYSTEM SET auto_explain.log_min_duration = 0" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
plans=$(mktemp)
# explain_one COMMAND TITLE: run COMMAND once and append the plans auto_explain logged for it
explain_one() {
  local r=$1 title=$2 from
  from=$(wc -c <"$WORK/pg/server.log")
  # shellcheck disable=SC2086
  "$HK" $r --format json >/dev/null
  sleep 0.5
  {
    echo
    echo "### $title"
    echo
    echo '```'
    # The plans of the statements on the artifacts and statistics tables (not the schema and
    # project look-ups), without the log prefix.
    tail -c +"$((from + 1))" "$WORK/pg/server.log" | python3 -c '
import re, sys
blocks = re.split(r"^\S+ \S+ \S+:LOG:  ", sys.stdin.read(), flags=re.M)
for b in blocks:
    if b.startswith("duration") and re.search(r"p_ci_job_artifacts|project_statistics|p_ci_builds", b) and "to_regclass" not in b:
        lines = b.rstrip().split("\n")
        # The query text is in the source; keep the duration line and the plan.
        plan = next((i for i, l in enumerate(lines) if re.match(r"^\t\S.*\(cost=", l)), 1)
        print("\n".join([lines[0]] + [l[1:] for l in lines[plan:]]))
        print()
'
    echo '```'
  } >>"$plans"
}
for r in "${REPORTS[@]}"; do
  explain_one "$r" "housekeep $r"
done

# GitLab 18.0 schedules the removal of the full (expire_at, job_id) index (issue 532779): the
# expiry reports again without it, timed and explained.
NOIDX=("report never-expiring" "report expiring-after 7d" "report expiring-after 1y")
"${PSQL[@]}" -d reports -c "DROP INDEX p_ci_job_artifacts_expire_at_job_id_idx"
"${PSQL[@]}" -d postgres -c "ALTER SYSTEM RESET auto_explain.log_min_duration" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
{
  echo
  echo "Without \`p_ci_job_artifacts_expire_at_job_id_idx (expire_at, job_id)\`:"
  echo
  time_table "${NOIDX[@]}"
} >>"$out"
"${PSQL[@]}" -d postgres -c "ALTER SYSTEM SET auto_explain.log_min_duration = 0" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
for r in "${NOIDX[@]}"; do
  explain_one "$r" "housekeep $r, without the (expire_at, job_id) index"
done

load=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "Dataset: $rows artifact rows ($size with indexes), built in ${build_s}s; typical project $typical ($typical_rows rows), big/monorepo ($BIG rows); load average after the run: $load."
  echo
  cat "$out"
  echo
  echo "## Plans (auto_explain: EXPLAIN (ANALYZE, BUFFERS) of the statements housekeep sent)"
  cat "$plans"
} | tee "${BENCH_RESULTS:-/dev/null}"
