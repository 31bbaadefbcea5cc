#!/usr/bin/env bash
# Drives the server with two agent frameworks' own MCP clients, pinned, with no LLM:
# pydantic-ai (pydantic-ai-slim[mcp]) and openai-agents. Both start `$KIMI_MCP_PY -m kimi_mcp`
# over stdio, list the tools as the framework presents them to a model (openai-agents: strict
# schemas for kimi_chat and kimi_json, descriptions <= 1024 chars), and let a scripted stand-in
# model call kimi_chat and kimi_json (schema as a JSON string) through the framework's agent
# loop, checking what the model gets back. Details: frameworks/check_frameworks.py.
#
#   bash .ci/third_party/frameworks.sh
#
# The frameworks install into their own venv, .ci/.frameworks-venv (gitignored), from the exact
# pins in frameworks/requirements.txt; they may need another `mcp` than the project, and are
# only clients. pip runs again only when requirements.txt changed since the last install.
# The upstream is tests/support/fake_ace.py, which check_frameworks.py starts on a loopback port.
#
# Environment:
#   KIMI_MCP_PY                python that has kimi_mcp (default .venv/bin/python, else python3)
#   FRAMEWORKS_PYTHON          python used to create the venv (default python3; must be 3.11+)
#   FRAMEWORKS_INSTALL_TIMEOUT seconds for the pip step (default 600)
#   FRAMEWORKS_CHECK_TIMEOUT   seconds for check_frameworks.py (default 170)
#   FRAMEWORKS_TOTAL_TIMEOUT   seconds for the whole script (default 900)
#   FRAMEWORKS_STEP_TIMEOUT, FRAMEWORKS_RUN_TIMEOUT, FRAMEWORKS_ONLY: see check_frameworks.py
#   THIRD_PARTY_LOG_DIR        keep the pip, server and fake logs there
set -uo pipefail

if [ -z "${_KIMI_3P_FW_BOUNDED:-}" ]; then
  export _KIMI_3P_FW_BOUNDED=1
  exec timeout -k 15 "${FRAMEWORKS_TOTAL_TIMEOUT:-900}" bash "$0" "$@"
fi

# shellcheck source=lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

FW_DIR="$TP_DIR/frameworks"
VENV="$ROOT/.ci/.frameworks-venv"
REQS="$FW_DIR/requirements.txt"
STAMP="$VENV/.requirements.sha256"

on_exit() { cleanup_workdir "$1"; }
trap 'on_exit $?' EXIT
trap 'exit 130' INT
trap 'echo "FAIL: stopped by SIGTERM (the FRAMEWORKS_TOTAL_TIMEOUT limit, default 900 s, or a caller)"; exit 124' TERM

make_workdir

install_frameworks() {
  local want have=''
  want="$(sha256sum "$REQS" | cut -d' ' -f1)"
  if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    log "creating $VENV"
    rm -rf "$VENV"
    "${FRAMEWORKS_PYTHON:-python3}" -m venv "$VENV" || { log "FAIL: could not create $VENV"; return 1; }
  fi
  [ -f "$STAMP" ] && have="$(cat "$STAMP")"
  if [ "$want" = "$have" ]; then return 0; fi
  log "installing the pinned frameworks into $VENV (pip log: $WORK/pip.log)"
  rm -f "$STAMP"
  if ! timeout -k 5 "${FRAMEWORKS_INSTALL_TIMEOUT:-600}" \
      "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" >"$WORK/pip.log" 2>&1; then
    log "FAIL: pip install -r $REQS failed; the end of its log:"; grep -v 'is ignored: it is neither' "$WORK/pip.log" | tail -n 30 >&2
    return 1
  fi
  if ! "$VENV/bin/python" -m pip check >>"$WORK/pip.log" 2>&1; then
    log "FAIL: pip check found broken requirements in $VENV:"; tail -n 10 "$WORK/pip.log" >&2
    return 1
  fi
  printf '%s\n' "$want" >"$STAMP"
}

install_frameworks || exit 1
log "frameworks.sh: server under test: $KIMI_MCP_PY -m kimi_mcp; clients from $VENV; logs in $WORK"

cd "$ROOT" || exit 1
KIMI_MCP_PY="$KIMI_MCP_PY" FRAMEWORKS_LOG_DIR="$WORK" \
  timeout -k 10 "${FRAMEWORKS_CHECK_TIMEOUT:-170}" "$VENV/bin/python" "$FW_DIR/check_frameworks.py"
rc=$?
[ "$rc" = 124 ] && echo "FAIL: check_frameworks.py did not finish within ${FRAMEWORKS_CHECK_TIMEOUT:-170} s"
exit "$rc"
