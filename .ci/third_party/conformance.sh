#!/usr/bin/env bash
# Runs every server scenario of the MCP conformance suite (pinned in
# .ci/third_party/npm/) against the server under test over Streamable HTTP, one
# scenario at a time, and compares each outcome with
# .ci/third_party/conformance-baseline.txt (expected failures, one line each:
# `scenario-name  # reason`).
#
# Then a second pass: the tasks-* scenarios of the run again, against
# .ci/third_party/tasks_fixtures_server.py (the suite's tasks fixture tools served through
# kimi-mcp's own TasksExtension and Tasks), compared with conformance-tasks-baseline.txt under the
# same rules. Its lines read "ok: [tasks fixtures] ..."; the closing line counts both passes.
#
#   bash .ci/third_party/conformance.sh                      # real server: $KIMI_MCP_PY -m kimi_mcp
#   KIMI_MCP_STANDIN=1 bash .ci/third_party/conformance.sh   # the stand-in
#   KIMI_MCP_STANDIN=tasks bash .ci/third_party/conformance.sh  # only the tasks pass
#   bash .ci/third_party/conformance.sh --draft-baseline     # print a draft baseline of today's failures
#
# It fails on (a) a scenario that fails but is not in the baseline, (b) a
# baseline entry whose scenario now passes (remove the line: the baseline must
# stay honest), (c) a baseline line without a reason, or naming a scenario the
# suite does not have. Each scenario prints one line "ok: ..." or "FAIL: ...".
#
# Environment:
#   KIMI_MCP_PY, KIMI_MCP_STANDIN   as for inspector.sh (see lib.sh); KIMI_MCP_STANDIN=tasks runs the
#                             tasks-* scenarios (only) against tasks_fixtures_server.py, with the tasks baseline
#   FAKE_URL                  upstream base URL handed to the server (default http://127.0.0.1:9,
#                             where nothing listens: the scenarios never need the upstream)
#   CONFORMANCE_SCENARIOS     run only these (space-separated); baseline checks apply to them only
#   CONFORMANCE_SCENARIO_TIMEOUT  seconds per scenario (default 60; the suite's own --timeout is 30 s)
#   CONFORMANCE_TOTAL_TIMEOUT     seconds for the whole script (default 1800)
#   CONFORMANCE_BASELINE      baseline file (default .ci/third_party/conformance-baseline.txt;
#                             with KIMI_MCP_STANDIN=tasks, conformance-tasks-baseline.txt)
#   CONFORMANCE_TASKS_PASS    0 = skip the second pass (default 1)
#   CONFORMANCE_TASKS_BASELINE  the second pass's baseline (default .ci/third_party/conformance-tasks-baseline.txt)
#   THIRD_PARTY_LOG_DIR       keep each scenario's output and checks.json there
set -uo pipefail

if [ -z "${_KIMI_3P_BOUNDED:-}" ]; then
  export _KIMI_3P_BOUNDED=1
  exec timeout -k 15 "${CONFORMANCE_TOTAL_TIMEOUT:-1800}" bash "$0" "$@"
fi

# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

TASKS_BASELINE="${CONFORMANCE_TASKS_BASELINE:-$TP_DIR/conformance-tasks-baseline.txt}"
if [ "$KIMI_MCP_STANDIN" = tasks ]; then
  BASELINE="${CONFORMANCE_BASELINE:-$TASKS_BASELINE}" TAG="[tasks fixtures] "
else
  BASELINE="${CONFORMANCE_BASELINE:-$TP_DIR/conformance-baseline.txt}" TAG=
fi
SCEN_TIMEOUT="${CONFORMANCE_SCENARIO_TIMEOUT:-60}"
SUITE_TIMEOUT_MS=$(( (SCEN_TIMEOUT > 40 ? 30 : SCEN_TIMEOUT * 2 / 3) * 1000 ))
DRAFT=0
case "${1:-}" in
  "") ;;
  --draft-baseline) DRAFT=1 ;;
  *) log "usage: $0 [--draft-baseline]"; exit 2 ;;
esac

PASSED=0 FAILED=0 XFAILED=0
SERVER_PID=
ok()   { PASSED=$((PASSED + 1)); printf 'ok: %s%s\n' "$TAG" "$*"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL: %s%s\n' "$TAG" "$*"; }

# The second pass's directory is inside the first's, which its caller keeps or removes.
on_exit() { local rc=$?; stop_server; [ -n "${_KIMI_CONF_COUNTS:-}" ] || cleanup_workdir "$rc"; }
trap on_exit EXIT
trap 'exit 130' INT
trap 'echo "FAIL: stopped by SIGTERM (the CONFORMANCE_TOTAL_TIMEOUT limit, default 1800 s, or a caller)"; exit 124' TERM

# failed_checks CHECKS_JSON -> "id: message" for each FAILURE, one per line
failed_checks() {
  if [ "$JSON_TOOL" = jq ]; then
    jq -r '.[] | select(.status == "FAILURE") | "\(.id): \(.errorMessage // .description)"' "$1" 2>/dev/null
  else
    "$KIMI_MCP_PY" -c 'import json, sys
for c in json.load(open(sys.argv[1])):
    if c.get("status") == "FAILURE":
        print("%s: %s" % (c.get("id"), c.get("errorMessage") or c.get("description")))' "$1" 2>/dev/null
  fi
}

# ---------------------------------------------------------------- baseline

declare -A REASON=()
declare -a BASELINE_ORDER=()
read_baseline() {
  local n=0 line name reason bad=0
  [ -f "$BASELINE" ] || { log "no baseline file at $BASELINE (every failure will be unexpected)"; return 0; }
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line="${line%$'\r'}"
    [[ "$line" =~ ^[[:space:]]*(#.*)?$ ]] && continue
    if [[ "$line" =~ ^[[:space:]]*([A-Za-z0-9._/-]+)[[:space:]]+#[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]]; then
      name="${BASH_REMATCH[1]}" reason="${BASH_REMATCH[2]}"
      if [ -n "${REASON[$name]+x}" ]; then
        fail "baseline line $n: '$name' is listed twice"; bad=1; continue
      fi
      REASON[$name]="$reason"; BASELINE_ORDER+=("$name")
    else
      fail "baseline line $n has no '# reason' (every expected failure needs one): $line"; bad=1
    fi
  done <"$BASELINE"
  return $bad
}

# ---------------------------------------------------------------- server

SERVER_LOG=
start_server() {
  PORT="$(free_port)"
  URL="http://127.0.0.1:$PORT/mcp"
  SERVER_LOG="$WORK/server-$PORT.log"
  start_http_server "$PORT" "$SERVER_LOG" \
      ACEDATACLOUD_API_BASE_URL="${FAKE_URL:-http://127.0.0.1:9}" ACEDATACLOUD_API_TOKEN="$TEST_TOKEN"
}

# ---------------------------------------------------------------- main

make_workdir
ensure_tools || exit 1
server_cmd
read_baseline

mapfile -t ALL < <("$NODE22" "$CONFORMANCE_JS" list --server 2>"$WORK/list.err" | sed -n 's/^  - \([^ ]*\).*/\1/p')
if [ "${#ALL[@]}" = 0 ]; then
  fail "\`conformance list --server\` named no scenarios: $(tail -c 300 "$WORK/list.err")"
  echo "conformance: $PASSED passed, $FAILED failed"; exit 1
fi
declare -A KNOWN=()
for s in "${ALL[@]}"; do KNOWN[$s]=1; done
for s in "${BASELINE_ORDER[@]}"; do
  [ -n "${KNOWN[$s]+x}" ] || fail "baseline names '$s', which the conformance suite does not have (renamed or removed?): delete or rename its line in $BASELINE"
done

if [ -n "${CONFORMANCE_SCENARIOS:-}" ]; then
  read -r -a SCENARIOS <<<"$CONFORMANCE_SCENARIOS"
  for s in "${SCENARIOS[@]}"; do [ -n "${KNOWN[$s]+x}" ] || fail "CONFORMANCE_SCENARIOS names unknown scenario '$s'"; done
elif [ "$KIMI_MCP_STANDIN" = tasks ]; then
  SCENARIOS=(); for s in "${ALL[@]}"; do [[ "$s" == tasks-* ]] && SCENARIOS+=("$s"); done
else
  SCENARIOS=("${ALL[@]}")
fi

log "conformance.sh: server under test: $SERVER_LABEL; ${#SCENARIOS[@]} scenarios, ${SCEN_TIMEOUT}s each at most; baseline $BASELINE (${#BASELINE_ORDER[@]} entries); logs in $WORK"
start_server || { fail "the server did not start over Streamable HTTP"; echo "conformance: $PASSED passed, $FAILED failed"; exit 1; }
log "server listening at $URL (pid $SERVER_PID)"

declare -a DRAFT_LINES=()
started=$SECONDS
for s in "${SCENARIOS[@]}"; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    fail "the server had exited before scenario '$s' (log tail: $(tail -c 300 "$SERVER_LOG" | tr '\n' ' ')); restarting it"
    SERVER_PID=
    start_server || { fail "the server did not restart"; break; }
  fi
  out="$WORK/$s.txt"; res="$WORK/results/$s"; mkdir -p "$res"
  t0=$(date +%s%N)
  timeout -k 5 "$SCEN_TIMEOUT" "$NODE22" "$CONFORMANCE_JS" server --url "$URL" --scenario "$s" \
      --timeout "$SUITE_TIMEOUT_MS" -o "$res" >"$out" 2>&1
  rc=$?
  took="$(( ($(date +%s%N) - t0) / 100000000 ))"; took="$((took / 10)).$((took % 10))s"
  checks="$(find "$res" -name checks.json -print -quit)"
  if [ "$rc" = 0 ]; then
    if [ -n "${REASON[$s]+x}" ]; then
      fail "$s now PASSES but the baseline lists it as an expected failure ('${REASON[$s]}'): delete its line from $BASELINE"
    else
      ok "$s ($took)"
    fi
    continue
  fi
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    fail "$s timed out after ${SCEN_TIMEOUT}s (a hang is never an expected failure, baseline or not)"
    DRAFT_LINES+=("$s  # TODO: timed out after ${SCEN_TIMEOUT}s")
    continue
  elif [ -n "$checks" ]; then
    detail="$(failed_checks "$checks" | head -n 5 | cut -c1-300 | paste -sd '|' - | sed 's/|/ | /g')"
  else
    detail="exit $rc: $(sed 's/\x1b\[[0-9;]*m//g' "$out" | tail -n 3 | tr '\n' ' ' | cut -c1-300)"
  fi
  DRAFT_LINES+=("$s  # TODO reason (read the scenario's source); today: ${detail%% | *}")
  if [ -n "${REASON[$s]+x}" ]; then
    XFAILED=$((XFAILED + 1))
    printf 'ok: %s%s fails as expected, %s (%s)\n' "$TAG" "$s" "$took" "${REASON[$s]}"
  else
    fail "$s failed ($took) and is not in the baseline: ${detail:-exit $rc}"
    sed 's/\x1b\[[0-9;]*m//g' "$out" | sed -n '/=== Failed Checks ===/,$p' | head -n 25 | sed 's/^/    /'
  fi
done
log "ran ${#SCENARIOS[@]} scenarios in $((SECONDS - started))s"

if [ "$DRAFT" = 1 ]; then
  log "draft of $BASELINE, today's failures (write a real reason for each before committing):"
  printf '%s\n' "${DRAFT_LINES[@]}" >&2
fi

echo "conformance: ${TAG}$PASSED scenarios pass, $XFAILED fail as the baseline expects, $FAILED problems"

if [ -n "${_KIMI_CONF_COUNTS:-}" ]; then  # the second pass of a run: its caller counts and closes
  echo "$PASSED $XFAILED $FAILED" >"$_KIMI_CONF_COUNTS"
  [ "$FAILED" = 0 ]; exit
fi

# ---------------------------------------------------------------- second pass: the tasks fixtures

TASKS_SCENARIOS=()
for s in "${SCENARIOS[@]}"; do [[ "$s" == tasks-* ]] && TASKS_SCENARIOS+=("$s"); done
if [ "$KIMI_MCP_STANDIN" != tasks ] && [ "${CONFORMANCE_TASKS_PASS:-1}" != 0 ] && [ "${#TASKS_SCENARIOS[@]}" -gt 0 ]; then
  stop_server
  log "second pass: ${#TASKS_SCENARIOS[@]} tasks-* scenarios against .ci/third_party/tasks_fixtures_server.py (the suite's fixture tools over kimi-mcp's tasks); baseline $TASKS_BASELINE"
  counts="$WORK/tasks-pass.counts"; rm -f "$counts"
  KIMI_MCP_STANDIN=tasks CONFORMANCE_BASELINE="$TASKS_BASELINE" CONFORMANCE_SCENARIOS="${TASKS_SCENARIOS[*]}" \
      THIRD_PARTY_LOG_DIR="$WORK/tasks-fixtures" _KIMI_CONF_COUNTS="$counts" bash "$0" "$@"
  rc=$?
  if read -r p x f <"$counts" 2>/dev/null; then
    PASSED=$((PASSED + p)) XFAILED=$((XFAILED + x)) FAILED=$((FAILED + f))
  else
    fail "the tasks pass ended (exit $rc) without reporting its counts; its logs are in $WORK/tasks-fixtures"
  fi
fi

# Closing line (both passes): "passed" = outcomes that match the baselines, "failed" = problems.
echo "conformance: $((PASSED + XFAILED)) passed, $FAILED failed"
[ "$FAILED" = 0 ]
