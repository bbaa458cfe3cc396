#!/usr/bin/env bash
# Starts the services the integration tests need, installing what is missing:
# - PostgreSQL (the machine's cluster) on 127.0.0.1:5432
# - tansu 0.6.0 (a Kafka-protocol broker) on 127.0.0.1:9092 with SQLite storage
#   under .services/ (survives a broker restart).
# Idempotent: running it again leaves running services alone.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
KAFKA_PORT="${DELTABOOK_KAFKA_PORT:-9092}"
STATE_DIR=.services
mkdir -p "$STATE_DIR"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- PostgreSQL -------------------------------------------------------------
if ! port_open 5432; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
for _ in $(seq 1 50); do port_open 5432 && break; sleep 0.2; done
port_open 5432 || { echo "services: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }

# --- tansu ------------------------------------------------------------------
TANSU="$(command -v tansu || true)"
if [ -z "$TANSU" ] || ! "$TANSU" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "services: installing tansu $TANSU_VERSION (about 8 minutes on 2 cores, once per machine)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features libsql
  TANSU="$HOME/.cargo/bin/tansu"
fi
if ! port_open "$KAFKA_PORT"; then
  echo "services: starting tansu on 127.0.0.1:$KAFKA_PORT"
  (
    cd "$STATE_DIR"
    nohup "$TANSU" broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine "sqlite://tansu.db" >> tansu.log 2>&1 &
    echo $! > tansu.pid
  )
fi
for _ in $(seq 1 100); do port_open "$KAFKA_PORT" && break; sleep 0.1; done
port_open "$KAFKA_PORT" || { echo "services: tansu did not start; see $STATE_DIR/tansu.log" >&2; exit 1; }
echo "services: PostgreSQL 127.0.0.1:5432, Kafka (tansu) 127.0.0.1:$KAFKA_PORT"
