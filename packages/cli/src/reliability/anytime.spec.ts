import { KernelPlugin, type KernelModule } from '@kho/kernel';
import type { DependencyContainer } from 'tsyringe';
import { BuddyAllocator, PhysicalMemory } from '@kho/physmem';
import { Kho } from '@kho/kho-core';
import { KHO_TEST_LOG_CMDLINE, KhoTest } from '../demo/kho-test';
import { kernelImage, machineFor } from '../system';
import { countMoments, kexecAtMoment, pickMoments, type AnytimePath } from './anytime';
import { ANYTIME_PATHS, anytimePath } from './anytime-paths';
import { sweepAnytime } from './sweeps';

const MiB = 2 ** 20;

/**
 * A plugin acting in one phase of every kernel of a path (to break the handover on purpose). Placed first in the
 * image with no dependencies, its kexec handler runs before KHO's (which checksums the tracker).
 */
function actor(name: string, phase: 'kexec' | 'restore', act: (c: DependencyContainer) => void): KernelModule {
  return {
    name,
    register(c) {
      c.register(KernelPlugin, { useFactory: (dc) => ({ name, [phase]: () => act(dc) }) });
    },
  };
}

/**
 * The self-test's folios preserved one by one (outside any phase), with `extra` modules in both kernels: a small
 * path whose kernels can be made to misbehave.
 */
function folioPath(extra: KernelModule[]): AnytimePath {
  return {
    name: 'test folios',
    title: 'self-test folios, preserved at prepare',
    start() {
      const machine = machineFor({ ram: 128 * MiB });
      const image = [...extra, ...kernelImage({ mem: 64 * 1024, seed: 3, maxOrder: 2 })];
      const cmdline = `${KHO_TEST_LOG_CMDLINE} kho_scratch=16M,16M,16M`;
      const kernel = machine.boot({ image, cmdline });
      kernel.get(KhoTest).generate();
      return {
        machine,
        kernel,
        next: { image, cmdline },
        run: () => {
          kernel.prepare();
          kernel.serialize();
        },
        verify: (next) => ({ found: `${next.get(KhoTest).lastRestore?.folios ?? 0} folios`, problems: [] }),
      };
    },
  };
}

describe('kexec at any moment', () => {
  it('a path has a moment per allocation and tracker edit, and one after the operation', () => {
    const p = folioPath([]);
    const n = countMoments(p);
    expect(n).toBeGreaterThan(10);
    const first = kexecAtMoment(p, 1);
    const last = kexecAtMoment(p, n);
    expect(last.at).toBe('after the operation');
    expect(last.found).toMatch(/^\d+ folios$/);
    expect(last.found).not.toBe('0 folios');
    expect(first.found).toBe('0 folios');
    expect([first.problems, last.problems]).toEqual([[], []]);
    expect(last.revived).toBe(true);
    expect(() => kexecAtMoment(p, n + 1)).toThrow(`moment ${n + 1} is past the last (${n})`);
  });

  it('pickMoments spreads a limit over the moments, first and last included', () => {
    expect(pickMoments(5)).toEqual([1, 2, 3, 4, 5]);
    expect(pickMoments(100, 4)).toEqual([1, 34, 67, 100]);
    expect(pickMoments(3, 10)).toEqual([1, 2, 3]);
    expect(pickMoments(9, 1)).toEqual([9]);
  });

  // The rules have teeth: a kernel that breaks each of them is caught.
  it.each<[string, KernelModule, RegExp]>([
    [
      'a block reserved that nobody preserved at the jump',
      actor('extra-block', 'kexec', (c) => void c.resolve(Kho).allocPreserve(4096)),
      /^1 incoming blocks were not in the tracker at the jump/,
    ],
    [
      'a page leaked by the next kernel',
      actor('leak', 'restore', (c) => void c.resolve(BuddyAllocator).allocPages(0)),
      /after finish: .* \(1 pages leaked\)$/,
    ],
    [
      'a crash in a restore',
      actor('crash', 'restore', () => {
        throw new TypeError('boom');
      }),
      /^crash \(restore\) crashed: TypeError: boom$/,
    ],
    [
      'a preserved byte changed',
      actor('scribble', 'kexec', (c) => {
        const f = c.resolve(KhoTest).generated[0];
        if (f) c.resolve(PhysicalMemory).write(f.phys, Uint8Array.of(0xee, 0xee));
      }),
      /^the operation was complete, yet something was refused$/,
    ],
  ])('%s is a problem', (_what, module, problem) => {
    const p = folioPath([module]);
    const r = kexecAtMoment(p, countMoments(p));
    expect(r.problems.some((x) => problem.test(x))).toBe(true);
  });

  it('every path passes at its first, middle and last moments (in this thread)', () => {
    const failures = [];
    for (const p of ANYTIME_PATHS) {
      const n = countMoments(p);
      for (const m of pickMoments(n, 3)) {
        const r = kexecAtMoment(p, m);
        if (r.problems.length > 0) failures.push(r);
      }
    }
    expect(failures).toEqual([]);
  });

  it('a kexec before a kho-v1 map is serialized is refused, and nothing is reserved or lost', () => {
    const r = kexecAtMoment(anytimePath('demo kho_abi=v1')!, 2);
    expect(r.revived).toBe(false);
    expect(r.refused).toEqual(["kho: 'preserved-memory-map' is 0 (wanted the phys of the map)"]);
    expect(r.problems).toEqual([]);
  });
});

describe('the sweep on worker threads', () => {
  jest.setTimeout(120_000);

  it('the same report with one worker and with two', async () => {
    const opts = { paths: ['slab', 'kho_block'], limit: 4 };
    const one = await sweepAnytime({ ...opts, jobs: 1 });
    const two = await sweepAnytime({ ...opts, jobs: 2 });
    expect(two).toEqual(one);
    expect(one.cases).toBe(8);
    expect(one.failed).toBe(0);
    expect(one.paths.map((p) => [p.name, p.swept])).toEqual([
      ['slab', 4],
      ['kho_block', 4],
    ]);
  });

  it('refuses an unknown path', async () => {
    await expect(sweepAnytime({ paths: ['nope'] })).rejects.toThrow("EINVAL: no sweep path named 'nope'");
  });
});
