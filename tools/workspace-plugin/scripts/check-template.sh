#!/usr/bin/env bash
# Checks the subsystem generator end to end, as a user would meet it: generates a throwaway package with
# `nx g ./tools/workspace-plugin:subsystem NAME --skipInstall`, runs on it the targets CI runs (lint, typecheck,
# test, all through Nx), checks that `nx affected` selects it for a change in it and in a package it uses, then
# removes it and restores the root tsconfig.json. It fails if what it touched is not left exactly as it was.
# Usage: bash tools/workspace-plugin/scripts/check-template.sh [NAME]   (NAME defaults to template-probe)
# CHECK_TEMPLATE_SKIP_SYNC=1 passes --skipSync to Nx, for a workspace that other work has left out of sync.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
name=${1:-template-probe}
pkg="packages/$name"
export NX_DAEMON=false NX_TUI=false NX_NO_CLOUD=true NX_ISOLATE_PLUGINS=false FORCE_COLOR=0
nx=node_modules/.bin/nx
sync=()
[ "${CHECK_TEMPLATE_SKIP_SYNC:-}" = 1 ] && sync=(--skipSync)
if [ -e "$pkg" ]; then
  echo "check-template: $pkg exists already (wanted a free name)"
  exit 2
fi
before=$(git status --porcelain --untracked-files=all -- tsconfig.json "$pkg" node_modules/@kho)
backup=$(mktemp)
cp tsconfig.json "$backup"
cleanup() {
  rm -rf "$pkg"
  cp "$backup" tsconfig.json
  rm -f "$backup"
}
trap cleanup EXIT

$nx g ./tools/workspace-plugin:subsystem "$name" --skipInstall --no-interactive
$nx run-many -t lint typecheck test -p "$name" --outputStyle=static --skip-nx-cache "${sync[@]}"
for changed in "$pkg/src/index.ts" packages/kernel/src/errno.ts; do
  if ! $nx show projects --affected --files="$changed" | grep -qx "$name"; then
    echo "check-template: nx affected does not select $name for a change in $changed"
    exit 1
  fi
done

trap - EXIT
cleanup
after=$(git status --porcelain --untracked-files=all -- tsconfig.json "$pkg" node_modules/@kho)
if [ "$after" != "$before" ]; then
  echo "check-template: the working tree changed:"
  diff <(echo "$before") <(echo "$after") || true
  exit 1
fi
echo "check-template: ok ($name generated; lint, typecheck and test passed; nx affected selects it; removed)"
