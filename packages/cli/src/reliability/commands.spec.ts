import { injectable } from 'tsyringe';
import { KernelPlugin, registerPerBoot, type KernelModule } from '@kho/kernel';
import { BuddyAllocator } from '@kho/physmem';
import { runCliAsync } from '../main';
import { runSoak, soakPlan, SOAK_SUBSYSTEMS } from './soak';

jest.setTimeout(120_000);

async function kho(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runCliAsync(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

describe('kho sweep', () => {
  it('the same report whatever --jobs', async () => {
    const args = ['sweep', 'faults', '--paths', 'kho_block grow,luo unfreeze', '--limit', '2', '--json'];
    const one = await kho(...args, '--jobs', '1');
    const two = await kho(...args, '--jobs', '2');
    expect([one.code, one.err]).toEqual([0, '']);
    expect(two.out).toBe(one.out);
    const r = JSON.parse(one.out);
    expect(r).toMatchObject({ sweep: 'faults', cases: 3, failed: 0 });
    const text = await kho('sweep', 'anytime', '--paths', 'slab', '--limit', '2', '--jobs', '2');
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/^kho sweep anytime: 2 cases on 2 workers, 0 failed\n {2}slab {2}\s*2 of \s*\d+ moments/);
  });

  it('lists its paths', async () => {
    const r = await kho('sweep', 'faults', '--list');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^luo preserve: /m);
    expect(r.out).toMatch(/^host update: /m);
  });

  it.each([
    [['sweep', 'sideways'], "kho: kho sweep <sweep> 'sideways' is not allowed (wanted one of anytime, faults)"],
    [['sweep', 'anytime', '--paths', 'nope'], "kho: no sweep path named 'nope' (wanted one of: demo kho_abi=v1,"],
    [['sweep', 'faults', '--paths', 'luo preserve,'], "kho: --paths 'luo preserve,' has an empty name"],
    [['sweep', 'faults', '--limit', '0'], "kho: --limit '0' (wanted an integer 1..1000000)"],
    [['sweep', 'faults', '--jobs', 'many'], "kho: --jobs 'many' (wanted an integer 1..256)"],
    [['soak', '--generations', '1001'], "kho: --generations '1001' (wanted an integer 1..1000)"],
    [['soak', '--ram', '1M'], 'kho: --ram 1M is too small (wanted at least 64M)'],
  ])('refuses %j in one line, exit 2', async (argv, line) => {
    const r = await kho(...argv);
    expect(r.code).toBe(2);
    expect(r.err.startsWith(line)).toBe(true);
    expect(r.err.split('\n')).toHaveLength(2);
  });
});

/** A module whose per-boot plugin is pushed into a list nobody empties: every kernel stays reachable through it. */
function keepAlive(list: object[]): KernelModule {
  @injectable()
  class Hoarder implements KernelPlugin {
    readonly name = 'hoarder';
    constructor(buddy: BuddyAllocator) {
      list.push(this, buddy);
    }
  }
  return { name: 'hoarder', register: (c) => registerPerBoot(c, Hoarder, { plugin: true }) };
}

/** A module that takes a page in generation `gen`'s restore and never gives it back. */
function leakIn(gen: number, at: number): KernelModule[] {
  if (gen !== at) return [];
  @injectable()
  class Leak implements KernelPlugin {
    readonly name = 'leak';
    constructor(private readonly buddy: BuddyAllocator) {}
    restore(): void {
      this.buddy.allocPages(0);
    }
  }
  return [{ name: 'leak', register: (c) => registerPerBoot(c, Leak, { plugin: true }) }];
}

describe('kho soak', () => {
  it('a seeded mix of every subsystem: the same plan for the same seed, every subsystem used', () => {
    const a = soakPlan(60, 5, 512 * 2 ** 20);
    expect(soakPlan(60, 5, 512 * 2 ** 20).mix).toEqual(a.mix);
    expect(soakPlan(60, 6, 512 * 2 ** 20).mix).not.toEqual(a.mix);
    for (const s of SOAK_SUBSYSTEMS) expect(a.mix.filter((m) => m.includes(s)).length).toBeGreaterThan(10);
  });

  it('40 generations: every one verified, free pages as a cold boot, no dead kernel left reachable', async () => {
    const r = await runSoak({ generations: 40, seed: 3, sampleAt: [1, 40] });
    expect(r.errors).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.verified).toBe(40);
    expect(r.freePagesAtEnd).toBe(r.freePagesColdBoot);
    expect(r.kernels).toEqual({ booted: 41, reachableAfter: 0 });
    expect(r.samples.map((s) => s.generation)).toEqual([1, 40]);
  });

  // The checks have teeth: kernels kept alive, and a page leaked in one generation, are both reported.
  it('reports kernels that stay reachable and a generation that leaks', async () => {
    const hoard: object[] = [];
    const r = await runSoak({ generations: 6, seed: 3, sampleAt: [], modules: (gen) => [keepAlive(hoard), ...leakIn(gen, 4)] });
    expect(r.kernels).toEqual({ booted: 7, reachableAfter: 7 });
    expect(r.ok).toBe(false);
    expect(r.errors).toEqual([expect.stringMatching(/^generation 4: \d+ free pages .* after finish, a cold boot has \d+$/)]);
    expect(hoard.length).toBe(14);
  });
});
