#!/usr/bin/env bash
# CI: a private PostgreSQL for the store tests, started the way tests/support/postgres.py starts its
# own: initdb in a temporary directory, trust authentication, 127.0.0.1 and a free port only, no
# fsync (throwaway data), run as the `postgres` user when we are root (initdb refuses root).
#
#   eval "$(bash .ci/postgres.sh start)"   # prints: export KIMI_TEST_POSTGRES_URL=... KIMI_TEST_POSTGRES_DIR=...
#   bash .ci/postgres.sh stop "$KIMI_TEST_POSTGRES_DIR"   # stops it and removes the directory
#
# Only the export lines go to stdout; progress and errors go to stderr. The binaries come from
# KIMI_TEST_POSTGRES_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH.
set -euo pipefail

find_bindir() {
  if [[ -n "${KIMI_TEST_POSTGRES_BIN:-}" ]]; then
    echo "$KIMI_TEST_POSTGRES_BIN"; return
  fi
  local newest
  newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n "$newest" ]]; then
    echo "$newest"
  elif command -v pg_ctl >/dev/null; then
    dirname "$(command -v pg_ctl)"
  else
    echo "postgres.sh: no PostgreSQL server binaries (initdb, pg_ctl) found; set KIMI_TEST_POSTGRES_BIN" >&2
    return 1
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  local bindir dir port as_user=()
  bindir=$(find_bindir)
  dir=$(mktemp -d /tmp/kimi-mcp-ci-pg-XXXXXX)
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres:postgres "$dir"
    as_user=(runuser -u postgres --)
  fi
  ${as_user[@]+"${as_user[@]}"} "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
    --no-sync --no-instructions >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
  local attempt
  for attempt in 1 2 3; do
    port=$(free_port)
    if (cd "$dir" && ${as_user[@]+"${as_user[@]}"} "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
          -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
          start >&2); then
      echo "export KIMI_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$port/postgres"
      echo "export KIMI_TEST_POSTGRES_DIR=$dir"
      return 0
    fi
    echo "postgres.sh: start on port $port failed (attempt $attempt)" >&2
  done
  tail -n 40 "$dir/server.log" >&2 || true
  return 1
}

stop() {
  local dir=${1:?usage: postgres.sh stop DIR} bindir as_user=()
  bindir=$(find_bindir)
  if [[ $(id -u) -eq 0 ]]; then as_user=(runuser -u postgres --); fi
  if [[ -f "$dir/data/postmaster.pid" ]]; then
    (cd "$dir" && ${as_user[@]+"${as_user[@]}"} "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >&2) || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
