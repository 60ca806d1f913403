#!/usr/bin/env bash
# Packages the extension for one platform: scripts/package-vsix.sh <target> [out.vsix]
# target: linux-x64 (default), linux-arm64, darwin-arm64, darwin-x64, win32-x64, win32-arm64.
# The VSIX carries the bundles, the launcher, the default model and only that platform's
# onnxruntime binaries: the ignore file is .vscodeignore plus "drop every other platform".
# Needs only `npm install`: vsce is a devDependency and runs on the same Node as the build.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${1:-linux-x64}"
VSIX="${2:-panorama-$TARGET.vsix}"
case "$TARGET" in
  linux-x64|linux-arm64|darwin-arm64|darwin-x64|win32-x64|win32-arm64) ;;
  *) echo "unsupported target: $TARGET" >&2; exit 2 ;;
esac
OS="${TARGET%-*}"; ARCH="${TARGET#*-}"
VSCE=node_modules/.bin/vsce
[ -x "$VSCE" ] || { echo "vsce is missing: run npm install first" >&2; exit 1; }

node scripts/build.mjs

IGNORE="$(mktemp "${TMPDIR:-/tmp}/panorama-vscodeignore-$TARGET.XXXXXX")"
trap 'rm -f "$IGNORE"' EXIT
sed "s#bin/napi-v\*/linux/x64/#bin/napi-v*/$OS/$ARCH/#" .vscodeignore > "$IGNORE"

"$VSCE" package --target "$TARGET" --ignoreFile "$IGNORE" \
  --allow-missing-repository --skip-license --baseContentUrl https://panorama.invalid/ --baseImagesUrl https://panorama.invalid/ \
  --out "$VSIX"
ls -l "$VSIX"
