import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Errno, KernelError, type Kernel } from '@kho/kernel';
import { BuddyAllocator, PAGE_SIZE, PhysicalMemory, toOrder, pfn, type PhysAddr } from '@kho/physmem';
import { KHO_KEXEC_METADATA_SUBTREE, Kho, buildRootFdt, encodeKhoData, encodeScratchArray, khoV3 } from '@kho/kho-core';
import { encodeFdt } from '@kho/fdt';
import { pagesToSegments, writeImageFile } from '@kho/image';
import { randomUpstreamBlocks, upstreamPreserve, walkOrder, writeUpstreamTree } from '@kho/radix-tracker/testing';
import { runCli } from './main';
import { idlePages, kernelImage, machineFor } from './system';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

function cli(...argv: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

const coldIdle = (ram: number, cmdline = ''): number => {
  const m = machineFor({ ram });
  const n = idlePages(m.boot({ image: kernelImage(), cmdline }));
  m.shutdown();
  return n;
};

describe('kexec-metadata across a chain of live updates', () => {
  it('counts kexec boots since the last cold boot and names the previous release', () => {
    const m = machineFor({ ram: 512 * MiB });
    let k: Kernel = m.boot({ image: kernelImage() });
    expect(k.get(Kho).stats().kexecCount).toBe(0);
    for (let n = 1; n <= 4; n++) {
      k = k.liveUpdate();
      expect(k.get(Kho).stats()).toMatchObject({ kexecCount: n, previousRelease: '7.2.0-kho-lab' });
      expect(k.log.filter('info', 'kho').map((l) => l.message)).toContain(`exec from: 7.2.0-kho-lab (count ${n})`);
      expect(k.restore().ok).toBe(true);
      expect(k.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
    }
    // a cold boot starts again from 0
    expect(m.boot({ image: kernelImage() }).get(Kho).stats().kexecCount).toBe(0);
  });

  it('a kho-v2 kernel in the chain writes none, so the count starts again after it', () => {
    const m = machineFor({ ram: 512 * MiB });
    const k1 = m.boot({ image: kernelImage() });
    const k2 = k1.kexec({ cmdline: 'kho_abi=v2' });
    // a kho-v2 kernel knows nothing of kexec-metadata: it neither reads nor writes it
    expect(k2.get(Kho).stats().kexecCount).toBe(0);
    expect(k2.get(Kho).subtrees()).toEqual([]);
    k2.restore();
    k2.finish();
    const k3 = k2.kexec({ cmdline: '' });
    expect(k3.get(Kho).isKhoBoot()).toBe(true);
    expect(k3.get(Kho).stats().kexecCount).toBe(0);
    expect(k3.get(Kho).incomingHandover!.generation.compatible).toBe('kho-v2');
    const k4 = k3.kexec();
    expect(k4.get(Kho).stats().kexecCount).toBe(1);
  });

  it('a damaged kexec-metadata blob is ignored with a warning: the count restarts and the boot goes on', () => {
    const m = machineFor({ ram: 512 * MiB });
    const k1 = m.boot({ image: kernelImage() });
    // version 2 is not known: upstream ignores the blob
    const ram = m.device(PhysicalMemory);
    const phys = findKexecMetadata(k1);
    ram.writeU32(phys, 2);
    const k2 = k1.kexec();
    expect(k2.get(Kho).isKhoBoot()).toBe(true);
    expect(k2.get(Kho).stats().kexecCount).toBe(0);
    expect(k2.log.filter('warn', 'kho').map((l) => l.message)).toContain('kexec-metadata version 2 not supported (expected 1)');
    expect(k2.restore().ok).toBe(true);
    expect(k2.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
  });
});

/** The kexec-metadata blob of a running kernel (the root FDT names it). */
function findKexecMetadata(k: Kernel): number {
  const kho = k.get(Kho);
  const ram = k.get(PhysicalMemory);
  const root = new TextDecoder('latin1').decode(ram.read(kho.rootFdtPhys, PAGE_SIZE));
  expect(root).toContain(KHO_KEXEC_METADATA_SUBTREE);
  // the blob is a preserved page written with version 1 and this kernel's release
  for (const pfn of ram.populatedPfns()) {
    if (ram.readU32(pfn * PAGE_SIZE) === 1 && new TextDecoder().decode(ram.read(pfn * PAGE_SIZE + 4, 13)) === '7.2.0-kho-lab') return pfn * PAGE_SIZE;
  }
  throw new Error('no kexec-metadata blob in RAM');
}

describe('generations across a kexec', () => {
  it.each([
    ['v2', 'v3'],
    ['v3', 'v2'],
    ['v3', 'v4'],
    ['v4', 'v3'],
    ['v4-composite', 'v3'],
  ])('a kho-%s kernel hands over to a kho-%s kernel: the lab reads every generation of its map', (from, to) => {
    const m = machineFor({ ram: 512 * MiB });
    const k1 = m.boot({ image: kernelImage(), cmdline: `kho_abi=${from}` });
    const folio = k1.get(BuddyAllocator).folioAlloc(3);
    k1.get(Kho).preserveFolio(folio);
    const k2 = k1.kexec({ cmdline: `kho_abi=${to}` });
    const kho = k2.get(Kho);
    expect(kho.isKhoBoot()).toBe(true);
    expect(kho.incomingHandover!.generation.id).toBe(from);
    expect(kho.generation!.id).toBe(to);
    k2.get(BuddyAllocator).folioPut(kho.restoreFolio(folio.phys));
    expect(k2.restore().ok).toBe(true);
    expect(k2.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
    expect(idlePages(k2)).toBe(coldIdle(512 * MiB, `kho_abi=${to}`));
  });
});

describe('blocks above MAX_PAGE_ORDER across a kexec', () => {
  const RAM = 4 * GiB;
  const ORDER11 = (32 * MiB) / PAGE_SIZE; // 8 MiB at 32 MiB: one order-11 block
  const ORDER18 = (1 * GiB) / PAGE_SIZE; // 1 GiB at 1 GiB: one order-18 block

  function handOver(cmdline: string): { k2: Kernel; buddy: BuddyAllocator; kho: Kho } {
    const m = machineFor({ ram: RAM });
    const k1 = m.boot({ image: kernelImage() });
    // KHO takes no reference and checks no ownership (as upstream): free memory can be preserved for the test
    k1.get(Kho).preservePages(pfn(ORDER11), 2048);
    k1.get(Kho).preservePages(pfn(ORDER18), 262144);
    const k2 = k1.kexec({ cmdline });
    return { k2, buddy: k2.get(BuddyAllocator), kho: k2.get(Kho) };
  }

  it('the next kernel reserves them whole; restorePages gives every page back and the free path merges them', () => {
    const { k2, buddy, kho } = handOver('');
    const inc = kho.incomingHandover!;
    expect(inc.pfns.map((p, i) => [p, inc.orders[i]])).toEqual(expect.arrayContaining([[ORDER11, 11], [ORDER18, 18]]));
    expect(kho.isPreservedIncoming(pfn(ORDER18), toOrder(18))).toBe(true);
    // no folio is that large
    expect(() => kho.restoreFolio((ORDER18 * PAGE_SIZE) as PhysAddr)).toThrow(
      new KernelError(Errno.EINVAL, 'restoreFolio(0x40000000): the block is order 18, larger than any folio (MAX_PAGE_ORDER 10); restore it with restorePages'),
    );
    expect(kho.isPreservedIncoming(pfn(ORDER18), toOrder(18))).toBe(true); // refused: the stamp is still there
    for (const [head, n] of [
      [ORDER11, 2048],
      [ORDER18, 262144],
    ]) {
      expect(kho.restorePages((head * PAGE_SIZE) as PhysAddr, n)).toBe(head);
      for (let p = head; p < head + n; p++) buddy.freePages(pfn(p), toOrder(0));
    }
    expect(buddy.fullyMerged()).toBe(true);
    expect(k2.restore().ok).toBe(true);
    expect(k2.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 0 });
    expect(idlePages(k2)).toBe(coldIdle(RAM));
  });

  it('a kho-v2 kernel reserves them but its restore refuses them, as kho-v2 Linux did (order above 10)', () => {
    const { k2, kho } = handOver('kho_abi=v2');
    expect(() => kho.restorePages((ORDER11 * PAGE_SIZE) as PhysAddr, 2048)).toThrow(/block of order 11 is above kho-v2's restore limit \(order 10\)/);
    expect(k2.finish().plugins.kho.report).toMatchObject({ unrestoredBlocks: 2 });
  });
});

describe('images written the way upstream writes them', () => {
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(join(tmpdir(), 'kho-gen-'))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** An image of an 8 GiB, 2-node machine whose kho-v3 handover is `blocks` in a tree written by the fixture. */
  function upstreamImage(name: string, blocks: Array<[number, number]>): string {
    const ranges = [
      { start: 0, size: 4 * GiB, node: 0 },
      { start: 4 * GiB, size: 4 * GiB, node: 1 },
    ];
    const ram = new PhysicalMemory({ ranges });
    let next = 7 * GiB;
    const alloc = (): number => ((next += PAGE_SIZE), next - PAGE_SIZE);
    // the root FDT is a preserved page itself, as upstream's kho_alloc_preserve makes it
    const fdt = alloc();
    blocks.push([fdt / PAGE_SIZE, 0]);
    const map = writeUpstreamTree(ram, alloc, blocks);
    ram.write(fdt, encodeFdt(buildRootFdt(khoV3, map), { totalSize: PAGE_SIZE }));
    // lowmem scratch below 4 GiB (the next kernel loads there), global scratch above
    const scratch = [
      { addr: 3 * GiB, size: 256 * MiB },
      { addr: 6 * GiB, size: 256 * MiB },
    ];
    ram.write(scratch[0].addr, encodeScratchArray(scratch));
    const file = join(dir, `${name}.kho`);
    writeImageFile(file, {
      khoData: encodeKhoData({ fdtAddr: fdt, fdtSize: PAGE_SIZE, scratchAddr: scratch[0].addr, scratchSize: 32 }),
      machine: { pageSize: PAGE_SIZE, ram: ranges, cmdline: '', tracker: 'radix', generator: 'upstream-fixture' },
      segments: pagesToSegments(ram.populatedPfns(), (pfn) => ram.pageIfPresent(pfn)!),
    });
    return file;
  }

  it('kho inspect and kho boot read orders 11 and 18 and 4,000 random blocks, block for block', () => {
    const fixed = upstreamPreserve(
      [
        [2048, 2048],
        [(1 * GiB) / PAGE_SIZE, GiB / PAGE_SIZE],
        [(3 * GiB + 512 * MiB) / PAGE_SIZE, GiB / PAGE_SIZE],
      ],
      (pfn) => (pfn < (4 * GiB) / PAGE_SIZE ? 0 : 1),
    );
    const random = randomUpstreamBlocks(11, 4000, (2 * GiB) / PAGE_SIZE, (3 * GiB) / PAGE_SIZE, 14);
    const blocks = [...fixed, ...random];
    const file = upstreamImage('upstream', blocks);
    const want = walkOrder(blocks).map(([p, o]) => ({ phys: `0x${(p * PAGE_SIZE).toString(16)}`, order: o }));

    const inspect = cli('inspect', file, '--json');
    expect(inspect.err).toBe('');
    const json = JSON.parse(inspect.out);
    expect(json.blocks).toEqual(want);
    expect(json.tracker.blocks).toBe(blocks.length);
    const byOrder: Record<string, number> = {};
    for (const [, o] of blocks) byOrder[o] = (byOrder[o] ?? 0) + 1;
    expect(json.tracker.byOrder).toEqual(byOrder);
    // 8 MiB at 8 MiB is one order-11 block, 1 GiB at 1 GiB one order-18 block, and 1 GiB at 3.5 GiB two order-17
    // blocks: the node boundary at 4 GiB splits it (kho-v3's clamp)
    expect(fixed).toEqual([
      [2048, 11],
      [(1 * GiB) / PAGE_SIZE, 18],
      [(3.5 * GiB) / PAGE_SIZE, 17],
      [(4 * GiB) / PAGE_SIZE, 17],
    ]);

    // the next kernel reserves every block (nobody restores them: the image holds no state of the demo's)
    const boot = cli('boot', '--image', file, '--json');
    const r = JSON.parse(boot.out);
    expect(r.khoBoot).toBe(true);
    expect(r.unrestoredBlocks).toBe(blocks.length - 1); // all but the root FDT, which KHO itself gives back
  });
});
