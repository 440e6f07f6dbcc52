import { Errno, KernelError, KernelLog, MachineBus } from '@kho/kernel';
import { FdtNode, encodeFdt } from '@kho/fdt';
import type { Kho } from '@kho/kho-core';
import { BuddyAllocator, PAGE_SIZE, PhysicalMemory, createMachine, physmemModule, pfn } from '@kho/physmem';
import { memblockModule } from './plugin';
import { MemblockFdtHandover, readMemblockFdt } from './fdt-handover';
import { ReserveMem, parseReserveMem } from './reserve-mem';
import { Memblock } from './memblock';

const MiB = 2 ** 20;

describe('reserve_mem= on the command line', () => {
  it('parses size:align:name, with K/M/G suffixes', () => {
    expect(parseReserveMem(['1M:4K:log', '64K:2M:trace_buf'])).toEqual([
      { name: 'log', size: MiB, align: 4096 },
      { name: 'trace_buf', size: 64 * 1024, align: 2 * MiB },
    ]);
  });

  it.each([
    [['1M:4K'], 'EINVAL: reserve_mem=1M:4K (wanted <size>:<align>:<name>)'],
    [['1X:4K:a'], "EINVAL: reserve_mem=1X:4K:a size: '1X' is not a size"],
    [['5000:4K:a'], 'EINVAL: reserve_mem=5000:4K:a: size 5000 is not a positive multiple of 4096'],
    [['1M:3K:a'], 'EINVAL: reserve_mem=1M:3K:a: alignment 3072 is not a power of two of at least 4096'],
    [['1M:4K:'], "EINVAL: reserve_mem=1M:4K:: name '' (wanted 1..15 characters of [A-Za-z0-9_.,+-])"],
    [['1M:4K:name_of_16_chars'], "EINVAL: reserve_mem=1M:4K:name_of_16_chars: name 'name_of_16_chars' (wanted 1..15 characters of [A-Za-z0-9_.,+-])"],
    [['1M:4K:a', '2M:4K:a'], "EEXIST: reserve_mem=2M:4K:a: a region named 'a' exists already"],
    [Array.from({ length: 9 }, (_, i) => `4K:4K:r${i}`), 'E2BIG: reserve_mem: 9 regions (wanted at most 8)'],
  ])('refuses %j', (values, message) => {
    expect(() => parseReserveMem(values)).toThrow(message);
  });

  it('allocates each region at boot, aligned, zeroed, reserved from the buddy allocator', () => {
    const machine = createMachine({ mem: '256M' });
    const ram = machine.device(PhysicalMemory);
    ram.fill(0, 256 * MiB, 0xaa); // whatever was there before is not what a fresh region holds
    const k = machine.boot({ image: [physmemModule({ handOffAllRam: false }), memblockModule()], cmdline: 'reserve_mem=1M:2M:log reserve_mem=64K:4K:trace' });
    const rm = k.get(ReserveMem);
    expect(rm.regions.map((r) => [r.name, r.size, r.revived])).toEqual([
      ['log', MiB, false],
      ['trace', 64 * 1024, false],
    ]);
    const log = rm.find('log');
    expect(log.start % (2 * MiB)).toBe(0);
    expect(ram.read(log.start, MiB).every((b) => b === 0)).toBe(true);
    const buddy = k.get(BuddyAllocator);
    for (const r of rm.regions) for (let p = r.start; p < r.start + r.size; p += PAGE_SIZE) expect(buddy.isFree(pfn(p / PAGE_SIZE))).toBe(false);
    expect(k.get(Memblock).records.map((r) => r.owner)).toEqual(expect.arrayContaining(['reserve_mem:log', 'reserve_mem:trace']));
    expect(() => rm.find('nope')).toThrow("ENOENT: reserve_mem: no region named 'nope' in this boot");
  });

  it('a bad reserve_mem= is reported and ignored; the boot goes on', () => {
    const k = createMachine({ mem: '256M' }).boot({ image: [physmemModule({ handOffAllRam: false }), memblockModule()], cmdline: 'reserve_mem=1M:4K' });
    expect(k.disabled.size).toBe(0);
    expect(k.get(ReserveMem).regions).toEqual([]);
    expect(k.log.filter('error').map((l) => l.message)).toEqual(['reserve_mem=1M:4K (wanted <size>:<align>:<name>); no reserve_mem regions in this boot']);
    expect(k.get(BuddyAllocator).nrFreePages).toBeGreaterThan(0);
  });
});

describe('the memblock-v1 FDT, read as hostile input', () => {
  const ram = new PhysicalMemory({ ranges: [{ start: 0, size: 64 * MiB, node: 0 }] });
  const at = 8 * MiB;
  function put(build: (root: FdtNode) => void): number {
    const root = new FdtNode('');
    root.setString('compatible', 'memblock-v1');
    build(root);
    ram.write(at, encodeFdt(root, { totalSize: PAGE_SIZE }));
    return at;
  }
  const region = (root: FdtNode, name: string, start: number | bigint, size: number | bigint, compat = 'reserve-mem-v1') => {
    const n = root.addChild(name);
    n.setString('compatible', compat);
    n.setU64LE('start', start);
    n.setU64LE('size', size);
    return n;
  };

  it('reads every region', () => {
    const phys = put((r) => {
      region(r, 'log', 16 * MiB, MiB);
      region(r, 'trace', 20 * MiB, 64 * 1024);
    });
    expect([...readMemblockFdt(ram, phys)]).toEqual([
      ['log', { start: 16 * MiB, size: MiB }],
      ['trace', { start: 20 * MiB, size: 64 * 1024 }],
    ]);
  });

  it.each<[string, (r: FdtNode) => void, string]>([
    ['wrong root compatible', (r) => r.setString('compatible', 'memblock-v2'), "compatible is 'memblock-v2' (wanted 'memblock-v1')"],
    ['nine regions', (r) => Array.from({ length: 9 }, (_, i) => region(r, `r${i}`, i * MiB, PAGE_SIZE)), '9 regions (wanted at most 8)'],
    ['a long name', (r) => region(r, 'name_of_16_chars', 0, PAGE_SIZE), "region name 'name_of_16_chars' (wanted 1..15 characters)"],
    ['wrong region compatible', (r) => region(r, 'log', 0, PAGE_SIZE, 'reserve-mem-v9'), "region 'log' compatible is 'reserve-mem-v9' (wanted 'reserve-mem-v1')"],
    ['a 4-byte start', (r) => region(r, 'log', 0, PAGE_SIZE).setProp('start', new Uint8Array(4)), "region 'log' property 'start' is 4 bytes (wanted 8)"],
    ['outside RAM', (r) => region(r, 'log', 63 * MiB, 2 * MiB), "region 'log' 0x3f00000+2097152 is not page-aligned RAM"],
    ['unaligned', (r) => region(r, 'log', 100, PAGE_SIZE), "region 'log' 0x64+4096 is not page-aligned RAM"],
    ['a huge start', (r) => region(r, 'log', 0xffff_ffff_ffff_f000n, PAGE_SIZE), "region 'log' Infinity+4096 is not page-aligned RAM"],
  ])('refuses %s', (_what, build, message) => {
    expect(() => readMemblockFdt(ram, put(build))).toThrow(`memblock FDT at 0x800000: ${message}`);
  });

  it('refuses a pointer that is not a page of RAM, and bytes that are not a DTB', () => {
    expect(() => readMemblockFdt(ram, 2 ** 40)).toThrow('memblock FDT at 0x10000000000: not a page of RAM');
    ram.fill(at, PAGE_SIZE, 0x5a);
    expect(() => readMemblockFdt(ram, at)).toThrow(/^EINVAL: FDT: /);
  });
});

describe('the memblock-v1 handover, when retrieving its subtree fails', () => {
  const ram = new PhysicalMemory({ ranges: [{ start: 0, size: 64 * MiB, node: 0 }] });
  function incomingWhen(retrieve: () => never): { map: ReadonlyMap<string, unknown>; warnings: string[] } {
    const kho = { isKhoBoot: () => true, retrieveSubtree: retrieve } as unknown as Kho;
    const log = new KernelLog(new MachineBus(), 1);
    const map = new MemblockFdtHandover(kho, {} as BuddyAllocator, ram, log).incoming();
    return { map, warnings: log.filter('warn', 'memblock').map((l) => l.message) };
  }

  it('takes ENOENT as "no handover", silently', () => {
    const r = incomingWhen(() => {
      throw new KernelError(Errno.ENOENT, "retrieveSubtree('memblock'): no such node");
    });
    expect([r.map.size, r.warnings]).toEqual([0, []]);
  });

  it('refuses a damaged node (another KernelError) with a warning', () => {
    const r = incomingWhen(() => {
      throw new KernelError(Errno.EINVAL, "retrieveSubtree('memblock'): blob-size is 4 bytes (wanted 8)");
    });
    expect([r.map.size, r.warnings]).toEqual([0, ["memblock handover refused: EINVAL: retrieveSubtree('memblock'): blob-size is 4 bytes (wanted 8)"]]);
  });

  it('lets anything else (a bug) propagate as the error it is', () => {
    const bug = new TypeError('cannot read properties of undefined');
    expect(() =>
      incomingWhen(() => {
        throw bug;
      }),
    ).toThrow(bug);
  });
});
