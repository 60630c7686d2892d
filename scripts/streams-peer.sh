#!/usr/bin/env bash
# scripts/streams-peer.sh: clickpath's Kafka Streams peer (deploy/kafka-streams-peer), the stateful
# work a platform engineer would write with Kafka Streams instead: per-user event-time sessions and
# sliding-window counts with exactly-once. `clickpath-lab bench --kafka-streams scripts/streams-peer.sh`
# runs it on the same broker and input as clickpath's chained pipeline.
#
# Like scripts/kafka.sh for the broker: Maven fetches kafka-streams (the broker's version), Avro and
# their dependencies from Maven Central into .kafka/peer/libs (git-ignored); javac compiles the one
# source file into .kafka/peer/classes. Java 17+.
#
# Usage:
#   scripts/streams-peer.sh install     fetch + compile (idempotent; again when the pom or source change)
#   scripts/streams-peer.sh run ARGS    install, then exec the peer (ARGS: see StreamsPeer's usage;
#                                       --schema defaults to the repository's schemas/click_event.avsc)
# Env:
#   KAFKA_HOME_DIR   state directory shared with scripts/kafka.sh (default <repo>/.kafka)
#   PEER_HEAP        JVM heap flags (default "-Xms256m -Xmx1g")
#   JAVA_HOME        Java 17+ to use (else `java` and `javac` on PATH)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEER="$ROOT/deploy/kafka-streams-peer"
POM="$PEER/pom.xml"
SRC="$PEER/src/main/java/dev/clickpath/peer/StreamsPeer.java"
HOME_DIR="${KAFKA_HOME_DIR:-$ROOT/.kafka}/peer"
LIBS="$HOME_DIR/libs"
CLASSES="$HOME_DIR/classes"
MARKER="$HOME_DIR/.installed"
PEER_HEAP="${PEER_HEAP:--Xms256m -Xmx1g}"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  JAVA="$JAVA_HOME/bin/java"; JAVAC="$JAVA_HOME/bin/javac"
else
  JAVA="java"; JAVAC="javac"
fi

say() { echo "streams-peer.sh: $*" >&2; }
die() { echo "streams-peer.sh: error: $*" >&2; exit 1; }

# The jars are fetched again when the pom changes, the classes compiled again when the source changes.
pom_stamp() { sha256sum "$POM" | cut -d' ' -f1; }
src_stamp() { cat "$POM" "$SRC" | sha256sum | cut -d' ' -f1; }

cmd_install() {
  if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$(src_stamp)" ]]; then
    return 0
  fi
  command -v "$JAVAC" >/dev/null 2>&1 || die "javac not found (a JDK 17+ is needed)"
  mkdir -p "$HOME_DIR"
  exec 8>"$HOME_DIR/.lock"
  flock -w 600 8 || die "could not take $HOME_DIR/.lock"
  if [[ ! -f "$LIBS/.pom" || "$(cat "$LIBS/.pom")" != "$(pom_stamp)" ]]; then
    command -v mvn >/dev/null 2>&1 || die "mvn not found (Maven fetches kafka-streams)"
    local log="$HOME_DIR/install.log" tmp="$HOME_DIR/libs.tmp"
    rm -rf "$tmp"
    say "fetching kafka-streams and Avro from Maven Central into $LIBS"
    if ! mvn -B -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
          -DincludeScope=runtime -DoutputDirectory="$tmp" >"$log" 2>&1; then
      grep -E 'ERROR|FAIL' "$log" | head -n 40 >&2 || tail -n 40 "$log" >&2
      die "mvn failed (full output: $log)"
    fi
    pom_stamp >"$tmp/.pom"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
  fi
  say "compiling $(basename "$SRC")"
  rm -rf "$CLASSES"
  "$JAVAC" -nowarn --release 17 -cp "$LIBS/*" -d "$CLASSES" "$SRC" || die "javac failed"
  src_stamp >"$MARKER"
  say "installed: $(ls "$LIBS" | wc -l) jars, $(du -sh "$LIBS" | cut -f1)"
}

case "${1:-}" in
  install) cmd_install ;;
  run)
    shift
    cmd_install
    # shellcheck disable=SC2086
    exec "$JAVA" $PEER_HEAP -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
      -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -Dorg.slf4j.simpleLogger.logFile=System.err \
      -cp "$CLASSES:$LIBS/*" dev.clickpath.peer.StreamsPeer \
      --schema "$ROOT/schemas/click_event.avsc" "$@"
    ;;
  *) die "usage: scripts/streams-peer.sh install | run ARGS" ;;
esac
