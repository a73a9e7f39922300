#!/usr/bin/env bash
# Makes sure the servers the tests talk to run on loopback: Redis (6379), PostgreSQL (5432,
# trust auth, with the test database), RabbitMQ (5672) and NATS with JetStream (4222).
#
# For each: if its port answers, nothing is done. Otherwise the Debian package is installed
# when missing (one `apt-get update` first), the server is started the way this machine kind
# starts it, and the port is waited for (at most SERVICES_WAIT seconds, default 60); a server
# that never opens its port fails the script with the tail of its log.
#
# Idempotent, and quiet when everything runs already: it prints one line.
#
# Environment:
#   MESHWORK_POSTGRES_URL  the database to create if missing is the last part of its path
#                          (default postgres://postgres@127.0.0.1:5432/test -> "test")
#   SERVICES               which servers to check (default "redis postgresql rabbitmq nats")
#   SERVICES_WAIT          seconds to wait for a port (default 60)
set -euo pipefail

SERVICES="${SERVICES:-redis postgresql rabbitmq nats}"
WAIT="${SERVICES_WAIT:-60}"
POSTGRES_URL="${MESHWORK_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

# Whether something accepts connections on 127.0.0.1:$1.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

apt_updated=0
# Installs the Debian packages given, running `apt-get update` once per run.
install_packages() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  log "installing $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# wait_port NAME PORT LOG...: waits for the port; fails with the log tails if it never opens.
wait_port() {
  local name=$1 port=$2 deadline=$((SECONDS + WAIT))
  shift 2
  while ! port_open "$port"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      printf 'services: error: %s did not open 127.0.0.1:%s within %ss\n' "$name" "$port" "$WAIT" >&2
      local f
      for f in "$@"; do
        if [ -f "$f" ]; then
          printf -- '--- last lines of %s\n' "$f" >&2
          tail -n 30 "$f" >&2 || true
        fi
      done
      exit 1
    fi
    sleep 0.5
  done
}

postgres_version() {
  ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1
}

start_redis() {
  command -v redis-server >/dev/null 2>&1 || install_packages redis-server
  port_open 6379 && return 0
  as_root mkdir -p /var/lib/redis /var/log/redis
  log "starting redis"
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null
  wait_port redis 6379 /var/log/redis/ci.log
}

start_postgresql() {
  local fresh=0
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(postgres_version)" ]; then
    install_packages postgresql
    fresh=1
  fi
  local version
  version=$(postgres_version)
  [ -n "$version" ] || die "postgresql is installed but /etc/postgresql holds no version"
  if [ ! -d "/etc/postgresql/$version/main" ]; then
    log "creating the postgresql $version cluster 'main'"
    as_root pg_createcluster "$version" main >/dev/null
    fresh=1
  fi
  if [ "$fresh" = 1 ]; then
    # A fresh cluster asks for passwords on TCP; the tests connect as postgres without one,
    # as on the machines of this kind (trust on the socket and on loopback).
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    as_root sh -c "printf '%s\n' 'local all all trust' 'host all all 127.0.0.1/32 trust' \
      'host all all ::1/128 trust' > '$hba'"
    if port_open 5432; then
      as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    fi
  fi
  if ! port_open 5432; then
    log "starting postgresql $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
    wait_port postgresql 5432 "/var/log/postgresql/postgresql-$version-main.log"
  fi
  ensure_database
}

# Creates the database of MESHWORK_POSTGRES_URL (default "test") when missing.
ensure_database() {
  local db=${POSTGRES_URL%%\?*}
  db=${db##*/}
  [ -n "$db" ] || return 0
  case "$db" in
    *[!A-Za-z0-9_]*) die "database name '$db' (from MESHWORK_POSTGRES_URL) must hold only letters, digits and '_'" ;;
  esac
  command -v psql >/dev/null 2>&1 || install_packages postgresql-client
  local q=(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -v ON_ERROR_STOP=1 -Atq)
  local exists
  if ! exists=$(PGCONNECT_TIMEOUT=10 "${q[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'" 2>&1); then
    die "can't connect to postgresql as user postgres on 127.0.0.1:5432: $exists"
  fi
  if [ "$exists" != 1 ]; then
    log "creating database $db"
    PGCONNECT_TIMEOUT=10 "${q[@]}" -c "CREATE DATABASE \"$db\"" >/dev/null
  fi
}

start_rabbitmq() {
  command -v rabbitmq-server >/dev/null 2>&1 || install_packages rabbitmq-server
  port_open 5672 && return 0
  log "starting rabbitmq"
  as_root rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_port rabbitmq 5672 /var/log/rabbitmq/rabbit@*.log
}

start_nats() {
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || install_packages nats-server
  port_open 4222 && return 0
  as_root mkdir -p /var/lib/nats-server
  log "starting nats (JetStream)"
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port nats 4222 /var/log/nats-server.log
}

for service in $SERVICES; do
  case "$service" in
    redis) start_redis ;;
    postgresql) start_postgresql ;;
    rabbitmq) start_rabbitmq ;;
    nats) start_nats ;;
    *) die "unknown service '$service' (known: redis postgresql rabbitmq nats)" ;;
  esac
done
log "up: $SERVICES"
