#!/usr/bin/env bash
# Benchmark of the Job Artifacts API's downloads from the local store (docs/BENCHMARKS.md):
# the worker's GET …/jobs/:id/artifacts and GET …/jobs/:id/artifacts/*path, timed with curl on
# loopback, against reading the same bytes directly (dd of the archive; unzip -p and Python's
# zipfile for the entry).
# Starts its own PostgreSQL and worker; removes both and the data at the end.
#   scripts/bench-api.sh
#   HK_BIN=/path/to/housekeep scripts/bench-api.sh      that binary instead of building one
#   BENCH_RESULTS=/tmp/api.md scripts/bench-api.sh      also write the results there
#   BENCH_SIZE=1073741824        bytes of the archive downloaded whole (random data; default 1 GiB)
#   BENCH_ENTRY_SIZE=268435456   bytes of each of the two zip entries (default 256 MiB)
#   BENCH_ROUNDS=3 (or ROUNDS)   timings of each download; the table gives the median
#   BENCH_CONCURRENCY=8          clients downloading the archive at once
#
# Data: one project (route, statistics and CI settings rows), a successful pipeline on main
# and two jobs, each with an archive row (file_type 1, file_store 1, never expiring) whose object
# is in a local store (`local_store_url = file://…`): job 1's is BENCH_SIZE random bytes, job 2's
# a real zip made by Python's zipfile with `big.bin` (random bytes, stored) and `big.log`
# (generated build-log lines, deflated at level 6). A reporter's token from `housekeep token
# create`. The worker runs with every scheduled task disabled.
#
# Each measurement runs BENCH_ROUNDS times, the reference and housekeep alternating, after one
# untimed read of every file (the page cache is warm, so neither side touches the disk):
#   archive, 1 client:  dd bs=1M of the object  vs  curl of …/jobs/J/artifacts (size/time_total)
#   archive, N clients: N dd at once            vs  N curl at once (total bytes / wall time)
#   zip entry (stored, deflated): unzip -p ENTRY, and Python's zipfile reading it 1 MiB at a
#     time (zlib's inflate and CRC-32, timed inside Python)  vs  curl of …/jobs/J2/artifacts/ENTRY
# plus, for scale, the same curl against a minimal Python server that answers with sendfile(2)
# (what loopback TCP, HTTP and curl cost with no copy in the server). Also recorded: the
# worker's peak RSS (VmHWM) before the first download and after each phase, and the CPU the
# clients and the servers used (getrusage of the clients, /proc/PID/stat of the worker and of
# the sendfile server).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
SIZE=${BENCH_SIZE:-1073741824}
ENTRY_SIZE=${BENCH_ENTRY_SIZE:-268435456}
ROUNDS=${BENCH_ROUNDS:-${ROUNDS:-3}}
CONC=${BENCH_CONCURRENCY:-8}

ensure_packages
ensure_tools curl unzip
housekeep_release

start_servers /var/tmp/housekeep-bench-api
WORKER_PID=""
SENDFILE_PID=""
cleanup() {
  [ -z "$WORKER_PID" ] || { kill "$WORKER_PID" 2>/dev/null || true; wait "$WORKER_PID" 2>/dev/null || true; }
  [ -z "$SENDFILE_PID" ] || { kill "$SENDFILE_PID" 2>/dev/null || true; wait "$SENDFILE_PID" 2>/dev/null || true; }
  stop_servers
}
trap cleanup EXIT

PSQL=("$(pg_bindir)/psql" -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres)
STORE="$WORK/store"
mkdir -p "$STORE"
unset HOUSEKEEP_CONFIG HOUSEKEEP_STORE_URL
export HOUSEKEEP_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/api"
export HOUSEKEEP_LOCAL_STORE_URL="file://$STORE"
export HOUSEKEEP_LOG=warn HOUSEKEEP_LOG_FORMAT=json
for t in UNLOCK UNKNOWN EXPIRE DELETE_OBJECTS STALE_UPLOADS; do
  export "HOUSEKEEP_TASKS_${t}_ENABLED=false"
done

"${PSQL[@]}" -d postgres -c "CREATE DATABASE api"
"$HK" migrate >/dev/null

# A project as tests/it/fixtures project() makes it, a successful pipeline on main, two jobs,
# and an archive row for each (local store, hashed layout, never expiring). Prints
# "project job1 job2 key1 key2".
read -r PROJECT JOB1 JOB2 KEY1 KEY2 < <("${PSQL[@]}" -At -F ' ' -d api <<'SQL'
CREATE TEMP TABLE ids (what text, id bigint);
WITH p AS (INSERT INTO projects (name, path, namespace_id, created_at, updated_at)
           VALUES ('bench', 'bench', 1, now(), now()) RETURNING id)
INSERT INTO ids SELECT 'project', id FROM p;
INSERT INTO routes (source_id, source_type, path, name, namespace_id)
  SELECT id, 'Project', 'group/bench', 'bench', 1 FROM ids WHERE what = 'project';
INSERT INTO project_ci_cd_settings (project_id) SELECT id FROM ids WHERE what = 'project';
INSERT INTO project_statistics (project_id, namespace_id, build_artifacts_size, storage_size)
  SELECT id, 1, 0, 0 FROM ids WHERE what = 'project';
WITH r AS (INSERT INTO ci_refs (project_id, ref_path) SELECT id, 'refs/heads/main' FROM ids WHERE what = 'project' RETURNING id, project_id),
     pl AS (INSERT INTO p_ci_pipelines (partition_id, project_id, ref, tag, sha, status, source, locked, ci_ref_id, created_at, updated_at, finished_at)
            SELECT 100, r.project_id, 'main', false, md5('bench'), 'success', 1, 1, r.id,
                   now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' FROM r RETURNING id)
INSERT INTO ids SELECT 'pipeline', id FROM pl;
INSERT INTO p_ci_builds (partition_id, project_id, commit_id, name, ref, tag, type, status, created_at, updated_at, finished_at)
  SELECT 100, (SELECT id FROM ids WHERE what = 'project'), id, name, 'main', false, 'Ci::Build', 'success',
         now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
  FROM ids, (VALUES ('build'), ('package')) n(name) WHERE what = 'pipeline' ORDER BY name;
INSERT INTO p_ci_job_artifacts (partition_id, project_id, job_id, file_type, file_format, file_location, size, file_store,
                                file, expire_at, locked, created_at, updated_at)
  SELECT 100, project_id, id, 1, 2, 2, 0, 1, 'artifacts.zip', NULL, 1, now(), now()
  FROM p_ci_builds ORDER BY id;
SELECT (SELECT id FROM ids WHERE what = 'project'),
       (SELECT min(id) FROM p_ci_builds), (SELECT max(id) FROM p_ci_builds),
       (SELECT housekeep.artifact_store_dir(project_id, created_at, job_id, id, file_final_path, file_location) || '/' || file
          FROM p_ci_job_artifacts ORDER BY job_id LIMIT 1),
       (SELECT housekeep.artifact_store_dir(project_id, created_at, job_id, id, file_final_path, file_location) || '/' || file
          FROM p_ci_job_artifacts ORDER BY job_id DESC LIMIT 1);
SQL
)
ARCHIVE="$STORE/$KEY1"
ZIP="$STORE/$KEY2"
mkdir -p "$(dirname "$ARCHIVE")" "$(dirname "$ZIP")"

log "writing the archive: $SIZE random bytes"
head -c "$SIZE" /dev/urandom >"$ARCHIVE"
log "writing the zip: big.bin ($ENTRY_SIZE random bytes, stored), big.log ($ENTRY_SIZE bytes of log lines, deflated)"
python3 - "$ZIP" "$ENTRY_SIZE" <<'PY'
import os, random, sys, zipfile
path, size = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
levels = ["INFO"] * 8 + ["DEBUG"] * 3 + ["WARN"]
words = ["compile", "link", "test", "fetch", "resolve", "bundle", "check", "lint", "cache", "upload"]
crates = ["core", "store", "api", "db", "tasks", "worker", "config", "metrics", "seed", "orphans", "report"]
pool, n = [], 0
while n < 8 << 20:  # 8 MiB of distinct lines, written over and over (beyond deflate's 32 KiB window)
    line = (f"2025-06-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}Z {rng.choice(levels):5} "
            f"[{rng.choice(crates)}] {rng.choice(words)} {rng.choice(crates)}::{rng.choice(words)}_{rng.randint(0, 9999)} "
            f"in {rng.randint(1, 5000)} ms ({rng.randint(0, 1 << 20)} bytes)\n").encode()
    pool.append(line)
    n += len(line)
block = b"".join(pool)
with zipfile.ZipFile(path, "w", allowZip64=True, compresslevel=6) as z:
    for name, method in (("big.bin", zipfile.ZIP_STORED), ("big.log", zipfile.ZIP_DEFLATED)):
        info = zipfile.ZipInfo(name, date_time=(2025, 6, 1, 0, 0, 0))
        info.compress_type = method
        with z.open(info, "w", force_zip64=size >= 1 << 31) as f:
            left = size
            while left:
                chunk = os.urandom(min(left, 1 << 20)) if name == "big.bin" else block[: min(left, len(block))]
                f.write(chunk)
                left -= len(chunk)
PY
ZIP_SIZE=$(stat -c %s "$ZIP")
LOG_COMPRESSED=$(python3 -c "import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).getinfo('big.log').compress_size)" "$ZIP")
"${PSQL[@]}" -d api -c "UPDATE p_ci_job_artifacts SET size = CASE job_id WHEN $JOB1 THEN $SIZE ELSE $ZIP_SIZE END" \
  -c "UPDATE project_statistics s SET build_artifacts_size = t.total, storage_size = t.total
      FROM (SELECT project_id, sum(size)::bigint AS total FROM p_ci_job_artifacts GROUP BY 1) t WHERE t.project_id = s.project_id"

TOKEN=$("$HK" token create --user bench --project "$PROJECT" --role reporter 2>/dev/null)

PORT=$(free_port)
"$HK" worker --listen "127.0.0.1:$PORT" >"$WORK/worker.log" 2>&1 &
WORKER_PID=$!
for _ in $(seq 1 200); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$WORKER_PID" 2>/dev/null || { cat "$WORK/worker.log" >&2; exit 1; }
  sleep 0.1
done
API="http://127.0.0.1:$PORT/api/v4/projects/$PROJECT/jobs"

# A minimal HTTP/1.1 server answering every GET with one file through sendfile(2): the loopback
# ceiling for a server that copies nothing, measured with the same curl.
SENDFILE_PORT=$(free_port)
python3 - "$SENDFILE_PORT" "$ARCHIVE" >"$WORK/sendfile.log" 2>&1 <<'PY' &
import os, socket, socketserver, sys
port, path = int(sys.argv[1]), sys.argv[2]
size = os.path.getsize(path)
class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.request.recv(4096)
            if not data:
                return
            head += data
        self.request.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode())
        with open(path, "rb") as f:
            self.request.sendfile(f)
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 64
Server(("127.0.0.1", port), Handler).serve_forever()
PY
SENDFILE_PID=$!
for _ in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $SENDFILE_PORT)).close()" 2>/dev/null && break
  sleep 0.1
done

# Correctness first (and the page cache warm): every download is the bytes it should be.
log "checking the downloads against the files"
cat "$ARCHIVE" "$ZIP" >/dev/null
cmp <(curl -sf -H "PRIVATE-TOKEN: $TOKEN" "$API/$JOB1/artifacts") "$ARCHIVE"
cmp <(curl -sf "http://127.0.0.1:$SENDFILE_PORT/") "$ARCHIVE"
for e in big.bin big.log; do
  cmp <(curl -sf -H "PRIVATE-TOKEN: $TOKEN" "$API/$JOB2/artifacts/$e") <(unzip -p "$ZIP" "$e")
done

# The worker's peak resident memory (VmHWM) in MiB; a process's CPU time (user + system) in ticks.
TICK=$(getconf CLK_TCK)
peak_rss() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$WORKER_PID/status"; }
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# CPU seconds between two tick counts
cpu_s() { awk -v a="$1" -v b="$2" -v t="$TICK" 'BEGIN { printf "%.3f", (b - a) / t }'; }

# A fresh worker for the measurements, so that its peak RSS starts from a request that sends no
# file (authentication, the database pool) rather than from the checks above.
kill "$WORKER_PID"
wait "$WORKER_PID" 2>/dev/null || true
"$HK" worker --listen "127.0.0.1:$PORT" >>"$WORK/worker.log" 2>&1 &
WORKER_PID=$!
for _ in $(seq 1 200); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
code=$(curl -s -o /dev/null -w '%{http_code}' -H "PRIVATE-TOKEN: $TOKEN" "$API/$JOB2/artifacts/none.txt")
[ "$code" = 404 ] || { echo "warm-up request: HTTP $code" >&2; exit 1; }
RSS_BEFORE=$(peak_rss)

TMP="$WORK/timing"
mkdir -p "$TMP"
TIMEFORMAT='%3R %3U %3S'

# measure CMD…: runs one measurement and prints "bytes seconds client_cpu worker_cpu wall
# sendfile_cpu": the bytes and seconds CMD printed (or, when it printed the bytes alone, the wall
# time), the CPU seconds of the client (bash's `time`: getrusage of the children it waited for)
# and of the worker (/proc/PID/stat before and after), the wall time of the whole command, and
# the CPU seconds of the sendfile server.
measure() {
  local w0 w1 s0 s1 real user sys out
  w0=$(ticks "$WORKER_PID")
  s0=$(ticks "$SENDFILE_PID")
  { time "$@" >"$TMP/out" 2>&3; } 3>&2 2>"$TMP/time"
  w1=$(ticks "$WORKER_PID")
  s1=$(ticks "$SENDFILE_PID")
  read -r real user sys <"$TMP/time"
  out=$(cat "$TMP/out")
  # out: "bytes seconds", or "bytes" alone (then the wall time of `time` is used)
  set -- $out
  echo "$1 ${2:-$real} $(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.3f", u + s }') $(cpu_s "$w0" "$w1") $real $(cpu_s "$s0" "$s1")"
}
ref_archive() { dd if="$ARCHIVE" of=/dev/null bs=1M status=none; echo "$SIZE"; }
# (`wait` on the clients' ids only: a bare `wait` would wait for the servers too.)
ref_archive_n() {
  local i pids=()
  for i in $(seq 1 "$CONC"); do
    dd if="$ARCHIVE" of=/dev/null bs=1M status=none &
    pids+=($!)
  done
  wait "${pids[@]}"
  echo $((SIZE * CONC))
}
# curl_one URL [TOKEN]: "bytes time_total", after checking the status (curl_n checks the length)
curl_one() {
  local r
  if [ -n "${2:-}" ]; then
    r=$(curl -s -o /dev/null -H "PRIVATE-TOKEN: $2" -w '%{http_code} %{size_download} %{time_total}' "$1")
  else
    r=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$1")
  fi
  set -- $r
  [ "$1" = 200 ] || { echo "HTTP $1" >&2; return 1; }
  echo "$2 $3"
}
curl_n() {
  local url=$1 token=${2:-} i total=0 b pids=()
  for i in $(seq 1 "$CONC"); do
    curl_one "$url" "$token" >"$TMP/n.$i" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i"; done
  for i in $(seq 1 "$CONC"); do read -r b _ <"$TMP/n.$i"; total=$((total + b)); done
  [ "$total" = $((SIZE * CONC)) ] || { echo "downloaded $total bytes of $((SIZE * CONC))" >&2; return 1; }
  echo "$total"
}
hk_archive() { curl_one "$API/$JOB1/artifacts" "$TOKEN"; }
hk_archive_n() { curl_n "$API/$JOB1/artifacts" "$TOKEN"; }
sf_archive() { curl_one "http://127.0.0.1:$SENDFILE_PORT/"; }
sf_archive_n() { curl_n "http://127.0.0.1:$SENDFILE_PORT/"; }
ref_entry() { unzip -p "$ZIP" "$1" >/dev/null; echo "$ENTRY_SIZE"; }
py_entry() {
  python3 - "$ZIP" "$1" <<'PY'
import sys, time, zipfile
t0 = time.perf_counter()
n = 0
with zipfile.ZipFile(sys.argv[1]).open(sys.argv[2]) as f:
    while chunk := f.read(1 << 20):
        n += len(chunk)
print(n, f"{time.perf_counter() - t0:.6f}")
PY
}
hk_entry() { curl_one "$API/$JOB2/artifacts/$1" "$TOKEN"; }

# run_phase NAME CMD…: ROUNDS times each command of the phase, one after the other, into
# $TMP/NAME.<index>, one line of `measure` each.
run_phase() {
  local name=$1 r i
  shift
  for r in $(seq 1 "$ROUNDS"); do
    i=0
    for cmd in "$@"; do
      i=$((i + 1))
      # shellcheck disable=SC2086
      measure $cmd >>"$TMP/$name.$i"
      log "$name round $r: $cmd: $(tail -n 1 "$TMP/$name.$i")"
    done
  done
}

run_phase archive1 ref_archive hk_archive sf_archive
RSS_ARCHIVE1=$(peak_rss)
run_phase archiveN ref_archive_n hk_archive_n sf_archive_n
RSS_ARCHIVEN=$(peak_rss)
run_phase stored "ref_entry big.bin" "hk_entry big.bin" "py_entry big.bin"
RSS_STORED=$(peak_rss)
run_phase deflated "ref_entry big.log" "hk_entry big.log" "py_entry big.log"
RSS_DEFLATED=$(peak_rss)

# stats FILE: "median_MBps min_MBps max_MBps client_cpu_pct worker_cpu_pct sendfile_cpu_pct" over the rounds
# (CPU as a percentage of one core over the commands' wall time, summed over the rounds).
stats() {
  python3 - "$1" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
rates = [r[0] / r[1] / 1e6 for r in rows]
secs = sum(r[4] for r in rows)
print(f"{statistics.median(rates):.0f} {min(rates):.0f} {max(rates):.0f} "
      f"{100 * sum(r[2] for r in rows) / secs:.0f} {100 * sum(r[3] for r in rows) / secs:.0f} "
      f"{100 * sum(r[5] for r in rows) / secs:.0f}")
PY
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cell() { echo "$1 ($2–$3)"; }

# row LABEL REFERENCE REF_FILE HK_FILE: one line of the table
row() {
  local rm rmin rmax rcpu rs hm hmin hmax hcpu hw rcell
  read -r rm rmin rmax rcpu _ rs < <(stats "$3")
  read -r hm hmin hmax hcpu hw _ < <(stats "$4")
  rcell="$rcpu%"
  case $2 in sendfile*) rcell="$rcpu% / $rs%" ;; esac
  echo "| $1 | $(cell "$hm" "$hmin" "$hmax") | $2 | $(cell "$rm" "$rmin" "$rmax") | $(ratio "$hm" "$rm") | $hcpu% / $hw% | $rcell |"
}

mib() { awk -v b="$1" 'BEGIN { printf "%.0f MiB", b / 1048576 }'; }
load=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "Archive $(mib "$SIZE") of random bytes; zip $(mib "$ZIP_SIZE"): big.bin $(mib "$ENTRY_SIZE") stored, big.log $(mib "$ENTRY_SIZE") deflated to $(mib "$LOG_COMPRESSED"); $ROUNDS rounds, $CONC clients at once; $(nproc) cores; load average after the run: $load."
  echo
  echo "MB/s: 10^6 bytes of the file (uncompressed) per second, median of $ROUNDS rounds (min–max). CPU: % of one core over the commands' wall time (curl's or Python's start included), summed over the rounds."
  echo
  echo "| download | housekeep MB/s | reference | reference MB/s | housekeep / reference | CPU curl / worker | CPU reference (curl / server) |"
  echo "|---|---|---|---|---|---|---|"
  row "archive, 1 client" "\`dd bs=1M\`" "$TMP/archive1.1" "$TMP/archive1.2"
  row "archive, $CONC clients (total)" "$CONC × \`dd bs=1M\`" "$TMP/archiveN.1" "$TMP/archiveN.2"
  row "archive, 1 client" "sendfile server + curl" "$TMP/archive1.3" "$TMP/archive1.2"
  row "archive, $CONC clients (total)" "sendfile server + $CONC curl" "$TMP/archiveN.3" "$TMP/archiveN.2"
  row "zip entry big.bin (stored)" "\`unzip -p\`" "$TMP/stored.1" "$TMP/stored.2"
  row "zip entry big.bin (stored)" "Python \`zipfile\`" "$TMP/stored.3" "$TMP/stored.2"
  row "zip entry big.log (deflated)" "\`unzip -p\`" "$TMP/deflated.1" "$TMP/deflated.2"
  row "zip entry big.log (deflated)" "Python \`zipfile\`" "$TMP/deflated.3" "$TMP/deflated.2"
  echo
  echo "Rows with the same download compare the same housekeep timings with two references."
  echo
  echo "| worker peak RSS (VmHWM) | MiB |"
  echo "|---|---|"
  echo "| after start and one authenticated request (404) | $RSS_BEFORE |"
  echo "| after the 1-client archive downloads | $RSS_ARCHIVE1 |"
  echo "| after the $CONC-client archive downloads | $RSS_ARCHIVEN |"
  echo "| after the stored entry | $RSS_STORED |"
  echo "| after the deflated entry | $RSS_DEFLATED |"
} | tee "${BENCH_RESULTS:-/dev/null}"
