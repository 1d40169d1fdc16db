#!/usr/bin/env bash
# Starts what the test suite needs and is not running: the Docker engine with runsc
# registered as a runtime, Redis and PostgreSQL. Installs them first when missing.
# Idempotent: a service that already answers is reused. A service that cannot be
# started is an error (exit 1), never a skip.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

start_docker() {
  need_pkg dockerd docker.io
  need_runsc
  local runsc_path
  runsc_path=$(command -v runsc)
  mkdir -p /etc/docker
  # Register runsc (network off: without it runsc refuses to start containers here).
  python3 - "$runsc_path" <<'PY'
import json, pathlib, sys
p = pathlib.Path("/etc/docker/daemon.json")
cfg = json.loads(p.read_text()) if p.exists() and p.read_text().strip() else {}
want = {"path": sys.argv[1], "runtimeArgs": ["--network=none"]}
if cfg.get("runtimes", {}).get("runsc") != want:
    cfg.setdefault("runtimes", {})["runsc"] = want
    p.write_text(json.dumps(cfg, indent=2) + "\n")
PY
  if docker info >/dev/null 2>&1; then
    if ! docker info --format '{{json .Runtimes}}' | grep -q '"runsc"'; then
      log "docker: reloading the daemon configuration to register runsc"
      pkill -HUP -x dockerd || true
      sleep 2
    fi
  else
    log "docker: starting dockerd"
    setsid nohup dockerd >/var/log/pitwall-dockerd.log 2>&1 < /dev/null &
    wait_for 60 "docker info" || die "dockerd did not start; see /var/log/pitwall-dockerd.log"
  fi
  docker info --format '{{json .Runtimes}}' | grep -q '"runsc"' \
    || die "dockerd runs but has no runsc runtime; check /etc/docker/daemon.json"
  log "docker: ready (runtime runsc registered)"
}

start_redis() {
  if redis_ok; then log "redis: already running"; return; fi
  need_pkg redis-server redis-server
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/pitwall.log
  wait_for 20 redis_ok || die "redis did not start; see /var/log/redis/pitwall.log"
  log "redis: started"
}

redis_ok() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
pg_ok() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

start_postgres() {
  if ! pg_ok; then
    need_pkg pg_ctlcluster postgresql
    local ver
    ver=$(ls /etc/postgresql | sort -V | tail -1)
    [ -n "$ver" ] || die "postgresql is installed but has no cluster in /etc/postgresql"
    # Trust auth on loopback: the suite connects as postgres without a password.
    local hba="/etc/postgresql/$ver/main/pg_hba.conf"
    if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
      sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
      || pg_ctlcluster --skip-systemctl-redirect "$ver" main restart
    wait_for 30 pg_ok || die "postgresql did not start"
    log "postgres: started"
  else
    log "postgres: already running"
  fi
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='pitwall_test'" \
    | grep -q 1 || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE pitwall_test"
}

start_redis
start_postgres
start_docker
need_pkg chromium chromium
log "chromium: $(command -v chromium)"
# tests/cluster: network namespaces and veth pairs (ip), entered with nsenter/unshare.
need_pkg ip iproute2
need_pkg nsenter util-linux
