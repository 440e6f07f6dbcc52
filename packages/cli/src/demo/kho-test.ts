import { inject, injectable, type DependencyContainer } from 'tsyringe';
import { Errno, KernelError, KernelLog, hex, registerPerBoot, withUnwind, type KernelModule, type KernelPlugin, type PluginReport } from '@kho/kernel';
import { BuddyAllocator, Folio, MAX_PAGE_ORDER, PAGE_SIZE, PhysicalMemory } from '@kho/physmem';
import { FdtNode, Kho, decodeFdt, encodeFdt } from '@kho/kho-core';
import { KHO_VMALLOC_SIZE, KhoVmalloc, Vmalloc } from '@kho/vmalloc';
import { CHECKSUM_SEED, SeededWords, checksumBlock, fillFolio } from './data';

/** Name of the demo's subtree in the root FDT and the compatible string of its blob (an FDT). */
export const KHO_TEST_SUBTREE = 'kho_test';
export const KHO_TEST_COMPATIBLE = 'kho-test-v2';

/** The demo's settings, from the command line of `kho demo`. */
export const KhoTestConfig = Symbol('KhoTestConfig');
export interface KhoTestConfig {
  /** Bytes of folios to allocate and preserve. */
  readonly mem: number;
  readonly seed: number;
  /** Range of the random folio orders (default 0..MAX_PAGE_ORDER). */
  readonly minOrder?: number;
  readonly maxOrder?: number;
}

/** What the restore half found. */
export interface KhoTestRestore {
  readonly folios: number;
  readonly bytes: number;
  readonly ordersMatch: boolean;
  readonly checksumExpected: string;
  readonly checksumActual: string;
  readonly verified: boolean;
}

/**
 * The live-update self-test (after upstream's test_kho): folios of random order filled with seeded random
 * bytes; at prepare every folio is preserved and a blob (an FDT: folio count, the kho_vmalloc descriptor of the preserved vmalloc list of
 * `phys | order` entries, the checksum) is added as subtree `kho_test`; the next kernel restores every folio,
 * checks its order and the checksum, and at finish frees everything.
 */
@injectable()
export class KhoTest implements KernelPlugin {
  readonly name = 'kho-test';
  readonly after = ['kho'];

  private folios: Folio[] = [];
  private checksum = CHECKSUM_SEED;
  private listAddr = 0;
  private listDesc: Uint8Array | undefined;
  private restoredList = 0;
  private blobPhys = 0;
  private restored: Folio[] = [];
  /** The outcome of the last restore, if one ran. */
  lastRestore: KhoTestRestore | undefined;

  constructor(
    private readonly kho: Kho,
    private readonly buddy: BuddyAllocator,
    private readonly ram: PhysicalMemory,
    private readonly log: KernelLog,
    private readonly vmalloc: Vmalloc,
    private readonly khoVmalloc: KhoVmalloc,
    @inject(KhoTestConfig) private readonly config: KhoTestConfig,
  ) {}

  /** Allocates folios of random order until `config.mem` bytes are used, fills them and checksums them. */
  generate(onProgress?: (bytes: number) => void): { folios: number; bytes: number } {
    const rng = new SeededWords(this.config.seed);
    let used = 0;
    withUnwind((u) => {
      while (used < this.config.mem) {
        const lo = this.config.minOrder ?? 0;
        const hi = this.config.maxOrder ?? MAX_PAGE_ORDER;
        let order = lo + Math.floor(rng.float() * (hi - lo + 1));
        while (order > 0 && PAGE_SIZE * 2 ** order > this.config.mem - used) order--;
        const folio = this.buddy.folioAlloc(order);
        u.push(() => this.buddy.folioPut(folio));
        fillFolio(this.ram, folio, rng);
        this.folios.push(folio);
        used += folio.size;
        onProgress?.(used);
      }
    });
    this.checksum = this.folios.reduce((h, f) => checksumBlock(this.ram, f.pfn, f.order, h), CHECKSUM_SEED);
    this.log.info('kho-test', `generated ${this.folios.length} folios, ${used} bytes, checksum ${hex(this.checksum)}`);
    return { folios: this.folios.length, bytes: used };
  }

  /** The folios generated in this boot. */
  get generated(): readonly Folio[] {
    return this.folios;
  }

  prepare(): void {
    if (this.folios.length === 0) return;
    withUnwind((u) => {
      for (const f of this.folios) {
        this.kho.preserveFolio(f);
        u.push(() => this.kho.unpreserveFolio(f));
      }
      // The list of (phys | order) lives in a preserved vmalloc area, as upstream's self-test keeps it.
      const list = this.vmalloc.vmalloc(this.folios.length * 8);
      u.push(() => this.vmalloc.vfree(list));
      this.folios.forEach((f, i) => this.vmalloc.writeU64(list + i * 8, f.phys + f.order));
      const desc = this.khoVmalloc.preserveVmalloc(list);
      u.push(() => this.khoVmalloc.unpreserveVmalloc(desc));
      const fdt = new FdtNode('');
      fdt.setString('compatible', KHO_TEST_COMPATIBLE);
      fdt.setU64LE('nr_folios', this.folios.length);
      fdt.setProp('folios', desc);
      fdt.setU64LE('csum', this.checksum);
      const blob = this.kho.allocPreserve(PAGE_SIZE);
      u.push(() => this.kho.unpreserveFree(blob));
      this.ram.write(blob, encodeFdt(fdt, { totalSize: PAGE_SIZE }));
      this.kho.addSubtree(KHO_TEST_SUBTREE, blob);
      this.listAddr = list;
      this.listDesc = desc;
      this.blobPhys = blob;
    });
  }

  cancel(): void {
    if (this.blobPhys === 0) return;
    this.kho.removeSubtree(this.blobPhys);
    this.kho.unpreserveFree(this.blobPhys);
    this.khoVmalloc.unpreserveVmalloc(this.listDesc!);
    this.vmalloc.vfree(this.listAddr);
    for (const f of this.folios) this.kho.unpreserveFolio(f);
    this.blobPhys = 0;
    this.listAddr = 0;
    this.listDesc = undefined;
  }

  /** Restores every folio of the previous kernel's `kho_test` subtree and verifies orders and checksum. */
  restore(): PluginReport | void {
    if (!this.kho.isKhoBoot()) return;
    let blob: number;
    try {
      blob = this.kho.retrieveSubtree(KHO_TEST_SUBTREE);
    } catch (e) {
      if (e instanceof KernelError && e.errno === Errno.ENOENT) return; // the previous kernel ran no test
      throw e;
    }
    const blobFolio = this.kho.restoreFolio(blob);
    this.restored.push(blobFolio);
    const fdt = decodeFdt(this.ram.read(blob, PAGE_SIZE));
    if (fdt.getString('compatible') !== KHO_TEST_COMPATIBLE) {
      throw new KernelError(Errno.EINVAL, `kho_test blob compatible is '${fdt.getString('compatible')}' (wanted '${KHO_TEST_COMPATIBLE}')`);
    }
    const nr = Number(fdt.getU64LE('nr_folios') ?? -1n);
    const desc = fdt.getProp('folios');
    const expected = Number(fdt.getU64LE('csum') ?? -1n);
    if (!Number.isSafeInteger(nr) || nr < 0 || nr > this.ram.totalBytes / PAGE_SIZE) {
      throw new KernelError(Errno.EINVAL, `kho_test nr_folios ${nr} is out of range`);
    }
    if (!desc || desc.length !== KHO_VMALLOC_SIZE) {
      throw new KernelError(Errno.EINVAL, `kho_test 'folios' is ${desc ? `${desc.length} bytes` : 'missing'} (wanted a ${KHO_VMALLOC_SIZE}-byte kho_vmalloc)`);
    }
    const list = this.khoVmalloc.restoreVmalloc(desc);
    this.restoredList = list;
    const area = this.vmalloc.findVmArea(list)!;
    if (area.size < nr * 8) throw new KernelError(Errno.EINVAL, `kho_test folio list holds ${area.size / 8} entries (wanted ${nr})`);
    let h = CHECKSUM_SEED;
    let bytes = 0;
    let ordersMatch = true;
    for (let i = 0; i < nr; i++) {
      const entry = this.vmalloc.readU64n(list + i * 8);
      const order = entry % PAGE_SIZE;
      const phys = entry - order;
      const folio = this.kho.restoreFolio(phys);
      this.restored.push(folio);
      if (folio.order !== order) ordersMatch = false;
      h = checksumBlock(this.ram, folio.pfn, folio.order, h);
      bytes += folio.size;
    }
    const verified = ordersMatch && h === expected;
    this.lastRestore = {
      folios: nr,
      bytes,
      ordersMatch,
      checksumExpected: hex(expected),
      checksumActual: hex(h),
      verified,
    };
    this.log.info('kho-test', `restored ${nr} folios (${bytes} bytes): ${verified ? 'verified' : 'VERIFICATION FAILED'}`);
    if (!verified) {
      throw new KernelError(Errno.EIO, `kho_test: checksum ${hex(h)} (wanted ${hex(expected)}), orders ${ordersMatch ? 'match' : 'differ'}`);
    }
    return { ...this.lastRestore };
  }

  /** Frees everything restored, as the matching frees of this boot's allocator. */
  finish(): PluginReport | void {
    const n = this.restored.length;
    for (const f of this.restored) this.buddy.folioPut(f);
    this.restored = [];
    if (this.restoredList !== 0) this.vmalloc.vfree(this.restoredList);
    this.restoredList = 0;
    if (n > 0) return { freedFolios: n };
  }
}

/** The kernel-image module of the self-test. */
export function khoTestModule(config: KhoTestConfig): KernelModule {
  return {
    name: 'kho-test',
    register(c: DependencyContainer) {
      c.register(KhoTestConfig, { useValue: config });
      registerPerBoot(c, KhoTest, { plugin: true });
    },
  };
}

