#!/usr/bin/env bash
# scripts/kafka.sh: a real single-node Apache Kafka 4.x broker (KRaft, combined
# broker+controller) on 127.0.0.1, for clickpath's tests, benchmarks and demos.
#
# Kafka is installed from Maven Central with Maven (deploy/kafka/pom.xml lists
# the broker, Kafka's CLI tools and a log4j2 backend); no tarball download.
# Everything lives in .kafka/ at the repo root (git-ignored).
#
# Usage:
#   scripts/kafka.sh install     copy the Kafka jars into .kafka/libs (idempotent)
#   scripts/kafka.sh start       format storage once, start the broker in the
#                                background, wait until it answers (idempotent)
#   scripts/kafka.sh up          install + start
#   scripts/kafka.sh stop        stop the broker started from here (idempotent)
#   scripts/kafka.sh status      exit 0 if running and answering, 1 otherwise
#                                (with KAFKA_SECURE_PORT: and serving that listener)
#   scripts/kafka.sh reset       stop + delete .kafka/data (clean state)
#   scripts/kafka.sh bootstrap   print 127.0.0.1:PORT
#   scripts/kafka.sh secure-bootstrap
#                                print 127.0.0.1:SECURE_PORT (needs KAFKA_SECURE_PORT)
#   scripts/kafka.sh secure-properties
#                                print the librdkafka client settings (key=value
#                                lines) for the TLS + SASL/SCRAM listener
#   scripts/kafka.sh topics ARGS run Kafka's topic tool against our broker,
#                                e.g. topics --create --topic t --partitions 3
#   scripts/kafka.sh tool CLASS ARGS
#                                run any Kafka tool main class with our classpath,
#                                e.g. tool org.apache.kafka.tools.ConsoleProducer ...
#
#   export CLICKPATH_TEST_BROKERS=$(scripts/kafka.sh bootstrap)
#
# Environment:
#   KAFKA_PORT             PLAINTEXT listener port      (default 19092)
#   KAFKA_CONTROLLER_PORT  CONTROLLER listener port     (default 19093)
#   KAFKA_HOME_DIR         state directory              (default <repo>/.kafka)
#   KAFKA_HEAP             broker heap flags            (default "-Xms256m -Xmx768m")
#   KAFKA_START_TIMEOUT    seconds to wait for ready    (default 90)
#   KAFKA_SECURE_PORT      if set: also a SASL_SSL listener on this port
#                          (TLS with a self-signed CA made here + SCRAM-SHA-512;
#                          default unset: PLAINTEXT only, as before)
#   KAFKA_SCRAM_USER       SCRAM user created for that listener (default clickpath)
#   JAVA_HOME              Java 17+ to use (else `java` on PATH)
#
# Layout of KAFKA_HOME_DIR: libs/ (jars + .installed marker), data/ (KRaft
# metadata + topic logs), server.properties, log4j2.properties (broker, INFO),
# tools-log4j2.properties (CLI tools, WARN), broker.log (+ broker.log.1 from the
# previous run), broker.pid; with KAFKA_SECURE_PORT also tls/ (ca.pem, ca.key,
# server.p12, scram-password, client.properties for librdkafka, client-java.properties
# for Kafka's tools), made once and reused.
#
# Tool main classes (Kafka 4.x): org.apache.kafka.tools.TopicCommand,
# org.apache.kafka.tools.ConsoleProducer,
# org.apache.kafka.tools.consumer.ConsoleConsumer,
# org.apache.kafka.tools.ProducerPerformance, kafka.tools.StorageTool,
# org.apache.kafka.tools.BrokerApiVersionsCommand.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
POM="$REPO_ROOT/deploy/kafka/pom.xml"

KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_HOME_DIR="${KAFKA_HOME_DIR:-$REPO_ROOT/.kafka}"
KAFKA_HEAP="${KAFKA_HEAP:--Xms256m -Xmx768m}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_SECURE_PORT="${KAFKA_SECURE_PORT:-}"
KAFKA_SCRAM_USER="${KAFKA_SCRAM_USER:-clickpath}"

HOST=127.0.0.1
BOOTSTRAP="$HOST:$KAFKA_PORT"
LIBS="$KAFKA_HOME_DIR/libs"
DATA="$KAFKA_HOME_DIR/data"
MARKER="$LIBS/.installed"
PROPS="$KAFKA_HOME_DIR/server.properties"
LOG4J="$KAFKA_HOME_DIR/log4j2.properties"
TOOLS_LOG4J="$KAFKA_HOME_DIR/tools-log4j2.properties"
BROKER_LOG="$KAFKA_HOME_DIR/broker.log"
PID_FILE="$KAFKA_HOME_DIR/broker.pid"
TLS_DIR="$KAFKA_HOME_DIR/tls"
# Fixed cluster id (base64url of the 16 bytes "clickpath-local1").
CLUSTER_ID="Y2xpY2twYXRoLWxvY2FsMQ"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"
else
  JAVA="java"
fi

# JVM flags shared by the broker and the tools. Listeners are bound to
# 127.0.0.1 only and advertised as an IP (no DNS lookups of our own host name);
# Kafka has no update check or phone-home, JMX remote is not enabled.
COMMON_JVM_OPTS=(-Djava.awt.headless=true -Djava.net.preferIPv4Stack=true
                 -Dlog4j2.disable.jmx=true)
# Small, fast-starting JVM for the CLI tools.
TOOL_JVM_OPTS=(-Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
               -Dlog4j2.configurationFile="$TOOLS_LOG4J")

say() { echo "kafka.sh: $*"; }
die() { echo "kafka.sh: error: $*" >&2; exit 1; }

kafka_version() {
  sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1
}

install_stamp() {
  # The marker holds the Kafka version and the pom's hash, so editing the pom
  # (another version, another dependency) triggers a re-install.
  echo "kafka=$(kafka_version) pom-sha256=$(sha256sum "$POM" | cut -d' ' -f1)"
}

is_installed() {
  [[ -f "$MARKER" ]] && [[ "$(cat "$MARKER")" == "$(install_stamp)" ]] \
    && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null
}

require_java() {
  command -v "$JAVA" >/dev/null 2>&1 || die "java not found (Java 17+ is needed)"
  local v
  v="$("$JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')"
  [[ "${v%%.*}" =~ ^[0-9]+$ && "${v%%.*}" -ge 17 ]] \
    || die "Kafka 4.x needs Java 17+, $JAVA is Java ${v:-unknown}"
}

require_installed() {
  is_installed || die "Kafka is not installed in $LIBS; run: scripts/kafka.sh install"
}

with_lock() {
  mkdir -p "$KAFKA_HOME_DIR"
  exec 9>"$KAFKA_HOME_DIR/.lock"
  flock -w 300 9 || die "could not take $KAFKA_HOME_DIR/.lock (another kafka.sh running?)"
}

cmd_install() {
  local version
  version="$(kafka_version)"
  [[ -n "$version" ]] || die "no <kafka.version> in $POM"
  if is_installed; then
    say "Kafka $version already installed in $LIBS ($(ls "$LIBS" | wc -l) jars)"
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (Maven is needed to install Kafka)"
  require_java
  say "installing Kafka $version from Maven Central into $LIBS (mvn dependency:copy-dependencies)"
  local tmp="$KAFKA_HOME_DIR/libs.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  local mvn_log="$KAFKA_HOME_DIR/install.log"
  if ! mvn -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$mvn_log" 2>&1; then
    grep -E 'ERROR|FAIL' "$mvn_log" | head -n 40 >&2 || tail -n 40 "$mvn_log" >&2
    rm -rf "$tmp"
    die "mvn failed to resolve Kafka $version (full output: $mvn_log)"
  fi
  compgen -G "$tmp/kafka_2.13-$version.jar" >/dev/null || die "kafka_2.13-$version.jar missing after mvn"
  rm -rf "$LIBS"
  mv "$tmp" "$LIBS"
  install_stamp >"$MARKER"
  say "installed Kafka $version: $(ls "$LIBS" | wc -l) jars, $(du -sh "$LIBS" | cut -f1)"
}

write_configs() {
  mkdir -p "$KAFKA_HOME_DIR" "$DATA"
  local listeners="PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT"
  local advertised="PLAINTEXT://$HOST:$KAFKA_PORT"
  local protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  if [[ -n "$KAFKA_SECURE_PORT" ]]; then
    listeners+=",SASL_SSL://$HOST:$KAFKA_SECURE_PORT"
    advertised+=",SASL_SSL://$HOST:$KAFKA_SECURE_PORT"
    protocols+=",SASL_SSL:SASL_SSL"
  fi
  cat >"$PROPS" <<EOF
# Generated by scripts/kafka.sh on every start; edit the script, not this file.
# Single-node KRaft: this node is both broker and controller.
node.id=1
process.roles=broker,controller
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols

log.dirs=$DATA
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true

# Internal topics: one replica; fewer partitions than the defaults (50) so that
# the first consumer group / transaction does not create 50 partitions.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=5
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

group.initial.rebalance.delay.ms=0

# Compacted topics are used: keep the log cleaner on.
log.cleaner.enable=true
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=33554432

num.network.threads=2
num.io.threads=4
EOF
  if [[ -n "$KAFKA_SECURE_PORT" ]]; then
    cat >>"$PROPS" <<EOF

# SASL_SSL listener (KAFKA_SECURE_PORT): TLS with the self-signed CA in $TLS_DIR,
# clients authenticate with SCRAM-SHA-512 (user $KAFKA_SCRAM_USER, created after start).
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$TLS_DIR/server.p12
listener.name.sasl_ssl.ssl.keystore.password=$(cat "$TLS_DIR/store-password")
listener.name.sasl_ssl.ssl.key.password=$(cat "$TLS_DIR/store-password")
listener.name.sasl_ssl.ssl.client.auth=none
EOF
  fi

  cat >"$LOG4J" <<'EOF'
# Broker logging (scripts/kafka.sh): INFO to stdout (-> broker.log), chatty loggers at WARN.
status = warn
name = clickpath-kafka-broker
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
logger.netclient.name = org.apache.kafka.clients.NetworkClient
logger.netclient.level = WARN
# The full config dump (~250 lines, printed ~9 times at startup); see server.properties instead.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
EOF

  write_tools_log4j
}

write_tools_log4j() {
  mkdir -p "$KAFKA_HOME_DIR"
  cat >"$TOOLS_LOG4J" <<'EOF'
# Kafka CLI tools (scripts/kafka.sh): WARN and above, to stderr.
status = warn
name = clickpath-kafka-tools
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
EOF
}

# A self-signed CA and a server certificate for 127.0.0.1/localhost, made once
# (openssl), plus the SCRAM password and the client settings files.
make_tls() {
  if [[ -f "$TLS_DIR/server.p12" && -f "$TLS_DIR/client.properties" ]]; then
    return 0
  fi
  command -v openssl >/dev/null 2>&1 || die "openssl not found (needed for KAFKA_SECURE_PORT)"
  say "making a self-signed CA and a broker certificate in $TLS_DIR"
  rm -rf "$TLS_DIR"
  mkdir -p "$TLS_DIR"
  chmod 700 "$TLS_DIR"
  local log="$KAFKA_HOME_DIR/tls-openssl.log"
  (
    cd "$TLS_DIR"
    openssl rand -hex 16 >store-password
    openssl rand -hex 16 >scram-password
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=clickpath local test CA" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.pem
    openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name broker \
      -passout "file:store-password" -out server.p12
    rm -f server.csr server.ext ca.srl
  ) >"$log" 2>&1 || { cat "$log" >&2; die "making the TLS files failed"; }
  cat >"$TLS_DIR/client.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanisms=SCRAM-SHA-512
sasl.username=$KAFKA_SCRAM_USER
sasl.password=$(cat "$TLS_DIR/scram-password")
ssl.ca.location=$TLS_DIR/ca.pem
EOF
  cat >"$TLS_DIR/client-java.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$KAFKA_SCRAM_USER" password="$(cat "$TLS_DIR/scram-password")";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
request.timeout.ms=5000
default.api.timeout.ms=8000
EOF
  chmod 600 "$TLS_DIR"/*
}

# Creates (or re-sets) the SCRAM user through the PLAINTEXT listener, then waits
# until a client can authenticate on the SASL_SSL listener.
ensure_scram_user() {
  local out
  if ! out="$(run_tool org.apache.kafka.tools.ConfigCommand --bootstrap-server "$BOOTSTRAP" --alter \
        --add-config "SCRAM-SHA-512=[iterations=8192,password=$(cat "$TLS_DIR/scram-password")]" \
        --entity-type users --entity-name "$KAFKA_SCRAM_USER" 2>&1)"; then
    echo "$out" >&2
    die "creating SCRAM user $KAFKA_SCRAM_USER failed"
  fi
  local i
  for ((i = 0; i < 30; i++)); do
    if timeout 30 "$JAVA" "${TOOL_JVM_OPTS[@]}" "${COMMON_JVM_OPTS[@]}" -cp "$LIBS/*" \
        org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_SECURE_PORT" \
        --command-config "$TLS_DIR/client-java.properties" --list >/dev/null 2>&1; then
      say "SASL_SSL listener ready at $HOST:$KAFKA_SECURE_PORT (user $KAFKA_SCRAM_USER, CA $TLS_DIR/ca.pem)"
      return 0
    fi
    sleep 1
  done
  die "no SCRAM login on $HOST:$KAFKA_SECURE_PORT within 30 s (see $BROKER_LOG)"
}

require_secure() {
  [[ -n "$KAFKA_SECURE_PORT" ]] || die "set KAFKA_SECURE_PORT (the SASL_SSL listener is off by default)"
  [[ -f "$TLS_DIR/client.properties" ]] || die "no $TLS_DIR/client.properties; start the broker with KAFKA_SECURE_PORT set"
}

# Run a Kafka tool main class with our classpath.
run_tool() {
  local main="$1"; shift
  "$JAVA" "${TOOL_JVM_OPTS[@]}" "${COMMON_JVM_OPTS[@]}" -cp "$LIBS/*" "$main" "$@"
}

# PID from the pid file if that process is alive and is our broker, else empty.
broker_pid() {
  [[ -f "$PID_FILE" ]] || return 0
  local pid
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 0
  # Guard against PID reuse: it must be a kafka.Kafka JVM using our config.
  if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "kafka\.Kafka $PROPS"; then
    echo "$pid"
  fi
}

port_open() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# True if the broker serves metadata (lists topics) within a few seconds.
broker_answers() {
  port_open "$KAFKA_PORT" || return 1
  local cfg="$KAFKA_HOME_DIR/.probe.properties"
  printf 'request.timeout.ms=5000\ndefault.api.timeout.ms=8000\nretry.backoff.ms=200\n' >"$cfg"
  timeout 30 "$JAVA" "${TOOL_JVM_OPTS[@]}" "${COMMON_JVM_OPTS[@]}" -cp "$LIBS/*" \
    org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
    --command-config "$cfg" --list >/dev/null 2>&1
}

show_log_tail() {
  if [[ -f "$BROKER_LOG" ]]; then
    echo "---- last 60 lines of $BROKER_LOG ----" >&2
    tail -n 60 "$BROKER_LOG" >&2
    echo "---- end of $BROKER_LOG ----" >&2
  fi
}

format_storage() {
  if [[ -f "$DATA/meta.properties" ]]; then
    say "storage already formatted in $DATA (reusing it)"
    return 0
  fi
  say "formatting KRaft storage in $DATA (cluster id $CLUSTER_ID)"
  if ! run_tool kafka.tools.StorageTool format --config "$PROPS" \
        --cluster-id "$CLUSTER_ID" --ignore-formatted >"$KAFKA_HOME_DIR/format.log" 2>&1; then
    cat "$KAFKA_HOME_DIR/format.log" >&2
    die "formatting storage failed"
  fi
}

wait_ready() {
  local pid="$1" start_s="$2"
  local deadline=$((start_s + KAFKA_START_TIMEOUT))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_log_tail
      rm -f "$PID_FILE"
      die "broker process $pid exited during startup"
    fi
    if broker_answers; then
      say "ready after $((SECONDS - start_s)) s (pid $pid, log $BROKER_LOG)"
      echo "Kafka broker ready at $BOOTSTRAP"
      return 0
    fi
    if (( SECONDS >= deadline )); then
      show_log_tail
      say "broker (pid $pid) did not answer on $BOOTSTRAP within ${KAFKA_START_TIMEOUT} s; stopping it"
      cmd_stop >&2
      die "broker start timed out (raise KAFKA_START_TIMEOUT?); log kept in $BROKER_LOG"
    fi
    sleep 1
  done
}

cmd_start() {
  require_installed
  require_java
  local pid
  pid="$(broker_pid)"
  if [[ -n "$pid" ]]; then
    if [[ -n "$KAFKA_SECURE_PORT" ]] && ! grep -q "^listeners=.*SASL_SSL://$HOST:$KAFKA_SECURE_PORT" "$PROPS"; then
      die "the running broker (pid $pid) has no SASL_SSL listener on port $KAFKA_SECURE_PORT; stop it first (scripts/kafka.sh stop)"
    fi
    if broker_answers; then
      say "broker already running (pid $pid)"
      [[ -z "$KAFKA_SECURE_PORT" ]] || ensure_scram_user
      echo "Kafka broker ready at $BOOTSTRAP"
      return 0
    fi
    say "broker process $pid is running but not answering yet; waiting"
    wait_ready "$pid" "$SECONDS"
    return 0
  fi
  rm -f "$PID_FILE"
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" $KAFKA_SECURE_PORT; do
    if port_open "$p"; then
      die "port $HOST:$p is already in use by another process (not our broker); set KAFKA_PORT / KAFKA_CONTROLLER_PORT"
    fi
  done

  [[ -z "$KAFKA_SECURE_PORT" ]] || make_tls
  write_configs
  format_storage

  [[ -f "$BROKER_LOG" ]] && mv -f "$BROKER_LOG" "$BROKER_LOG.1"
  local t0=$SECONDS
  say "starting broker on $BOOTSTRAP (controller $HOST:$KAFKA_CONTROLLER_PORT, heap: $KAFKA_HEAP)"
  # shellcheck disable=SC2086  # KAFKA_HEAP is a list of flags
  setsid "$JAVA" $KAFKA_HEAP -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    "${COMMON_JVM_OPTS[@]}" -Dlog4j2.configurationFile="$LOG4J" \
    -cp "$LIBS/*" kafka.Kafka "$PROPS" \
    </dev/null >"$BROKER_LOG" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$PID_FILE"
  wait_ready "$pid" "$t0"
  [[ -z "$KAFKA_SECURE_PORT" ]] || ensure_scram_user
}

cmd_stop() {
  local pid
  pid="$(broker_pid)"
  if [[ -z "$pid" ]]; then
    rm -f "$PID_FILE"
    say "broker not running"
    return 0
  fi
  say "stopping broker (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "broker did not exit within 30 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$PID_FILE"
  say "broker stopped"
}

cmd_status() {
  local pid
  pid="$(broker_pid)"
  if [[ -z "$pid" ]]; then
    say "broker not running"
    return 1
  fi
  if ! is_installed; then
    say "broker running (pid $pid) but the install in $LIBS is incomplete"
    return 1
  fi
  if [[ -n "$KAFKA_SECURE_PORT" ]] && ! { grep -q "^listeners=.*SASL_SSL://$HOST:$KAFKA_SECURE_PORT" "$PROPS" \
        && port_open "$KAFKA_SECURE_PORT"; }; then
    say "broker running (pid $pid) but without the SASL_SSL listener on port $KAFKA_SECURE_PORT"
    return 1
  fi
  if broker_answers; then
    say "broker running (pid $pid) and answering at $BOOTSTRAP"
    return 0
  fi
  say "broker running (pid $pid) but not answering at $BOOTSTRAP"
  return 1
}

cmd_reset() {
  cmd_stop
  say "deleting $DATA"
  rm -rf "$DATA"
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    install)   with_lock; cmd_install ;;
    start)     with_lock; cmd_start ;;
    up)        with_lock; cmd_install; cmd_start ;;
    stop)      with_lock; cmd_stop ;;
    status)    cmd_status ;;
    reset)     with_lock; cmd_reset ;;
    bootstrap) echo "$BOOTSTRAP" ;;
    secure-bootstrap)  require_secure; echo "$HOST:$KAFKA_SECURE_PORT" ;;
    secure-properties) require_secure; cat "$TLS_DIR/client.properties" ;;
    topics)    require_installed; [[ -f "$TOOLS_LOG4J" ]] || write_tools_log4j
               run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" "$@" ;;
    tool)      require_installed; [[ -f "$TOOLS_LOG4J" ]] || write_tools_log4j
               [[ $# -ge 1 ]] || die "usage: kafka.sh tool MAIN_CLASS [ARGS...]"
               run_tool "$@" ;;
    ""|-h|--help|help)
               sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' ;;
    *)         die "unknown command '$cmd' (try: install start up stop status reset bootstrap secure-bootstrap secure-properties topics tool)" ;;
  esac
}

main "$@"
