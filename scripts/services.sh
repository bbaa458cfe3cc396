#!/usr/bin/env bash
# Installs what is missing and starts the services the tests and benchmarks
# need, idempotently (running services are left alone):
#
# - PostgreSQL from Debian's packages: the machine's cluster on
#   127.0.0.1:5432, `trust` authentication for 127.0.0.1 (user postgres).
# - Apache Kafka 4.1.1, single node, KRaft mode, on 127.0.0.1:9092
#   (controller 127.0.0.1:9093). Its jars come from Maven Central through
#   scripts/kafka/pom.xml (`mvn dependency:copy-dependencies`); its data and
#   log live under .services/kafka/. Ready only when a metadata request
#   (listing topics) succeeds.
#
# Usage: scripts/services.sh            install + start both, wait until ready
#        scripts/services.sh stop-kafka  stop the broker (SIGTERM, waits)
#        scripts/services.sh restart-kafka
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

KAFKA_DIR="$ROOT/.services/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
KAFKA_HEAP="${DELTABOOK_KAFKA_HEAP:-1g}"
POM="$ROOT/scripts/kafka/pom.xml"

say() { echo "services: $*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- PostgreSQL -------------------------------------------------------------
postgres_up() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    say "installing PostgreSQL from Debian's packages"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
  fi
  local version
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  if [ ! -d "/etc/postgresql/$version/main" ]; then
    say "creating cluster $version/main"
    as_root pg_createcluster "$version" main
  fi
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q '# deltabook: trust on loopback' "$hba"; then
    say "configuring $hba: trust for 127.0.0.1 (test machines only)"
    local tmp
    tmp="$(mktemp)"
    {
      echo '# deltabook: trust on loopback (scripts/services.sh; test machines only)'
      echo 'host    all             all             127.0.0.1/32            trust'
      echo 'host    all             all             ::1/128                 trust'
      cat "$hba"
    } >"$tmp"
    as_root cp "$tmp" "$hba"
    rm -f "$tmp"
    if port_open 5432; then
      as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    fi
  fi
  # Server settings for a write-heavy test machine. Durability is kept
  # (fsync, synchronous_commit and full_page_writes stay on): fewer
  # checkpoints and a bigger cache only.
  local tuning="/etc/postgresql/$version/main/conf.d/deltabook.conf"
  local want
  want="$(cat <<'CONF'
# deltabook: scripts/services.sh (test and benchmark machines)
shared_buffers = 1GB
wal_buffers = 64MB
max_wal_size = 8GB
min_wal_size = 1GB
checkpoint_timeout = 15min
checkpoint_completion_target = 0.9
max_connections = 200
CONF
)"
  if [ "$(cat "$tuning" 2>/dev/null)" != "$want" ]; then
    say "writing $tuning"
    echo "$want" | as_root tee "$tuning" >/dev/null
    if port_open 5432; then
      say "restarting PostgreSQL $version for its new settings"
      as_root pg_ctlcluster --skip-systemctl-redirect "$version" main restart
    fi
  fi
  if ! port_open 5432; then
    say "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  fi
  for _ in $(seq 1 100); do
    port_open 5432 && break
    sleep 0.1
  done
  port_open 5432 || { echo "services: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
  for _ in $(seq 1 50); do
    if psql "host=127.0.0.1 port=5432 user=postgres dbname=postgres" -qAtc 'SELECT 1' >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  echo "services: PostgreSQL does not accept user postgres on 127.0.0.1" >&2
  exit 1
}

# --- Apache Kafka -----------------------------------------------------------
kafka_jars() {
  # The pom is the pin: re-copy when it changes.
  local stamp="$KAFKA_LIBS/.pom.sha256"
  local want
  want="$(sha256sum "$POM" | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || { echo "services: Maven (mvn) is needed to fetch Kafka's jars" >&2; exit 1; }
  command -v java >/dev/null 2>&1 || { echo "services: Java 17+ is needed to run Kafka" >&2; exit 1; }
  say "fetching Apache Kafka's jars from Maven Central ($POM)"
  rm -rf "$KAFKA_LIBS"
  mkdir -p "$KAFKA_LIBS"
  mvn -q -B -f "$POM" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_LIBS" -DincludeScope=runtime
  echo "$want" >"$stamp"
}

KAFKA_JAVA=(java -Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
  -Djava.awt.headless=true "-Dlog4j2.configurationFile=$ROOT/scripts/kafka/log4j2.yaml"
  -cp "$KAFKA_LIBS/*")

kafka_ready() {
  # A metadata request: list the topics.
  timeout 20 java -Xmx128m -XX:TieredStopAtLevel=1 \
    "-Dlog4j2.configurationFile=$ROOT/scripts/kafka/log4j2.yaml" -Dlog4j2.level=WARN \
    -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "127.0.0.1:$KAFKA_PORT" --list >/dev/null 2>&1
}

kafka_pid() {
  local pid
  pid="$(cat "$KAFKA_DIR/kafka.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "$pid"
  fi
}

kafka_stop() {
  local pid
  pid="$(kafka_pid)"
  if [ -z "$pid" ]; then
    # This tree's broker, even if its pid file was lost.
    pid="$(pgrep -f "kafka\.Kafka $KAFKA_DIR/server\.properties" | head -1 || true)"
  fi
  if [ -z "$pid" ]; then
    if port_open "$KAFKA_PORT"; then
      echo "services: a broker this tree did not start serves 127.0.0.1:$KAFKA_PORT; stop it first" >&2
      exit 1
    fi
    say "Kafka is not running"
    return 0
  fi
  say "stopping Kafka (pid $pid)"
  kill "$pid"
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "Kafka did not stop in 30 s; killing it"
    kill -9 "$pid" || true
  fi
  rm -f "$KAFKA_DIR/kafka.pid"
}

kafka_start() {
  say "starting Apache Kafka on 127.0.0.1:$KAFKA_PORT"
  nohup "${KAFKA_JAVA[@]}" kafka.Kafka "$KAFKA_DIR/server.properties" \
    >>"$KAFKA_DIR/kafka.log" 2>&1 </dev/null &
  echo $! >"$KAFKA_DIR/kafka.pid"
}

kafka_up() {
  kafka_jars
  mkdir -p "$KAFKA_DATA"
  {
    cat "$ROOT/scripts/kafka/server.properties"
    echo "log.dirs=$KAFKA_DATA"
  } >"$KAFKA_DIR/server.properties"
  if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
    local cluster
    cluster="$("${KAFKA_JAVA[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    say "formatting Kafka storage (cluster $cluster)"
    "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format -t "$cluster" \
      -c "$KAFKA_DIR/server.properties" >>"$KAFKA_DIR/kafka.log" 2>&1
  fi
  if ! port_open "$KAFKA_PORT"; then
    kafka_start
  fi
  local started=$SECONDS restarted=0
  until kafka_ready; do
    # The port was open when this began, but this tree's broker was
    # shutting down (a stop sent just before): once it has exited and
    # the port is closed, start ours. Once at most: a broker that exits
    # on its own is reported below, with its log.
    if [ "$restarted" = 0 ] && [ -z "$(kafka_pid)" ] && ! port_open "$KAFKA_PORT"; then
      say "the broker on 127.0.0.1:$KAFKA_PORT exited while this waited for it"
      kafka_start
      restarted=1
    fi
    if [ $((SECONDS - started)) -gt 120 ]; then
      echo "services: Kafka did not answer a metadata request in 120 s; see $KAFKA_DIR/kafka.log" >&2
      tail -20 "$KAFKA_DIR/kafka.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

case "${1:-up}" in
  up)
    postgres_up
    kafka_up
    say "ready: PostgreSQL 127.0.0.1:5432, Apache Kafka 127.0.0.1:$KAFKA_PORT"
    ;;
  stop-kafka)
    kafka_stop
    ;;
  restart-kafka)
    kafka_stop
    kafka_up
    say "Kafka restarted"
    ;;
  *)
    echo "usage: $0 [up|stop-kafka|restart-kafka]" >&2
    exit 2
    ;;
esac
