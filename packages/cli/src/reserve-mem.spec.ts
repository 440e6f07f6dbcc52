import type { Kernel, KernelModule } from '@kho/kernel';
import { BuddyAllocator, PAGE_SIZE, PhysicalMemory, createMachine, physmemModule } from '@kho/physmem';
import { Kho, PROP_SUB_FDT, khoModule } from '@kho/kho-core';
import { decodeFdt } from '@kho/fdt';
import { ReserveMem, memblockFdtHandoverModule, memblockModule } from '@kho/memblock';
import { radixTrackerModule } from '@kho/radix-tracker';
import { vmallocModule } from '@kho/vmalloc';
import { KState, kstateModule, kstateReserveMemModule } from '@kho/kstate';

const SCRATCH = 'kho_scratch=32M,32M,32M';
const image = (): KernelModule[] => [physmemModule({ handOffAllRam: false }), memblockModule(), radixTrackerModule(), khoModule(), memblockFdtHandoverModule()];
const text = (s: string) => new TextEncoder().encode(s);

function coldFree(cmdline: string): number {
  const m = createMachine({ mem: '512M' });
  return m.boot({ image: image(), cmdline }).get(BuddyAllocator).nrFreePages;
}

function firstKernel(cmdline = `${SCRATCH} reserve_mem=1M:2M:log reserve_mem=64K:4K:trace reserve_mem_handover=fdt`) {
  const machine = createMachine({ mem: '512M' });
  const k1 = machine.boot({ image: image(), cmdline });
  const ram = machine.device(PhysicalMemory);
  const log = k1.get(ReserveMem).find('log');
  ram.write(log.start, text('generation 1 was here\n'));
  return { machine, k1, ram, log };
}

describe('reserve_mem regions across a live update (upstream memblock-v1 FDT format)', () => {
  it('come back at the same address with their contents; nothing is left unrestored or leaked', () => {
    const { k1, ram, log } = firstKernel();
    const k2 = k1.liveUpdate();
    const rm = k2.get(ReserveMem);
    expect(rm.regions.map((r) => [r.name, r.revived])).toEqual([
      ['log', true],
      ['trace', true],
    ]);
    expect(rm.find('log').start).toBe(log.start);
    expect(new TextDecoder().decode(ram.read(log.start, 22))).toBe('generation 1 was here\n');
    expect(k2.restore().ok).toBe(true);
    const fin = k2.finish();
    expect(fin.plugins.kho.report).toEqual({ unrestoredBlocks: 0, unrestoredBytes: 0, unrestored: [] });
    expect(k2.get(BuddyAllocator).nrFreePages).toBe(coldFree(k2.cmdline.text));
    // and again: the revived regions are handed over by the next kexec too
    ram.write(log.start + 22, text('generation 2 too\n'));
    const k3 = k2.liveUpdate();
    expect(k3.get(ReserveMem).find('log')).toMatchObject({ start: log.start, revived: true });
    expect(new TextDecoder().decode(ram.read(log.start, 39))).toBe('generation 1 was here\ngeneration 2 too\n');
  });

  it('a size or alignment mismatch allocates a fresh region, reports why, and frees the old pages', () => {
    const { k1 } = firstKernel();
    const k2 = k1.liveUpdate({ cmdline: `${SCRATCH} reserve_mem=2M:2M:log reserve_mem=64K:1M:trace` });
    const rm = k2.get(ReserveMem);
    expect(rm.regions.map((r) => [r.name, r.revived, r.mismatch])).toEqual([
      ['log', false, 'size 1.00 MiB differs from the requested 2.00 MiB'],
      ['trace', false, expect.stringMatching(/^start 0x[0-9a-f]+ is not aligned to 1.00 MiB$|^size/)],
    ]);
    expect(k2.log.filter('warn', 'memblock').length).toBe(2);
    k2.restore();
    expect(k2.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
    expect(k2.get(BuddyAllocator).nrFreePages).toBe(coldFree(k2.cmdline.text));
  });

  it('a damaged memblock FDT is refused with a warning: the region is allocated fresh, the old one freed', () => {
    const { k1, ram } = firstKernel();
    k1.prepare();
    k1.serialize();
    const blob = findSubtree(k1, 'memblock');
    ram.write(blob, text('not an FDT at all'));
    const k2 = k1.kexec();
    expect(k2.get(ReserveMem).regions.every((r) => !r.revived)).toBe(true);
    expect(k2.log.filter('warn', 'memblock')[0].message).toMatch(/^memblock handover refused: EINVAL: FDT: /);
  });

  it('a next kernel without KHO allocates the regions fresh', () => {
    const { k1 } = firstKernel();
    const k2 = k1.liveUpdate({ cmdline: `kho=off reserve_mem=1M:2M:log` });
    expect(k2.get(ReserveMem).find('log').revived).toBe(false);
  });
});

/** The phys of subtree `name` in the outgoing root FDT, decoded from RAM the way the next kernel will. */
function findSubtree(k: Kernel, name: string): number {
  const fdt = decodeFdt(k.get(PhysicalMemory).read(k.get(Kho).rootFdtPhys, PAGE_SIZE));
  return Number(fdt.child(name)!.getU64LE(PROP_SUB_FDT));
}

describe('reserve_mem through kstate (reserve_mem_handover=kstate), and upgrading from the FDT format', () => {
  const kstateImage = (): KernelModule[] => [...image(), vmallocModule(), kstateModule(), kstateReserveMemModule()];

  it('the default format is upstream memblock-v1 even with kstate in the image', () => {
    const machine = createMachine({ mem: '512M' });
    const k1 = machine.boot({ image: kstateImage(), cmdline: `${SCRATCH} reserve_mem=1M:2M:log` });
    const k2 = k1.liveUpdate();
    expect(k2.get(Kho).retrieveSubtree('memblock').size).toBeGreaterThan(0);
    expect(k2.get(ReserveMem).find('log').revived).toBe(true);
  });

  it('with reserve_mem_handover=kstate, regions come back with their contents and nothing leaks', () => {
    const machine = createMachine({ mem: '512M' });
    const k1 = machine.boot({ image: kstateImage(), cmdline: `${SCRATCH} reserve_mem=1M:2M:log reserve_mem_handover=kstate` });
    const ram = machine.device(PhysicalMemory);
    const log = k1.get(ReserveMem).find('log');
    ram.write(log.start, text('kept by kstate\n'));
    const k2 = k1.liveUpdate();
    expect(k2.get(KState).incoming()!.sections.map((s) => s.id)).toEqual(['reserve_mem']);
    expect(() => k2.get(Kho).retrieveSubtree('memblock')).toThrow(/no such subtree/);
    expect(k2.get(ReserveMem).find('log')).toMatchObject({ start: log.start, revived: true });
    expect(new TextDecoder().decode(ram.read(log.start, 15))).toBe('kept by kstate\n');
    expect(k2.restore().ok).toBe(true);
    const fin = k2.finish();
    expect(fin.plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
    const cold = createMachine({ mem: '512M' }).boot({ image: kstateImage(), cmdline: k2.cmdline.text });
    expect(k2.get(BuddyAllocator).nrFreePages).toBe(cold.get(BuddyAllocator).nrFreePages);
  });

  it('a kernel using kstate takes over from one that wrote the FDT format (the upgrade), and hands over in kstate', () => {
    const { k1, ram, log } = firstKernel(); // FDT format, an image without kstate
    const k2 = k1.liveUpdate({ image: kstateImage(), cmdline: `${SCRATCH} reserve_mem=1M:2M:log reserve_mem=64K:4K:trace reserve_mem_handover=kstate` });
    expect(k2.get(ReserveMem).regions.map((r) => [r.name, r.revived])).toEqual([
      ['log', true],
      ['trace', true],
    ]);
    expect(new TextDecoder().decode(ram.read(log.start, 22))).toBe('generation 1 was here\n');
    k2.restore();
    expect(k2.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
    const k3 = k2.liveUpdate();
    expect(() => k3.get(Kho).retrieveSubtree('memblock')).toThrow(/no such subtree/);
    expect(k3.get(ReserveMem).find('log')).toMatchObject({ start: log.start, revived: true });
  });
});
