import { injectable, type DependencyContainer } from 'tsyringe';
import { Errno, KernelError, KernelLog, hex, isKernelError, registerPerBoot, withUnwind, type KernelModule, describeError } from '@kho/kernel';
import { BuddyAllocator, ORDER_0, PAGE_SIZE, PhysicalMemory, pfn, toPhysAddr, type PhysAddr } from '@kho/physmem';
import { Kho, type RetrievedSubtree } from '@kho/kho-core';
import { FdtNode, decodeFdt, encodeFdt } from '@kho/fdt';
import {
  MEMBLOCK_COMPATIBLE,
  MEMBLOCK_SUBTREE,
  PROP_RESERVE_MEM_SIZE,
  PROP_RESERVE_MEM_START,
  RESERVE_MEM_COMPATIBLE,
  RESERVE_MEM_MAX,
  RESERVE_MEM_NAME_MAX,
} from './abi';
import { ReserveMemHandover, type ReserveMemRecord, type ReserveMemRegion } from './reserve-mem';

/**
 * Upstream's reserve_mem handover: the `memblock-v1` FDT in a preserved page, added as subtree `memblock`; the
 * regions' pages are preserved as pages. The incoming side validates the FDT as hostile input and refuses the
 * whole handover (logged) on any inconsistency.
 */
@injectable()
export class MemblockFdtHandover implements ReserveMemHandover {
  readonly format = 'fdt';
  private blob = 0 as PhysAddr;
  private preserved: ReserveMemRegion[] = [];
  private incomingMap: Map<string, ReserveMemRecord> | undefined;
  private incomingBlob = 0 as PhysAddr;

  constructor(
    private readonly kho: Kho,
    private readonly buddy: BuddyAllocator,
    private readonly ram: PhysicalMemory,
    private readonly log: KernelLog,
  ) {}

  incoming(): ReadonlyMap<string, ReserveMemRecord> {
    if (this.incomingMap) return this.incomingMap;
    this.incomingMap = new Map();
    if (!this.kho.isKhoBoot()) return this.incomingMap;
    let ref: RetrievedSubtree;
    try {
      ref = this.kho.retrieveSubtree(MEMBLOCK_SUBTREE);
    } catch (e) {
      // ENOENT: the previous kernel wrote no subtree. Another KernelError is a damaged node, refused like a
      // damaged FDT; anything else is a bug and propagates.
      if (!isKernelError(e, Errno.ENOENT)) this.refuse(e, 'memblock handover refused');
      return this.incomingMap;
    }
    try {
      this.incomingMap = readMemblockFdt(this.ram, ref.phys, ref.size);
      this.incomingBlob = ref.phys;
    } catch (e) {
      this.refuse(e, 'memblock handover refused');
    }
    return this.incomingMap;
  }

  adopt(region: ReserveMemRegion): void {
    this.kho.restorePages(toPhysAddr(region.start, `reserve_mem '${region.name}' start`), region.size / PAGE_SIZE);
  }

  discard(record: ReserveMemRecord): void {
    const first = this.kho.restorePages(toPhysAddr(record.start, 'discarded reserve_mem record start'), record.size / PAGE_SIZE);
    for (let p = first, end = first + record.size / PAGE_SIZE; p < end; p++) this.buddy.freePages(p, ORDER_0);
  }

  save(regions: readonly ReserveMemRegion[]): void {
    if (!this.kho.isEnabled()) return;
    withUnwind((u) => {
      for (const r of regions) {
        // reserve_mem regions are page-aligned memblock allocations of whole pages.
        const first = pfn(r.start / PAGE_SIZE);
        this.kho.preservePages(first, r.size / PAGE_SIZE);
        u.push(() => this.kho.unpreservePages(first, r.size / PAGE_SIZE));
      }
      const root = new FdtNode('');
      root.setString('compatible', MEMBLOCK_COMPATIBLE);
      for (const r of regions) {
        const n = root.addChild(r.name);
        n.setString('compatible', RESERVE_MEM_COMPATIBLE);
        n.setU64LE(PROP_RESERVE_MEM_START, r.start);
        n.setU64LE(PROP_RESERVE_MEM_SIZE, r.size);
      }
      const blob = this.kho.allocPreserve(PAGE_SIZE);
      u.push(() => this.kho.unpreserveFree(blob));
      // Packed, as upstream writes it: blob-size is the FDT's total size.
      const fdt = encodeFdt(root);
      this.ram.write(blob, fdt);
      this.kho.addSubtree(MEMBLOCK_SUBTREE, blob, fdt.length);
      this.blob = blob;
      this.preserved = [...regions];
    });
  }

  cancel(): void {
    if (this.blob === 0) return;
    this.kho.removeSubtree(this.blob);
    this.kho.unpreserveFree(this.blob);
    for (const r of this.preserved) this.kho.unpreservePages(pfn(r.start / PAGE_SIZE), r.size / PAGE_SIZE);
    this.blob = 0 as PhysAddr;
    this.preserved = [];
  }

  release(): void {
    if (this.incomingBlob === 0) return;
    try {
      this.kho.restoreFree(this.incomingBlob);
    } catch (e) {
      this.refuse(e, `memblock handover page ${hex(this.incomingBlob)}`);
    }
    this.incomingBlob = 0 as PhysAddr;
  }

  /** Logs a refusal of what the previous kernel handed over (a KernelError); rethrows anything else, a bug. */
  private refuse(e: unknown, what: string): void {
    if (!isKernelError(e)) throw e;
    this.log.warn('memblock', `${what}: ${describeError(e, { errno: true })}`);
  }
}

/**
 * Reads a `memblock-v1` FDT at `phys` (`blobSize` bytes when the handover says). Throws KernelError(EINVAL) naming
 * what is wrong: not RAM, a blob-size outside one page, not a DTB (or one longer than its blob-size),
 * wrong compatible strings, more than 8 regions, a bad name, `start`/`size` missing or not 8 bytes, a region
 * outside RAM or not page-aligned.
 */
export function readMemblockFdt(ram: PhysicalMemory, phys: number, blobSize?: number): Map<string, ReserveMemRecord> {
  const fail = (what: string): never => {
    throw new KernelError(Errno.EINVAL, `memblock FDT at ${Number.isFinite(phys) ? hex(phys) : phys}: ${what}`);
  };
  if (!Number.isSafeInteger(phys) || phys % PAGE_SIZE !== 0 || !ram.isRam(phys, PAGE_SIZE)) fail('not a page of RAM');
  // kho-v3 and later say how many bytes the FDT takes; it is one page at most (upstream writes it packed)
  if (blobSize !== undefined && (blobSize < 40 || blobSize > PAGE_SIZE)) fail(`blob-size ${blobSize} (wanted 40..${PAGE_SIZE}: one packed FDT in its page)`);
  const fdt = decodeFdt(ram.read(phys, blobSize ?? PAGE_SIZE));
  if (fdt.getString('compatible') !== MEMBLOCK_COMPATIBLE) fail(`compatible is '${fdt.getString('compatible') ?? '(missing)'}' (wanted '${MEMBLOCK_COMPATIBLE}')`);
  if (fdt.children.length > RESERVE_MEM_MAX) fail(`${fdt.children.length} regions (wanted at most ${RESERVE_MEM_MAX})`);
  const out = new Map<string, ReserveMemRecord>();
  for (const n of fdt.children) {
    if (n.name.length < 1 || n.name.length > RESERVE_MEM_NAME_MAX) fail(`region name '${n.name}' (wanted 1..${RESERVE_MEM_NAME_MAX} characters)`);
    if (n.getString('compatible') !== RESERVE_MEM_COMPATIBLE) fail(`region '${n.name}' compatible is '${n.getString('compatible') ?? '(missing)'}' (wanted '${RESERVE_MEM_COMPATIBLE}')`);
    const u64 = (prop: string): number => {
      const b = n.getProp(prop);
      if (!b || b.length !== 8) fail(`region '${n.name}' property '${prop}' is ${b ? `${b.length} bytes` : 'missing'} (wanted 8)`);
      const v = new DataView(b!.buffer, b!.byteOffset, 8).getBigUint64(0, true);
      return v >= 2n ** 53n ? Infinity : Number(v);
    };
    const start = u64(PROP_RESERVE_MEM_START);
    const size = u64(PROP_RESERVE_MEM_SIZE);
    if (size <= 0 || start % PAGE_SIZE !== 0 || size % PAGE_SIZE !== 0 || !ram.isRam(start, size)) {
      fail(`region '${n.name}' ${Number.isFinite(start) ? hex(start) : start}+${size} is not page-aligned RAM`);
    }
    out.set(n.name, { start, size });
  }
  return out;
}

/** The kernel-image module of upstream's reserve_mem handover format (needs KHO in the image). */
export function memblockFdtHandoverModule(): KernelModule {
  return {
    name: 'memblock-fdt-handover',
    register(c: DependencyContainer) {
      registerPerBoot(c, MemblockFdtHandover);
      c.register(ReserveMemHandover, { useToken: MemblockFdtHandover });
    },
  };
}
