/**
 * The host-scale benchmarks' child process (host.bench.ts spawns it, so that its peak RSS is its own): runs one
 * measurement and prints one JSON line with the times and `maxRssMB`, the process's peak resident memory
 * (process.resourceUsage, which includes Node itself and the TypeScript loader: `baseRssMB` is that part,
 * measured before the machine is made).
 *
 *   boot-1t <ram> <preserved>   boot a machine, preserve the demo's folios, kexec; time the next kernel's boot
 *   scenario <file>             run a scenario (kho run) and report its first live update phase by phase
 */
import 'reflect-metadata';
import { Phase, formatBytes } from '@kho/kernel';
import { PAGE_SIZE } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { KHO_TEST_LOG_CMDLINE, KhoTest } from '../src/demo/kho-test';
import { kernelImage, machineFor } from '../src/system';
import { readScenario } from '../src/scenario/schema';
import { runScenario } from '../src/scenario/run';

const rssMB = (): number => Math.round(process.resourceUsage().maxRSS / 1024);
const round = (n: number): number => Math.round(n * 10) / 10;

function boot1t(ram: number, preserved: number): Record<string, unknown> {
  const baseRssMB = rssMB();
  const m = machineFor({ ram });
  // the next kernel's incoming walk is its boot:early and boot:mm phases, heard on the machine's bus
  let walkMs = 0;
  m.bus.on('phase:end', (e) => {
    if (e.generation === 2 && (e.phase === Phase.BootEarly || e.phase === Phase.BootMm)) walkMs += e.ms;
  });
  const image = kernelImage({ mem: preserved, seed: 1 });
  let t = performance.now();
  const k1 = m.boot({ image, cmdline: KHO_TEST_LOG_CMDLINE });
  const firstBootMs = performance.now() - t;
  const gen = k1.get(KhoTest).generate();
  k1.prepare();
  k1.serialize();
  const params = k1.jump();
  t = performance.now();
  const k2 = m.bootFrom(params, { image });
  const nextBootMs = performance.now() - t;
  t = performance.now();
  k2.restore();
  const restoreMs = performance.now() - t;
  const restored = k2.get(KhoTest).lastRestore;
  k2.finish();
  const ok = k2.get(Kho).isKhoBoot() && restored?.verified === true;
  return {
    ok,
    ram: formatBytes(ram),
    preserved: gen.bytes,
    folios: gen.folios,
    firstBootMs: round(firstBootMs),
    nextBootMs: round(nextBootMs),
    walkMs: round(walkMs),
    restoreMs: round(restoreMs),
    maxRssMB: rssMB(),
    baseRssMB,
  };
}

function scenario(file: string): Record<string, unknown> {
  const baseRssMB = rssMB();
  const s = readScenario(file);
  const t = performance.now();
  const r = runScenario(s);
  const wallMs = performance.now() - t;
  const g = r.generations[0];
  const ms = g.ms;
  const update = (ms.prepare ?? 0) + (ms.serialize ?? 0) + (ms.kexec ?? 0) + (ms['next.restore'] ?? 0);
  const preservedBytes = g.preserved.guests.bytes + g.preserved.bytes;
  return {
    ok: r.ok,
    errors: r.errors.slice(0, 3),
    updateMs: round(update),
    prepareMs: round(ms.prepare ?? 0),
    serializeMs: round(ms.serialize ?? 0),
    kexecMs: round(ms.kexec ?? 0),
    nextBootMs: round(ms['kexec.boot'] ?? 0),
    restoreMs: round(ms['next.restore'] ?? 0),
    finishMs: round(ms['next.finish'] ?? 0),
    guestsMs: round(ms.guests ?? 0),
    wallMs: round(wallMs),
    blocks: g.preserved.blocks,
    folios: g.preserved.guests.folios,
    preservedGiB: round(preservedBytes / 2 ** 30),
    trackerPages: g.preserved.trackerPages,
    trackerBytesPerGiB: Math.round((g.preserved.trackerPages * PAGE_SIZE) / (preservedBytes / 2 ** 30)),
    stamps: g.verifiedByNext?.guests.stamps ?? 0,
    maxRssMB: rssMB(),
    baseRssMB,
  };
}

const [mode, a, b] = process.argv.slice(2);
const out = mode === 'boot-1t' ? boot1t(Number(a), Number(b)) : mode === 'scenario' ? scenario(a) : { error: `unknown mode '${mode}'` };
process.stdout.write(`${JSON.stringify(out)}\n`);
