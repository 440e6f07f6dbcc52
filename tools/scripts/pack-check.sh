#!/usr/bin/env bash
# Packs every @kho package with `npm pack` (they must be built first) and uses them from a scratch project outside
# the workspace: @kho/kernel and @kho/physmem as someone consuming single packages would (CommonJS require, ESM
# import, a TypeScript typecheck against the shipped declarations), and the installed `kho` command, run from
# there (it must find its own dist/ and dependencies, never the current directory's). One install for both.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$root"
# every publishable workspace package (a new package is packed without editing this list)
workspaces=()
for pj in packages/*/package.json; do
  if node -e "process.exit(require('./$pj').private ? 1 : 0)"; then workspaces+=(-w "$(node -p "require('./$pj').name")"); fi
done
npm pack --silent --pack-destination "$scratch" "${workspaces[@]}" >/dev/null
cd "$scratch"
npm init -y >/dev/null
npm install --prefer-offline --no-audit --no-fund --loglevel=error ./*.tgz
for p in node_modules/@kho/*; do
  if [ -d "$p/src" ]; then echo "pack-check: $p ships src/ (wanted dist only)"; exit 1; fi
done
cat > use.cjs <<'JS'
const { createMachine, physmemModule, BuddyAllocator, PhysicalMemory } = require('@kho/physmem');
const { KernelError } = require('@kho/kernel');
const machine = createMachine({ mem: '64M' });
const k1 = machine.boot({ image: [physmemModule({ handOffAllRam: true })] });
const buddy = k1.get(BuddyAllocator);
const before = buddy.nrFreePages;
const folio = buddy.folioAlloc(3);
machine.device(PhysicalMemory).writeU64(folio.phys, 0x1234n);
const k2 = k1.kexec();
if (machine.device(PhysicalMemory).readU64n(folio.phys) !== 0x1234n) throw new Error('RAM did not survive kexec');
if (k2.get(BuddyAllocator).nrFreePages !== before) throw new Error('new kernel did not start with a fresh allocator');
try { k2.get(BuddyAllocator).allocPages(11); throw new Error('order 11 was accepted'); }
catch (e) { if (!(e instanceof KernelError)) throw e; }
console.log('cjs ok: free pages', before);
JS
cat > use.mjs <<'JS'
import { createMachine, physmemModule, BuddyAllocator } from '@kho/physmem';
const k = createMachine({ mem: '16M' }).boot({ image: [physmemModule({ handOffAllRam: true })] });
console.log('esm ok: free pages', k.get(BuddyAllocator).nrFreePages);
JS
cat > use.ts <<'TS'
import { createMachine, physmemModule, BuddyAllocator, type Folio } from '@kho/physmem';
const k = createMachine({ mem: '16M' }).boot({ image: [physmemModule({ handOffAllRam: true })] });
const f: Folio = k.get(BuddyAllocator).folioAlloc(2);
export const phys: number = f.phys;
TS
node use.cjs
node use.mjs
"$root/node_modules/.bin/tsc" --module nodenext --moduleResolution nodenext --strict --noEmit --skipLibCheck false --types node --typeRoots "$root/node_modules/@types" use.ts
echo "pack-check: ok (CommonJS, ESM and TypeScript consumers)"


# The kho command, installed, run from the scratch project
version=$(npx --no-install kho --version)
[ "$version" = "0.1.0" ] || { echo "pack-check: kho --version printed '$version'"; exit 1; }
npx --no-install kho demo --ram 256M --mem 2M --cmdline kho_scratch=24M,24M,24M --json > demo.json
node -e "const r = require('./demo.json'); if (!r.ok) { console.error('pack-check: the installed kho demo did not verify'); process.exit(1); }"
set +e
npx --no-install kho demo --mem 0 2> err.txt
code=$?
set -e
[ "$code" = 2 ] && [ "$(wc -l < err.txt)" = 1 ] || { echo "pack-check: bad input gave exit $code and: $(cat err.txt)"; exit 1; }
echo "pack-check: ok (the installed kho command runs from $scratch)"
