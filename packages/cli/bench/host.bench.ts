import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineBench, runNative } from '@kho/kernel/bench';

/**
 * The host-scale benchmarks. Each runs in a child process of its own, so that the peak RSS it reports is the
 * measurement's (the child is Node with the TypeScript loader: its own share is reported as `baseRssMB`):
 * - `demo/4g-*`: `kho demo --mem 4G --ram 8G` as a user runs it, against tools/native/fill_ref.c filling and
 *   checksumming the same 4 GiB in the same run (quick: 256 MiB on 1 GiB);
 * - `host/boot-1t`: the next kernel's boot on a 1 TiB machine with 64 MiB preserved (quick: 16 MiB);
 * - `host/vm-host`: examples/vm-host.yaml, a 1 TiB VM host live-updated (quick: the same shape on 16 GiB).
 */

const ROOT = join(__dirname, '..', '..', '..');
const KHO = join(ROOT, 'packages', 'cli', 'bin', 'kho.js');
const CHILD = join(__dirname, 'host-child.ts');
const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** Runs `args` under Node with the workspace's TypeScript loader; returns the last JSON line it printed and its wall time. */
function node(args: readonly string[], script?: string): { out: Record<string, unknown>; wallMs: number } {
  const t0 = performance.now();
  const argv = script ? ['--conditions=@kho/source', '-r', '@swc-node/register', script, ...args] : [KHO, ...args];
  const r = spawnSync(process.execPath, argv, {
    encoding: 'utf8',
    maxBuffer: 64 * MiB,
    env: { ...process.env, SWC_NODE_PROJECT: join(ROOT, 'tsconfig.base.json') },
  });
  const wallMs = performance.now() - t0;
  if (r.error) throw new Error(`${args[0]}: ${r.error.message}`);
  const text = r.stdout.trim();
  let out: Record<string, unknown>;
  try {
    out = JSON.parse(script ? text.split('\n').pop()! : text) as Record<string, unknown>;
  } catch {
    throw new Error(`${args[0]} exited with ${r.status} and no JSON: ${(r.stderr || text).trim().split('\n').pop()}`);
  }
  return { out, wallMs };
}

const round = (n: number): number => Math.round(n * 1000) / 1000;

/**
 * fill_ref.c over `bytes`, run each time `run()` is called; the floor is its fastest run (see physmem/fill-4g:
 * touching memory the VM never backed costs more than memory another process just gave back).
 */
function nativeFloor(bytes: number): { run(): void; readonly runs: number[]; reason?: string } {
  const floor = {
    runs: [] as number[],
    reason: undefined as string | undefined,
    run(): void {
      const r = runNative('fill_ref', [String(bytes)]);
      if (r.ok) floor.runs.push(round((r.lines[0].fill_ms as number) + (r.lines[0].checksum_ms as number)));
      else floor.reason = r.reason;
    },
  };
  return floor;
}

interface DemoFigures {
  bytes: number;
  wallMs: number;
  dataMs: number;
  coreMs: number;
  nativeMs?: number;
  nativeRuns: number[];
  native?: string;
  ms: { first: Record<string, number>; second: Record<string, number> };
}

/** One `kho demo` run and the native floor around it, shared by the three demo lines of a run. */
const demoRuns = new Map<string, DemoFigures>();
function demo(quick: boolean, run: number): DemoFigures {
  const key = `${quick}/${run}`;
  const have = demoRuns.get(key);
  if (have) return have;
  const bytes = quick ? 256 * MiB : 4 * GiB;
  const ram = quick ? GiB : 8 * GiB;
  const floor = nativeFloor(bytes);
  floor.run();
  const { out, wallMs } = node(['demo', '--mem', String(bytes), '--ram', String(ram), '--json']);
  floor.run();
  if (out.ok !== true) throw new Error(`kho demo did not verify: ${JSON.stringify((out.second as { errors?: unknown })?.errors ?? out)}`);
  const first = (out.first as { ms: Record<string, number> }).ms;
  const second = (out.second as { ms: Record<string, number> }).ms;
  const dataMs = first['generate.data'] + second['restore.verify'];
  // The live update itself: prepare, serialize, the jump, the next kernel's boot, and its restore less the
  // reading of every byte for the checksum.
  const coreMs = first.prepare + first.serialize + first.kexec + second.boot + (second.restore - second['restore.verify']);
  const nativeMs = floor.runs.length > 0 ? Math.min(...floor.runs) : undefined;
  const figures: DemoFigures = { bytes, wallMs: round(wallMs), dataMs: round(dataMs), coreMs: round(coreMs), nativeMs, nativeRuns: floor.runs, ms: { first, second } };
  if (nativeMs === undefined) figures.native = `skipped: ${floor.reason}`;
  demoRuns.set(key, figures);
  return figures;
}

defineBench({
  name: 'demo/4g-data',
  target: 'fill + verify <= 1.5x fill_ref.c on the same bytes (same run)',
  targets: [{ field: 'vsNative', max: 1.5 }],
  maxRuns: 3,
  run(ctx) {
    const d = demo(ctx.quick, ctx.run);
    const vs = d.nativeMs ? round(d.dataMs / d.nativeMs) : undefined;
    return {
      value: vs ?? d.dataMs,
      unit: vs !== undefined ? 'x fill_ref' : 'ms',
      ...(vs !== undefined ? { vsNative: vs } : { native: d.native }),
      bytes: d.bytes,
      dataMs: d.dataMs,
      fillMs: d.ms.first['generate.data'],
      verifyMs: d.ms.second['restore.verify'],
      nativeMs: d.nativeMs,
      nativeRuns: d.nativeRuns,
    };
  },
});

defineBench({
  name: 'demo/4g-wall',
  target: 'kho demo --mem 4G --ram 8G <= fill_ref.c + 3 s (same run)',
  targets: [{ field: 'overNativeS', max: 3 }],
  maxRuns: 3,
  run(ctx) {
    const d = demo(ctx.quick, ctx.run);
    const over = d.nativeMs !== undefined ? round((d.wallMs - d.nativeMs) / 1000) : undefined;
    return {
      value: over ?? round(d.wallMs / 1000),
      unit: over !== undefined ? 's over fill_ref' : 's',
      ...(over !== undefined ? { overNativeS: over } : { native: d.native }),
      wallS: round(d.wallMs / 1000),
      nativeS: d.nativeMs !== undefined ? round(d.nativeMs / 1000) : undefined,
      bytes: d.bytes,
    };
  },
});

defineBench({
  name: 'demo/4g-core',
  target: 'prepare + serialize + kexec + next boot + restore (without the verify) < 1 s',
  targets: [{ max: 1000 }],
  maxRuns: 3,
  run(ctx) {
    const d = demo(ctx.quick, ctx.run);
    const { first, second } = d.ms;
    return {
      value: d.coreMs,
      unit: 'ms',
      prepareMs: first.prepare,
      serializeMs: first.serialize,
      kexecMs: first.kexec,
      nextBootMs: second.boot,
      walkMs: second['boot.walk'],
      restoreMs: round(second.restore - second['restore.verify']),
      bytes: d.bytes,
    };
  },
});

defineBench({
  name: 'host/boot-1t',
  target: 'next boot of a 1 TiB machine with 64 MiB preserved < 1 s, peak RSS < 256 MB',
  targets: [
    { field: 'nextBootMs', max: 1000 },
    { field: 'maxRssMB', max: 256 },
  ],
  run(ctx) {
    const { out } = node(['boot-1t', String(2 ** 40), String((ctx.quick ? 16 : 64) * MiB)], CHILD);
    if (out.ok !== true) throw new Error(`the 1 TiB boot did not verify: ${JSON.stringify(out)}`);
    const { ok: _ok, ...rest } = out;
    return { value: out.nextBootMs as number, unit: 'ms (next boot)', ...rest };
  },
});

/** A scenario of the vm-host shape small enough for CI: 16 GiB with 6 GiB in 2 MiB folios and 512 MiB in pages. */
const QUICK_VM_HOST = `name: vm host (quick)
seed: 13
machine: { ram: 16G }
generations:
  - preserve:
      guests:
        - { name: vm-hugepages, size: 6G, order: 9 }
        - { name: vm-4k, size: 512M, order: 0 }
`;

defineBench({
  name: 'host/vm-host',
  target: 'examples/vm-host.yaml (1 TiB; 768 GiB in 2 MiB folios, 16 GiB in 4 KiB pages): update < 5 s, peak RSS < 4 GiB',
  targets: [
    { field: 'updateMs', max: 5000 },
    { field: 'maxRssMB', max: 4096 },
  ],
  maxRuns: 3,
  run(ctx) {
    let file = join(ROOT, 'examples', 'vm-host.yaml');
    let dir: string | undefined;
    if (ctx.quick) {
      dir = mkdtempSync(join(tmpdir(), 'kho-vm-host-'));
      file = join(dir, 'vm-host-quick.yaml');
      writeFileSync(file, QUICK_VM_HOST);
    }
    try {
      const { out } = node(['scenario', file], CHILD);
      if (out.ok !== true) throw new Error(`the vm-host scenario did not verify: ${JSON.stringify(out.errors ?? out)}`);
      const { ok: _ok, errors: _e, ...rest } = out;
      return { value: out.updateMs as number, unit: 'ms (update)', ...rest };
    } finally {
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  },
});
