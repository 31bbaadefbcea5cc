#!/usr/bin/env bash
# shellcheck disable=SC2016  # jq filters are single-quoted on purpose
# Drives the server under test with the official MCP Inspector CLI (a Node 22
# client, pinned in .ci/third_party/npm/) over stdio and over Streamable HTTP,
# in the legacy (initialize handshake) and modern (2026-07-28, stateless) eras.
#
#   bash .ci/third_party/inspector.sh                      # real server: $KIMI_MCP_PY -m kimi_mcp
#   KIMI_MCP_STANDIN=1 bash .ci/third_party/inspector.sh   # the stand-in, answering locally
#
# For every transport x era it checks: tools/list --strict finds no
# error-severity tool-schema portability problem; it lists kimi_chat and kimi_json
# (each with a description); resources/read kimi://models gives JSON;
# tools/call kimi_chat and kimi_json succeed; after an injected upstream 429,
# tools/call kimi_chat is an isError result (Inspector exit code 5) whose
# structured content, if any, carries kind "rate_limited". Last, the fake API
# token must not appear in anything the clients or the server printed.
# Each check prints one line "ok: ...", "FAIL: ..." or "SKIP: ..."; the exit
# code is non-zero when any check failed.
#
# Environment:
#   KIMI_MCP_PY        python that has kimi_mcp (default .venv/bin/python, else python3)
#   FAKE_URL           base URL of a running fake Ace API (tests/support/fake_ace.py). When unset and
#                      the server needs one, this script starts `tests/support/fake_ace.py --port 0` itself.
#   KIMI_MCP_STANDIN   1: test .ci/third_party/standin_server.py (no upstream; the 429
#                      injection is SKIPped and a stand-in-only error prompt is used instead);
#                      upstream: the stand-in answering through the fake Ace API.
#   INSPECTOR_TRANSPORTS  default "stdio http";  INSPECTOR_ERAS  default "legacy modern"
#   INSPECTOR_CALL_TIMEOUT  seconds per Inspector run (default 60)
#   INSPECTOR_TOTAL_TIMEOUT seconds for the whole script (default 900)
#   FAKE_429_COUNT     how many 429 answers to queue before the error check (default 4: kimi_mcp
#                      retries a 429 up to KIMI_MAX_RETRIES=3 times, so 1 + 3 answers are needed
#                      before the error reaches the client); the fake's queue is reset right after.
#   THIRD_PARTY_LOG_DIR  keep every Inspector output and server log there
set -uo pipefail

if [ -z "${_KIMI_3P_BOUNDED:-}" ]; then
  export _KIMI_3P_BOUNDED=1
  exec timeout -k 15 "${INSPECTOR_TOTAL_TIMEOUT:-900}" bash "$0" "$@"
fi

# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

TRANSPORTS="${INSPECTOR_TRANSPORTS:-stdio http}"
ERAS="${INSPECTOR_ERAS:-legacy modern}"
CALL_TIMEOUT="${INSPECTOR_CALL_TIMEOUT:-60}"
FAKE_429_COUNT="${FAKE_429_COUNT:-4}"
PASSED=0 FAILED=0 SKIPPED=0
SERVER_PID='' FAKE_PID=''

ok()   { PASSED=$((PASSED + 1));   printf 'ok: %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1));   printf 'FAIL: %s\n' "$*"; }
skip() { SKIPPED=$((SKIPPED + 1)); printf 'SKIP: %s\n' "$*"; }

on_exit() {
  local rc=$?
  stop_server
  if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null; wait "$FAKE_PID" 2>/dev/null; fi
  cleanup_workdir "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'echo "FAIL: stopped by SIGTERM (the INSPECTOR_TOTAL_TIMEOUT limit, default 900 s, or a caller)"; exit 124' TERM

# ---------------------------------------------------------------- the fake Ace API

start_fake() {
  if [ ! -f "$ROOT/tests/support/fake_ace.py" ]; then
    fail "FAKE_URL is unset and tests/support/fake_ace.py does not exist (set KIMI_MCP_STANDIN=1 to test the stand-in)"
    return 1
  fi
  "$KIMI_MCP_PY" "$ROOT/tests/support/fake_ace.py" --port 0 >"$WORK/fake.out" 2>"$WORK/fake.err" &
  FAKE_PID=$!
  local deadline=$((SECONDS + 20))
  while [ $SECONDS -lt $deadline ] && ! [ -s "$WORK/fake.out" ]; do
    kill -0 "$FAKE_PID" 2>/dev/null || break
    sleep 0.1
  done
  FAKE_URL="$(head -n 1 "$WORK/fake.out" 2>/dev/null)"
  if [ -z "$FAKE_URL" ]; then
    fail "tests/support/fake_ace.py --port 0 printed no URL within 20s: $(tail -c 400 "$WORK/fake.err")"
    return 1
  fi
  log "started the fake Ace API at $FAKE_URL (pid $FAKE_PID)"
}

# POST a JSON body to the fake's control API: fake_post PATH JSON
fake_post() {
  "$KIMI_MCP_PY" - "$FAKE_URL$1" "$2" <<'PY'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method="POST",
                             headers={"content-type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as resp:
    sys.stdout.write(resp.read().decode())
PY
}

# The one place that knows how the fake is told to answer 429. Keep it small:
# the fake's script format may still change.
inject_rate_limit() {
  local one='{"kind": "ace_error", "status": 429, "code": "too_many_requests", "message": "You have exceeded the rate limit."}'
  local list="$one" i
  for ((i = 1; i < FAKE_429_COUNT; i++)); do list="$list, $one"; done
  fake_post /_fake/script "{\"responses\": [$list]}" >/dev/null
}
reset_fake() { fake_post /_fake/reset '{}' >/dev/null; }

# ---------------------------------------------------------------- Inspector runs

# inspect NAME TRANSPORT ERA INSPECTOR-ARGS... -> sets RC, OUT, ERR
inspect() {
  local name="$1" transport="$2" era="$3"; shift 3
  OUT="$WORK/$transport-$era-$name.out"; ERR="$WORK/$transport-$era-$name.err"
  local -a target
  if [ "$transport" = stdio ]; then
    # The Inspector's stdio child sees only HOME, LOGNAME, PATH, SHELL, TERM, USER
    # plus what -e gives it, so the server's configuration must go through -e.
    # KIMI_STORE=memory: CI never writes conversations into the user's real data directory.
    target=(-e "ACEDATACLOUD_API_BASE_URL=$UPSTREAM_URL" -e "ACEDATACLOUD_API_TOKEN=$TEST_TOKEN"
            -e "KIMI_STORE=memory" "$@" -- "${SERVER_CMD[@]}")
  else
    target=(--transport http --server-url "$HTTP_URL" "$@")
  fi
  # MCP_STORAGE_DIR keeps the Inspector's state (it creates a storage dir) out of $HOME.
  (cd "$ROOT" && MCP_STORAGE_DIR="$WORK/inspector-storage" \
      timeout -k 5 "$CALL_TIMEOUT" "$NODE22" "$INSPECTOR_JS" --cli --format json \
      --protocol-era "$era" "${target[@]}") >"$OUT" 2>"$ERR"
  RC=$?
}

# A short excerpt of what the last run printed, for FAIL lines.
why() {
  local s; s="exit $RC; stdout: $(head -c 300 "$OUT" | tr '\n' ' '); stderr: $(tail -c 300 "$ERR" | tr '\n' ' ')"
  [ "$RC" = 124 ] && s="timed out after ${CALL_TIMEOUT}s; $s"
  printf '%s' "$s"
}

run_checks() { # TRANSPORT ERA
  local t="$1" e="$2" p="[$1/$2]"

  # --strict: the Inspector lints the tool schemas for portability across hosts
  # and exits 6 when it finds an error-severity problem (warnings only print).
  inspect tools-list "$t" "$e" --method tools/list --strict
  local lint; lint="$(grep -E '^[0-9]+ errors?, [0-9]+ warnings?' "$ERR" | tail -n 1)"
  if [ "$RC" = 0 ]; then
    ok "$p tools/list --strict: no tool-schema portability errors (${lint:-0 errors, 0 warnings})"
  elif [ "$RC" = 6 ]; then
    fail "$p tools/list --strict: tool-schema portability errors (${lint:-?}); details in the Inspector's stderr: $(grep -A3 '^Error' "$ERR" | head -n 8 | tr '\n' ' ' | cut -c1-400)"
    RC=0   # the listing itself is fine; check it below
  fi
  if [ "$RC" = 0 ] && json_test "$OUT" \
      '[.result.tools[].name] as $n | ($n | index("kimi_chat")) != null and ($n | index("kimi_json")) != null' \
      '{"kimi_chat", "kimi_json"} <= {t["name"] for t in r["result"]["tools"]}'; then
    ok "$p tools/list lists kimi_chat and kimi_json"
  else
    fail "$p tools/list lists kimi_chat and kimi_json ($(why))"
  fi
  if [ "$RC" = 0 ] && json_test "$OUT" \
      '.result.tools | length > 0 and all(.[]; (.description // "") | length > 0)' \
      'r["result"]["tools"] and all(t.get("description") for t in r["result"]["tools"])'; then
    ok "$p every tool has a description"
  else
    fail "$p every tool has a description ($(why))"
  fi

  inspect resources-read "$t" "$e" --method resources/read --uri kimi://models
  if [ "$RC" = 0 ] && json_test "$OUT" \
      '.result.contents[0] | .uri == "kimi://models" and .mimeType == "application/json" and (.text | fromjson | true)' \
      'r["result"]["contents"][0]["uri"] == "kimi://models" and r["result"]["contents"][0]["mimeType"] == "application/json" and parses(r["result"]["contents"][0]["text"])'; then
    ok "$p resources/read kimi://models gives application/json that parses"
  else
    fail "$p resources/read kimi://models gives application/json that parses ($(why))"
  fi

  inspect call-chat "$t" "$e" --method tools/call --tool-name kimi_chat \
      --tool-args-json '{"prompt": "Say hello in one word."}'
  if [ "$RC" = 0 ] && json_test "$OUT" \
      '.result.isError != true and ([.result.content[] | select(.type == "text") | .text | length > 0] | any)' \
      'not r["result"].get("isError") and any(c.get("type") == "text" and c.get("text") for c in r["result"]["content"])'; then
    ok "$p tools/call kimi_chat answers with text"
  else
    fail "$p tools/call kimi_chat answers with text ($(why))"
  fi

  inspect call-json "$t" "$e" --method tools/call --tool-name kimi_json \
      --tool-args-json '{"prompt": "Give a JSON object with a key \"answer\" saying hello."}'
  if [ "$RC" = 0 ] && json_test "$OUT" \
      '.result.isError != true and ((.result.structuredContent | type) == "object" or (.result.content[0].text | fromjson | type) == "object")' \
      'not r["result"].get("isError") and (isinstance(r["result"].get("structuredContent"), dict) or isinstance(json.loads(r["result"]["content"][0]["text"]), dict))'; then
    ok "$p tools/call kimi_json answers with a JSON object"
  else
    fail "$p tools/call kimi_json answers with a JSON object ($(why))"
  fi

  local prompt="Say hello." what="after an injected upstream 429"
  if [ "$KIMI_MCP_STANDIN" = 1 ]; then
    skip "$p 429 injection: the stand-in has no upstream (checking the stand-in's own rate_limited error instead)"
    prompt="__rate_limited__ (stand-in only)"; what="for the stand-in's rate-limit prompt"
  elif ! inject_rate_limit; then
    fail "$p could not queue a 429 at $FAKE_URL/_fake/script"; return
  fi
  inspect call-429 "$t" "$e" --method tools/call --tool-name kimi_chat \
      --tool-args-json "{\"prompt\": \"$prompt\"}"
  [ "$KIMI_MCP_STANDIN" = 1 ] || reset_fake || log "warning: POST $FAKE_URL/_fake/reset failed"
  if [ "$RC" = 5 ] && json_test "$OUT" \
      '.result.isError == true and (.result.structuredContent == null or ([.result.structuredContent | .. | objects | .kind? // empty] | index("rate_limited")) != null)' \
      'r["result"].get("isError") is True and (r["result"].get("structuredContent") is None or "rate_limited" in kinds(r["result"]["structuredContent"]))'; then
    if json_test "$OUT" '.result.structuredContent != null' 'r["result"].get("structuredContent") is not None'; then
      ok "$p tools/call kimi_chat $what: isError (exit 5), structured kind rate_limited"
    else
      ok "$p tools/call kimi_chat $what: isError (exit 5); no structured content to check"
    fi
  elif [ "$RC" = 1 ] && grep -q 'must have required property\|must NOT have additional properties\|must be ' "$ERR"; then
    # Inspector 2.12.0 checks structuredContent against the tool's outputSchema
    # even on isError results (the TypeScript SDK client does not), and turns a
    # mismatch into a usage error (exit 1) instead of exit 5.
    fail "$p tools/call kimi_chat $what: the Inspector rejected the error result because its structuredContent does not match the tool's outputSchema (it validates even when isError is true): $(tail -c 300 "$ERR" | tr '\n' ' ')"
  else
    fail "$p tools/call kimi_chat $what: want exit 5, isError and kind rate_limited ($(why))"
  fi
}

# ---------------------------------------------------------------- main

make_workdir
ensure_tools || exit 1
server_cmd
log "inspector.sh: server under test: $SERVER_LABEL; transports: $TRANSPORTS; eras: $ERAS; JSON checks with $JSON_TOOL; logs in $WORK"

if [ "$KIMI_MCP_STANDIN" = 1 ]; then
  UPSTREAM_URL="${FAKE_URL:-http://127.0.0.1:9}"   # never contacted by the stand-in
else
  if [ -z "${FAKE_URL:-}" ]; then start_fake || exit 1; fi
  UPSTREAM_URL="$FAKE_URL"
fi

for t in $TRANSPORTS; do
  case "$t" in
    stdio) for e in $ERAS; do run_checks stdio "$e"; done ;;
    http)
      port="$(free_port)"
      HTTP_URL="http://127.0.0.1:$port/mcp"
      if start_http_server "$port" "$WORK/http-server.log" \
          ACEDATACLOUD_API_BASE_URL="$UPSTREAM_URL" ACEDATACLOUD_API_TOKEN="$TEST_TOKEN"; then
        log "server listening at $HTTP_URL (pid $SERVER_PID)"
        for e in $ERAS; do run_checks http "$e"; done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
          ok "[http] the server is still running after all calls"
        else
          fail "[http] the server exited during the run: $(tail -c 400 "$WORK/http-server.log")"
        fi
        stop_server
      else
        fail "[http] server did not start: $(tail -c 400 "$WORK/http-server.log")"
      fi ;;
    *) fail "unknown transport '$t' in INSPECTOR_TRANSPORTS" ;;
  esac
done

# The token is fake, but a real one would be just as visible: nothing the
# clients or the server printed may contain it.
leaks="$(grep -lF -- "$TEST_TOKEN" "$WORK"/*.out "$WORK"/*.err "$WORK"/*.log 2>/dev/null | grep -v '/fake\.' || true)"
if [ -z "$leaks" ]; then
  ok "the API token appears in no client output or server log"
else
  fail "the API token appears in: $(printf '%s' "$leaks" | tr '\n' ' ')"
fi

echo "inspector: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ "$FAILED" = 0 ]
