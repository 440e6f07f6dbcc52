#!/usr/bin/env bash
# Checks the generators end to end, as a user would meet them: generates throwaway packages with
# `nx g ./tools/workspace-plugin:subsystem NAME --skipInstall` and `nx g ./tools/workspace-plugin:file-handler
# NAME-fh --skipInstall`, runs on them the targets CI runs (lint, typecheck, test, all through Nx, in one run),
# checks that `nx affected` selects each for a change in it and in a package it uses, then removes them and
# restores the root tsconfig.json. It fails if what it touched is not left exactly as it was.
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
fh="$name-fh"
fhpkg="packages/$fh"
for p in "$pkg" "$fhpkg"; do
  if [ -e "$p" ]; then
    echo "check-template: $p exists already (wanted a free name)"
    exit 2
  fi
done
before=$(git status --porcelain --untracked-files=all -- tsconfig.json "$pkg" "$fhpkg" node_modules/@kho)
backup=$(mktemp)
cp tsconfig.json "$backup"
cleanup() {
  rm -rf "$pkg" "$fhpkg"
  cp "$backup" tsconfig.json
  rm -f "$backup"
}
trap cleanup EXIT

$nx g ./tools/workspace-plugin:subsystem "$name" --skipInstall --no-interactive
$nx g ./tools/workspace-plugin:file-handler "$fh" --skipInstall --no-interactive
$nx run-many -t lint typecheck test -p "$name" "$fh" --outputStyle=static --skip-nx-cache "${sync[@]}"
for check in "$name:$pkg/src/index.ts" "$name:packages/kernel/src/errno.ts" "$fh:$fhpkg/src/index.ts" "$fh:packages/liveupdate/src/index.ts"; do
  project=${check%%:*}
  changed=${check#*:}
  if ! $nx show projects --affected --files="$changed" | grep -qx "$project"; then
    echo "check-template: nx affected does not select $project for a change in $changed"
    exit 1
  fi
done

trap - EXIT
cleanup
after=$(git status --porcelain --untracked-files=all -- tsconfig.json "$pkg" "$fhpkg" node_modules/@kho)
if [ "$after" != "$before" ]; then
  echo "check-template: the working tree changed:"
  diff <(echo "$before") <(echo "$after") || true
  exit 1
fi
echo "check-template: ok ($name and $fh generated; lint, typecheck and test passed; nx affected selects them; removed)"
