import { KernelError } from '@kho/kernel';
import { BuddyAllocator, FaultInjector, PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { Tracker } from '@kho/kho-core';
import { kernelImage, machineFor } from '../system';
import { parseScenario } from './schema';
import { runScenario } from './run';
import { inKernel } from './in-kernel';
import { GuestMemory, guestMemoryModule } from './guests';

const MiB = 2 ** 20;

function refusal(text: string): string {
  try {
    parseScenario(text, 'bad.yaml');
  } catch (e) {
    if (e instanceof KernelError) return e.message;
    throw e;
  }
  throw new Error('the scenario was accepted');
}

/** Two guests on a 2 GiB machine: 128 folios of 2 MiB (every one stamped) and 8192 pages (one in 32 stamped). */
const TWO_GUESTS = 'machine: { ram: 2G }\ngenerations:\n  - preserve: { guests: [{ name: huge, size: 256M, order: 9 }, { name: small, size: 32M }] }';

describe('scenario schema: guests', () => {
  it.each([
    ['{ guests: [{ name: a, size: 3M, order: 9 }] }', 'generations[0].preserve.guests[0].size: must be a whole number of folios (4 KiB × 2^order each)'],
    ['{ guests: [{ name: a, size: 4M, order: 11 }] }', 'generations[0].preserve.guests[0].order: Too big: expected number to be <=10'],
    ['{ guests: [{ name: "a b", size: 4M }] }', 'generations[0].preserve.guests[0].name: must be 1..32 characters of [A-Za-z0-9_.-]'],
    ['{ guests: [{ name: a, size: 4M }, { name: a, size: 8M }] }', "generations[0].preserve.guests[1].name: guest 'a' is listed twice"],
    ['{ guests: [{ name: a, size: 0 }] }', 'generations[0].preserve.guests[0].size: must be above 0'],
  ])('refuses %s', (body, message) => {
    expect(refusal(`generations:\n  - preserve: ${body}`)).toBe(`EINVAL: scenario bad.yaml: ${message}`);
  });

  it('reads examples/vm-host.yaml: 768 GiB of 2 MiB folios and 16 GiB of pages on 1 TiB', () => {
    const s = parseScenario(require('node:fs').readFileSync(require('node:path').resolve(__dirname, '../../../../examples/vm-host.yaml'), 'utf8'), 'vm-host.yaml');
    expect(s.machine.ram).toBe(2 ** 40);
    expect(s.generations[0].preserve.guests).toEqual([
      { name: 'vm-hugepages', size: 768 * 2 ** 30, order: 9 },
      { name: 'vm-4k', size: 16 * 2 ** 30, order: 0 },
    ]);
  });
});

describe('guests across a live update', () => {
  it('come back folio by folio with their orders and stamps, nothing else of them written, and are freed', () => {
    const r = runScenario(parseScenario(TWO_GUESTS, 'x.yaml'));
    expect(r.errors).toEqual([]);
    expect(r.generations[0].preserved.guests).toEqual({ guests: 2, folios: 128 + 8192, bytes: 288 * MiB });
    expect(r.generations[0].verifiedByNext?.guests).toEqual({ guests: 2, folios: 128 + 8192, bytes: 288 * MiB, stamps: 128 + 256, verified: true });
    // every guest folio is a block of the tracker (with the handover's own few)
    expect(r.generations[0].preserved.blocks).toBeGreaterThan(128 + 8192);
    expect(r.freePagesAtEnd).toBe(r.freePagesColdBoot);
  });

  it('report a stamp changed before the jump', () => {
    let at = 0;
    const r = runScenario(parseScenario(TWO_GUESTS, 'x.yaml'), {
      modules: inKernel('serialize', (c) => {
        const g = c.resolve(GuestMemory).outgoing[0];
        at = g.pfns[5] * PAGE_SIZE;
        const ram = c.resolve(PhysicalMemory);
        ram.writeU8(at + 10, ram.readU8(at + 10) ^ 0xff);
      }),
    });
    expect(r.errors).toEqual([`generation 2 could not verify generation 1's guest 'huge': the stamp of folio 5 at 0x${at.toString(16)} differs`]);
    expect(r.generations[0].verifiedByNext?.guests.verified).toBe(false);
    expect(r.freePagesAtEnd).toBe(r.freePagesColdBoot); // what did not verify is freed all the same
  });

  it('report a page of guest memory written besides the stamps', () => {
    const r = runScenario(parseScenario(TWO_GUESTS, 'x.yaml'), {
      modules: inKernel('serialize', (c) => c.resolve(PhysicalMemory).writeU8(c.resolve(GuestMemory).outgoing[1].pfns[3] * PAGE_SIZE + 1, 7)),
    });
    expect(r.errors).toEqual(["generation 2 could not verify generation 1's guest 'small': 257 pages of its memory are written (wanted the 256 stamped ones only)"]);
  });

  it('a next kernel with kho=off verifies none', () => {
    const r = runScenario(parseScenario(`${TWO_GUESTS}\n    cmdline: kho=off`, 'x.yaml'));
    expect(r.errors).toEqual(['generation 2 did not boot from the handover: KHO disabled', "generation 2 could not verify generation 1's 2 guests: no workload state came back"]);
  });
});

describe('guest preservation', () => {
  it('undoes exactly what it preserved when prepare fails at any allocation, and a retry succeeds', () => {
    const machine = machineFor({ ram: 512 * MiB });
    const k = machine.boot({ image: [...kernelImage(), guestMemoryModule({ generation: 1, seed: 3, guests: [{ name: 'g', size: 8 * MiB, order: 0 }, { name: 'h', size: 8 * MiB, order: 9 }] })] });
    const guests = k.get(GuestMemory);
    expect(guests.generate()).toEqual({ guests: 2, folios: 2048 + 4, bytes: 16 * MiB });
    const tracker = k.get<Tracker>(Tracker);
    const faults = k.get(FaultInjector);
    const buddy = k.get(BuddyAllocator);
    const blocks0 = tracker.stats().blocks;
    const free0 = buddy.nrFreePages;
    faults.reset();
    faults.configure({ failNth: 100_000 });
    k.prepare();
    const calls = faults.calls;
    expect(tracker.stats().blocks).toBeGreaterThan(blocks0 + 2048);
    k.cancel();
    expect([tracker.stats().blocks, buddy.nrFreePages]).toEqual([blocks0, free0]);
    for (let nth = 1; nth <= calls; nth++) {
      faults.reset();
      faults.configure({ failNth: nth });
      expect(() => k.prepare()).toThrow(/ENOMEM/);
      expect([tracker.stats().blocks, buddy.nrFreePages]).toEqual([blocks0, free0]);
    }
    faults.reset();
    k.prepare();
    k.serialize();
    const k2 = k.kexec();
    k2.restore();
    expect(k2.get(GuestMemory).lastRestore).toMatchObject({ listed: 2, verified: 2, folios: 2052, problems: [] });
    machine.shutdown();
  });
});
